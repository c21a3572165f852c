"""Child processes that must not outlive the process that started them."""

from __future__ import annotations

import ctypes
import ctypes.util
import signal
import sys
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1


def _prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).prctl  # type: ignore[no-any-return]


# Resolved in the parent, at import: `die_with_parent` may run between fork and exec
# (`preexec_fn`), where importing or loading a library could deadlock on a lock another
# thread held at the fork.
_PRCTL = _prctl()


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent (the thread that started it) dies
    (PR_SET_PDEATHSIG); a no-op elsewhere. Call it in the child: before exec (`preexec_fn`) or
    first thing in its main."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
