"""How long the raw consumer's fetches wait at the broker: batched while records flow, at once when idle.

A fetch costs the worker about the same whatever it carries: aiokafka encodes all of the worker's raw
topic partitions into the request and decodes each of them from the response (120 at 24 partitions x
5 raw topics), and each fetch is a consumer batch, so an output batch per output partition and a
produce request. With the broker's answer at the first byte (`fetch_min_bytes=1`), live input made a
fetch per ~9 records: ~165 a second for 20 live streams, over half of the worker's CPU. While records
flow a fetch asks for `LIVE_MIN_BYTES` and waits at most `LIVE_WAIT_MS` for them, so there are at
most ~1000 / `LIVE_WAIT_MS` a second (~25 for those 20 streams), each carrying that much more input
(a backlog still fills a fetch at once). The price is latency: a frame that closes a reorder window
waits up to `LIVE_WAIT_MS` more at the broker, and the bigger batch takes longer to go through
(processor_bench's latency run, 20 streams: the worker's CPU 22.8 -> 11.3 ms per stream-second, the
added latency p50 313 -> 333 ms).

A wait that ends in an empty answer costs a fetch as well: the same settings with no input would
fetch every `LIVE_WAIT_MS` for nothing. So once a poll finds no record the fetches go back to the
first byte (`fetch_min_bytes=1`, aiokafka's `fetch_max_wait_ms` of 500 ms): an idle worker fetches
twice a second, and the first record after a pause is not held back.

The broker's wait is per request and aiokafka fixes it when the consumer starts; switching it per
poll sets the two fields its fetcher builds each request from (`Fetcher._fetch_min_bytes`,
`Fetcher._fetch_max_wait_ms`, aiokafka 0.14; `tests/processors/test_fetch_pace.py` checks they are
still read). Without them the pace stays at the consumer's own settings: more CPU, nothing else.
"""

from __future__ import annotations

from typing import Any

from rtmsflow.logs import get_logger

log = get_logger(__name__)

LIVE_WAIT_MS = 20  # at most this much longer a record waits at the broker while input flows
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
