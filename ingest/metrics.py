"""Prometheus metrics of the ingest stage (one process registry; `/metrics` serves it)."""

from __future__ import annotations

import asyncio
from bisect import bisect_left
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

WEBHOOKS = Counter(
    "rtmsflow_ingest_webhooks",
    "Webhook deliveries by result (accepted, url_validation, ignored, bad_signature, stale_timestamp, "
    "malformed, disallowed_url, produce_failed, timeout).",
    ["result"],
)
ACTIVE_MEETINGS = Gauge("rtmsflow_ingest_active_meetings", "RTMS streams this worker holds.")
FRAMES = Counter("rtmsflow_ingest_frames", "Records queued for the raw topics, by kind.", ["kind"])
BYTES = Counter("rtmsflow_ingest_bytes", "Payload bytes queued for the raw topics, by kind.", ["kind"])
CHAT_PRIVATE_DROPPED = Counter(
    "rtmsflow_ingest_chat_private_dropped", "Private chat messages not kept (RTMSFLOW_CHAT_PRIVATE=drop)."
)
DEAD_LETTERS = Counter("rtmsflow_ingest_dead_letters", "Inputs sent to rtms.deadletter, by error.", ["error"])
RECONNECTS = Counter(
    "rtmsflow_ingest_reconnects",
    "RTMS reconnections by scope (full = signaling + media, media = one media socket).",
    ["scope"],
)
PRODUCE_LATENCY = Histogram(
    "rtmsflow_ingest_produce_latency_seconds",
    "From queueing a record to the broker's acknowledgement (raw topics: from the first record of its batch).",
    ["topic"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
IN_FLIGHT = Gauge(
    "rtmsflow_ingest_in_flight", "Records queued or sent but not yet acknowledged (computed on scrape)."
)
UNPARSED_VIDEO = Counter(
    "rtmsflow_ingest_unparsed_video",
    "Video frames written with keyframe/parameter sets unknown (the H.264 parser could not read them).",
)
PROGRESS_MARKS = Counter("rtmsflow_ingest_progress_marks", "Progress marks written on the raw topics.")
EOS_MARKERS = Counter("rtmsflow_ingest_eos_markers", "End-of-stream markers written (one per raw topic).")
ACCEPT_ERRORS = Counter(
    "rtmsflow_ingest_accept_errors",
    "Connections the webhook endpoint could not accept (out of file descriptors).",
)


class QueuedCounts:
    """FRAMES and BYTES by kind, added once per event-loop turn instead of twice per record (the
    two `inc` were ~5 % of a worker's CPU); `report()` adds what is pending now."""

    def __init__(self) -> None:
        self.pending: dict[str, list[int]] = {}  # kind -> [records, bytes] not yet added
        self.children: dict[str, tuple[Any, Any]] = {}
        self.scheduled = False

    def add(self, kind: str, size: int) -> None:
        """Count one record of `kind` with `size` payload bytes (in the metrics by the loop's next turn)."""
        counts = self.pending.get(kind)
        if counts is None:
            counts = self.pending[kind] = [0, 0]
        counts[0] += 1
        counts[1] += size
        if not self.scheduled:
            self.scheduled = True
            asyncio.get_running_loop().call_soon(self.report)

    def report(self) -> None:
        self.scheduled = False
        for kind, counts in self.pending.items():
            if counts[0]:
                children = self.children.get(kind)
                if children is None:
                    children = self.children[kind] = (FRAMES.labels(kind=kind), BYTES.labels(kind=kind))
                children[0].inc(counts[0])
                children[1].inc(counts[1])
                counts[0] = counts[1] = 0


def observe_many(histogram: Any, value: float, count: int) -> None:
    """`count` observations of `value` in a Histogram child at the cost of one (a batch's records
    share their latency). Uses the child's buckets as prometheus_client 0.20-0.26 keeps them; a
    child without them gets `count` observe() calls."""
    bounds, buckets, total = (
        getattr(histogram, name, None) for name in ("_upper_bounds", "_buckets", "_sum")
    )
    if bounds is None or buckets is None or total is None or count < 1 or not value <= bounds[-1]:  # NaN
        for _ in range(count):
            histogram.observe(value)
        return
    total.inc(value * count)
    buckets[bisect_left(bounds, value)].inc(count)  # the first bucket with value <= its bound
