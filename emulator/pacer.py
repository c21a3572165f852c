"""One timer for every stream of a server.

Streams say when they next have something due; the pacer keeps a heap and, on each wake-up, lets every
due stream send all it has in one batch: one event-loop timer for hundreds of real-time meetings."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
from typing import Protocol

from rtmsflow.logs import get_logger

log = get_logger(__name__)


class Pumpable(Protocol):
    """A stream as the pacer sees it."""

    wake_at: float | None

    def pump(self, now: float) -> float | None:
        """Do what is due at loop time `now`; return when to be called next (None: never)."""

    def pump_failed(self, exc: BaseException) -> None:
        """`pump` raised: the stream must end itself."""


class Pacer:
    """Wakes streams at the loop times they ask for. `slack_s`: frames due within this much after
    a wake-up are sent in the same batch; `min_gap_s`: wake-ups are at least this far apart."""

    def __init__(self, slack_s: float = 0.001, min_gap_s: float = 0.001) -> None:
        self._loop = asyncio.get_running_loop()
        self._heap: list[tuple[float, int, Pumpable]] = []
        self._seq = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        self._slack = slack_s
        self._min_gap = min_gap_s
        self.wakeups = 0

    def wake(self, stream: Pumpable, at: float | None = None) -> None:
        """Have `stream.pump` called at loop time `at` (now if None), unless it is due earlier."""
        if at is None:
            at = self._loop.time()
        if stream.wake_at is not None and stream.wake_at <= at:
            return
        stream.wake_at = at
        heapq.heappush(self._heap, (at, next(self._seq), stream))
        if at < self._timer_at:
            self._arm(at)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._heap.clear()

    def _arm(self, at: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_at(at, self._run)
        self._timer_at = at

    def _run(self) -> None:
        self._timer = None
        self._timer_at = math.inf
        self.wakeups += 1
        now = self._loop.time()
        horizon = now + self._slack
        heap = self._heap
        later: list[tuple[float, int, Pumpable]] = []
        while heap and heap[0][0] <= horizon:
            at, _, stream = heapq.heappop(heap)
            if stream.wake_at != at:
                continue  # superseded by an earlier wake()
            stream.wake_at = None
            try:
                nxt = stream.pump(now)
            except Exception as exc:  # a bug in one stream must not stop the others
                log.exception("stream pump failed")
                stream.pump_failed(exc)
                continue
            if nxt is not None and (stream.wake_at is None or nxt < stream.wake_at):
                stream.wake_at = nxt
                # pushed after this round: a stream asking again within the slack waits min_gap
                later.append((nxt, next(self._seq), stream))
        for entry in later:
            heapq.heappush(heap, entry)
        if heap:
            self._arm(max(heap[0][0], now + self._min_gap))
