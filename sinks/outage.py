"""A sink's storage outage: the one mechanism for "storage is gone: wait, retry, resume by itself".

`Outage.retry(what, call)` retries a storage operation while `classify` names its error an outage,
logging it once per reason and showing it on `/health`; the caller blocks, so nothing is committed past
data not yet durable. `stop()` ends every wait (`OutageStopped`)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from prometheus_client import Counter, Gauge

from rtmsflow.logs import get_logger

log = get_logger(__name__)
T = TypeVar("T")

OUTAGE = Gauge("rtmsflow_sink_storage_outage", "1 while the sink's storage is unavailable.", ["sink"])
OUTAGE_RETRIES = Counter(
    "rtmsflow_sink_storage_retries", "Storage operations retried during an outage, by reason.", ["reason"]
)


class OutageStopped(RuntimeError):
    """The sink is stopping: an operation waiting for storage to return gives up."""


@dataclass(frozen=True)
class OutageReason:
    """Why storage is unavailable: a short kind (`unreachable`, `credentials`, `full`, `disk`,
    `error`) and a message for people (what failed, where, what to do)."""

    kind: str
    message: str


class Outage:
    """Whether a sink's storage is unavailable now, and the retry loop that waits for it."""

    def __init__(
        self,
        sink: str = "",
        *,
        first_backoff_s: float = 0.2,
        max_backoff_s: float = 5.0,
    ) -> None:
        self.sink = sink
        self.first_backoff_s = first_backoff_s
        self.max_backoff_s = max_backoff_s
        self._lock = threading.Lock()
        self._reason: OutageReason | None = None
        self._since_s: float | None = None
        self._stopped = threading.Event()

    def current(self) -> dict[str, object] | None:
        """The outage for `/health` ({kind, message, seconds}), or None when storage works."""
        with self._lock:
            if self._reason is None or self._since_s is None:
                return None
            return {
                "kind": self._reason.kind,
                "message": self._reason.message,
                "seconds": round(time.monotonic() - self._since_s, 1),
            }

    def fail(self, reason: OutageReason) -> None:
        """Storage failed for `reason` (logged when its kind is new)."""
        with self._lock:
            new = self._reason is None or self._reason.kind != reason.kind
            self._reason = reason
            if self._since_s is None:
                self._since_s = time.monotonic()
        OUTAGE.labels(self.sink).set(1)
        if new:
            log.error(
                "storage unavailable: nothing is committed until it returns (retrying)",
                extra={"sink": self.sink, "reason": reason.kind, "error": reason.message},
            )

    def clear(self) -> None:
        """Storage works again."""
        with self._lock:
            was = self._reason
            self._reason = None
            self._since_s = None
        if was is not None:
            OUTAGE.labels(self.sink).set(0)
            log.warning("storage available again: resuming", extra={"sink": self.sink, "was": was.kind})

    def stop(self) -> None:
        """End every wait: operations still retrying raise `OutageStopped`."""
        self._stopped.set()

    def retry(
        self, what: str, call: Callable[[], T], classify: Callable[[BaseException], OutageReason | None]
    ) -> T:
        """`call()`, retried while `classify(error)` calls its error an outage; other errors raise."""
        backoff_s = self.first_backoff_s
        while True:
            if self._stopped.is_set():
                raise OutageStopped(f"stopping while waiting for storage ({what})")
            try:
                result = call()
            except Exception as exc:
                reason = classify(exc)
                if reason is None:
                    raise
                self.fail(OutageReason(reason.kind, f"{what}: {reason.message}"))
                OUTAGE_RETRIES.labels(reason.kind).inc()
                if self._stopped.wait(backoff_s):
                    raise OutageStopped(f"stopping while waiting for storage ({what})") from exc
                backoff_s = min(self.max_backoff_s, backoff_s * 2)
                continue
            if self._reason is not None:
                self.clear()
            return result
