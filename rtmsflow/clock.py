"""Wall-clock time in the unit records carry (ms since the Unix epoch)."""

from __future__ import annotations

import time


def now_ms() -> int:
    """Milliseconds since the Unix epoch: for the stamps records carry (`received_at_ms`), never for
    deadlines (`time.monotonic()`) nor inside a recording."""
    return time.time_ns() // 1_000_000
