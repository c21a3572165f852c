"""Structured logging: one JSON object a line, carrying the meeting id where there is one.

Use `log = get_logger(__name__)` and `log.info("frame dropped", extra={"meeting": m, "reason": r})`;
every key passed in `extra` lands in the JSON object.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

_RESERVED = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON line: ts, level, logger, msg and every `extra` key."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def setup_logging(level: str = "INFO", path: Path | None = None) -> None:
    """Send every logger's records to stderr (or, with `path`, to that file, appended) as JSON
    lines. Safe to call twice: the last call decides."""
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_rtmsflow", False):
            root.removeHandler(old)
            old.close()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    handler: logging.Handler = (
        logging.StreamHandler(sys.stderr) if path is None else logging.FileHandler(path, encoding="utf-8")
    )
    handler.setFormatter(JsonFormatter())
    handler._rtmsflow = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.getLogger("aiokafka").setLevel(max(root.level, logging.WARNING))


def get_logger(name: str) -> logging.Logger:
    """A standard logger; `setup_logging` makes its output JSON."""
    return logging.getLogger(name)


class Throttle:
    """One log line per `interval_s` for a repeating condition (an error not about one record).

    `ready(now_s)` says whether to log now; `suppressed` is how many calls were not logged since the
    last line (put it in that line). Pure: the caller passes the clock.
    """

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self.suppressed = 0
        self._last_s: float | None = None

    def ready(self, now_s: float) -> bool:
        if self._last_s is not None and now_s - self._last_s < self.interval_s:
            self.suppressed += 1
            return False
        self._last_s = now_s
        return True

    def take_suppressed(self) -> int:
        """The count of calls not logged since the last line, reset to 0."""
        count, self.suppressed = self.suppressed, 0
        return count
