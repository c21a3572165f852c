"""The reconnect policy of every ingest backend: how long to wait before the next attempt, when to give up.

One `Backoff` per self-reconnecting connection: a working link that is lost is retried at once (Zoom
does not buffer video), further failures wait `base_s * 2^n` (capped, jittered); `max_attempts`
consecutive retries spend the budget and `reset()` after a success starts afresh."""

from __future__ import annotations

import random


class Backoff:
    """Delays between consecutive reconnect attempts, and the budget they are counted against.

    `next_delay()` is jittered exponential: `base × 2^n` capped, scaled by a random 50-100 %, n the
    number of delays given since `reset()`. `after_drop(now)` is for a connection that was working:
    its first retry is immediate (0.0) unless one was already granted within the last `base_s`
    (a flapping link), else it is `next_delay()`. `delay(now, drop)` picks between the two as the
    policy says. `attempts` counts every retry since `reset()`, immediate ones included; `spent`
    says the budget (`max_attempts`, None = unbounded) is used up.
    """

    def __init__(
        self,
        base_s: float,
        cap_s: float,
        rng: random.Random,
        *,
        max_attempts: int | None = None,
        at_once: bool = True,
    ) -> None:
        self.base_s = base_s
        self.cap_s = cap_s
        self.rng = rng
        self.max_attempts = max_attempts
        self.at_once = at_once
        self.attempts = 0
        self._waits = 0  # delays given since reset(): the exponent
        self._free_after: float | None = None  # no immediate retry before this time (monotonic s)

    @property
    def spent(self) -> bool:
        """The consecutive failures since the last success used up the budget: give up."""
        return self.max_attempts is not None and self.attempts >= self.max_attempts

    def delay(self, now: float, drop: bool) -> float:
        """How long to wait before the next attempt; `drop`: the connection was working until `now`."""
        if drop and self.at_once:
            return self.after_drop(now)
        return self.next_delay()

    def next_delay(self) -> float:
        delay = min(self.cap_s, self.base_s * (2**self._waits))
        self._waits += 1
        self.attempts += 1
        return delay * (0.5 + 0.5 * self.rng.random())

    def after_drop(self, now: float) -> float:
        """The delay before reconnecting a connection that was working until `now`."""
        if self.attempts == 0 and (self._free_after is None or now >= self._free_after):
            self.attempts += 1
            self._free_after = now + self.base_s
            return 0.0
        return self.next_delay()

    def reset(self) -> None:
        """Connected again: the next failure starts a fresh series (the flap window stays)."""
        self.attempts = 0
        self._waits = 0
