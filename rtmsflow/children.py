"""Child processes that must not outlive the process that started them."""

from __future__ import annotations

import signal
import sys


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent (the thread that started it) dies
    (PR_SET_PDEATHSIG); a no-op elsewhere. Call it in the child: before exec (`preexec_fn`) or
    first thing in its main."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import ctypes.util

    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
