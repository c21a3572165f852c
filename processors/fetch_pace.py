"""How long the processors' raw fetches wait at the broker: up to `LIVE_WAIT_MS` for `LIVE_MIN_BYTES`
while records flow (a fetch per ~9 records was over half the worker's CPU at live rates), at the first
byte after an empty poll (no fetches for nothing when idle). aiokafka fixes the wait when the consumer
starts, so the pace sets the two fields its fetcher reads per request (aiokafka 0.14; checked by
`tests/processors/test_fetch_pace.py`); without them fetches keep the consumer's own settings."""

from __future__ import annotations

from typing import Any

from rtmsflow.logs import get_logger

log = get_logger(__name__)

LIVE_WAIT_MS = 10  # at most this much longer a record waits at the broker while input flows
LIVE_MIN_BYTES = 1 << 20  # a fetch with this much is batched enough; a backlog answers at once
IDLE_WAIT_MS = 500  # aiokafka's default: after a quiet spell a fetch answers at the first byte
IDLE_MIN_BYTES = 1


class FetchPace:
    """Switches a started consumer's fetches between live (`LIVE_*`) and idle (`IDLE_*`) settings:
    `polled(True)` after a poll that returned records, `polled(False)` after one that did not."""

    def __init__(
        self,
        consumer: Any,
        *,
        live_wait_ms: int = LIVE_WAIT_MS,
        live_min_bytes: int = LIVE_MIN_BYTES,
        idle_wait_ms: int = IDLE_WAIT_MS,
    ) -> None:
        self.live = (live_min_bytes, live_wait_ms)
        self.idle = (IDLE_MIN_BYTES, idle_wait_ms)
        fetcher = getattr(consumer, "_fetcher", None)
        if not all(hasattr(fetcher, f) for f in ("_fetch_min_bytes", "_fetch_max_wait_ms")):
            log.warning("the consumer's fetch settings cannot be switched; fetches keep their own")
            fetcher = None
        self.fetcher = fetcher
        self.flowing = False
        self._set(self.idle)

    def polled(self, records: bool) -> None:
        """After each poll: whether it returned any record."""
        if records != self.flowing:
            self.flowing = records
            self._set(self.live if records else self.idle)

    def _set(self, pace: tuple[int, int]) -> None:
        if self.fetcher is not None:
            self.fetcher._fetch_min_bytes, self.fetcher._fetch_max_wait_ms = pace
