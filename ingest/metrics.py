"""Prometheus metrics of the ingest stage (one process registry; `/metrics` serves it)."""

from __future__ import annotations

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
