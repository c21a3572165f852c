"""One settings object for every stage, read from the environment.

Every variable is documented here with its default; `Settings.describe()` prints them with secrets
masked, and each service logs that at start.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path

_SECRET_FIELDS = {"zoom_client_secret", "zoom_webhook_secret"}


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from exc


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be a number, got {raw!r}") from exc


def _env_bool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name} must be true or false (1/0, yes/no), got {raw!r}")


def _env_list(name: str, default: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in _env(name, default).split(",") if part.strip())


def default_cache_dir() -> Path:
    """Where downloaded artefacts (Kafka jars) live: $RTMSFLOW_CACHE or ~/.cache/rtmsflow."""
    return Path(os.environ.get("RTMSFLOW_CACHE", Path.home() / ".cache" / "rtmsflow"))


@dataclass(frozen=True)
class Settings:
    """Runtime configuration. Build it with `Settings.from_env()`."""

    # RTMSFLOW_KAFKA_BOOTSTRAP (or KAFKA_BOOTSTRAP): broker list; default: the local broker's address.
    kafka_bootstrap: str = ""
    # RTMSFLOW_SCHEMA_REGISTRY_URL: Confluent-compatible registry; empty = Avro single-object encoding.
    schema_registry_url: str = ""
    # RTMSFLOW_PARTITIONS: partition count of every topic (one count for all: co-partitioning). It bounds
    # each stage's parallelism and cannot grow later without moving live meetings, so the default is
    # sized for growth: 24 spreads evenly over 1, 2, 3, 4, 6, 8, 12 or 24 workers of a stage.
    partitions: int = 24
    # RTMSFLOW_RETENTION_DAYS: how long data topics keep records (replay works for that long).
    retention_days: int = 30
    # RTMSFLOW_REPLICATION: replication factor of created topics.
    replication: int = 1
    # RTMSFLOW_TOPIC_PREFIX: prefix for every topic name (tests use it to isolate runs).
    topic_prefix: str = ""
    # RTMSFLOW_DATA_DIR: where sinks write recordings and transcripts.
    data_dir: str = "./data"
    # RTMSFLOW_LOG_LEVEL: DEBUG, INFO, WARNING, ERROR.
    log_level: str = "INFO"
    # ZM_RTMS_CLIENT / ZM_RTMS_SECRET: the app's OAuth client id and secret (RTMS handshake signature).
    zoom_client_id: str = ""
    zoom_client_secret: str = ""
    # ZOOM_SECRET_TOKEN (or ZM_RTMS_WEBHOOK_SECRET): the webhook secret token (x-zm-signature, url_validation).
    zoom_webhook_secret: str = ""
    # RTMSFLOW_WEBHOOK_MAX_SKEW_S: replay window for x-zm-request-timestamp.
    webhook_max_skew_s: int = 300
    # RTMSFLOW_ALLOWED_HOSTS: hosts ingest may connect to ("*.zoom.us" style globs).
    allowed_hosts: tuple[str, ...] = field(default=("*.zoom.us", "*.zoom.com", "*.zoomgov.com"))
    # RTMSFLOW_ALLOW_INSECURE_WS: also accept ws:// (only for the emulator on loopback).
    allow_insecure_ws: bool = False
    # RTMSFLOW_INGEST_BACKEND: "websocket" (default) or "sdk" (Zoom's rtms package).
    ingest_backend: str = "websocket"
    # RTMSFLOW_INGEST_END_STREAMS_ON_STOP: a stopping ingest worker closes its streams at Zoom and writes
    # their end-of-stream markers (`rtmsflow up` on Ctrl-C), instead of leaving them to another worker.
    ingest_end_streams_on_stop: bool = False
    # RTMSFLOW_TRANSCRIPT_LANGUAGE: RTMS language code hint (-1 = auto).
    transcript_language: int = -1
    # RTMSFLOW_HTTP_HOST / RTMSFLOW_HTTP_PORT: the webhook endpoint.
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    # RTMSFLOW_METRICS_PORT: Prometheus port of workers (0 = off).
    metrics_port: int = 0
    # RTMSFLOW_REORDER_WINDOW_MS: processors' reorder window per lane, ms of media time: a frame is held
    # until a frame this much later has arrived, and one that comes after that goes to rtms.late.
    reorder_window_ms: int = 300
    # RTMSFLOW_DEDUPE_HORIZON_MS: how long (media time) a released frame's identity is remembered, so a
    # repeat within it counts as a duplicate (older repeats count as late; neither is emitted twice).
    dedupe_horizon_ms: int = 5_000
    # RTMSFLOW_PROCESS_COMMIT_INTERVAL_MS: how often the processors wait for their output's acks, write
    # their restart state and commit (bounds the re-read after a crash, not correctness).
    process_commit_interval_ms: int = 1_000
    # RTMSFLOW_MEETINGS_INDEX_INTERVAL_MS: how often at most a live meeting's rtms.meetings record is
    # rewritten (it is also written when a stream starts and at each end-of-stream marker).
    meetings_index_interval_ms: int = 5_000
    # RTMSFLOW_SINK_IDLE_TIMEOUT_S: a sink finalizes a stream that had no record for this long and no
    # end-of-stream marker (its ingest died for good); the manifest then says `idle_timeout`.
    sink_idle_timeout_s: float = 600.0
    # RTMSFLOW_SINK_BUFFER_BYTES: media a sink may hold per partition while one topic waits for the
    # other (video for audio); past it the partition is paused until the other topic catches up.
    sink_buffer_bytes: int = 64 << 20

    @classmethod
    def from_env(cls) -> Settings:
        """Read every setting from the environment (see each field's comment for its variable)."""
        return cls(
            kafka_bootstrap=os.environ.get("RTMSFLOW_KAFKA_BOOTSTRAP") or os.environ.get("KAFKA_BOOTSTRAP") or "",
            schema_registry_url=_env("RTMSFLOW_SCHEMA_REGISTRY_URL", ""),
            partitions=_env_int("RTMSFLOW_PARTITIONS", 24),
            retention_days=_env_int("RTMSFLOW_RETENTION_DAYS", 30),
            replication=_env_int("RTMSFLOW_REPLICATION", 1),
            topic_prefix=_env("RTMSFLOW_TOPIC_PREFIX", ""),
            data_dir=_env("RTMSFLOW_DATA_DIR", "./data"),
            log_level=_env("RTMSFLOW_LOG_LEVEL", "INFO"),
            zoom_client_id=_env("ZM_RTMS_CLIENT", ""),
            zoom_client_secret=_env("ZM_RTMS_SECRET", ""),
            zoom_webhook_secret=os.environ.get("ZOOM_SECRET_TOKEN") or _env("ZM_RTMS_WEBHOOK_SECRET", ""),
            webhook_max_skew_s=_env_int("RTMSFLOW_WEBHOOK_MAX_SKEW_S", 300),
            allowed_hosts=_env_list("RTMSFLOW_ALLOWED_HOSTS", "*.zoom.us,*.zoom.com,*.zoomgov.com"),
            allow_insecure_ws=_env("RTMSFLOW_ALLOW_INSECURE_WS", "0").lower() in ("1", "true", "yes"),
            ingest_backend=_env("RTMSFLOW_INGEST_BACKEND", "websocket"),
            ingest_end_streams_on_stop=_env_bool("RTMSFLOW_INGEST_END_STREAMS_ON_STOP"),
            transcript_language=_env_int("RTMSFLOW_TRANSCRIPT_LANGUAGE", -1),
            http_host=_env("RTMSFLOW_HTTP_HOST", "127.0.0.1"),
            http_port=_env_int("RTMSFLOW_HTTP_PORT", 8080),
            metrics_port=_env_int("RTMSFLOW_METRICS_PORT", 0),
            reorder_window_ms=_env_int("RTMSFLOW_REORDER_WINDOW_MS", 300),
            dedupe_horizon_ms=_env_int("RTMSFLOW_DEDUPE_HORIZON_MS", 5_000),
            process_commit_interval_ms=_env_int("RTMSFLOW_PROCESS_COMMIT_INTERVAL_MS", 1_000),
            meetings_index_interval_ms=_env_int("RTMSFLOW_MEETINGS_INDEX_INTERVAL_MS", 5_000),
            sink_idle_timeout_s=_env_float("RTMSFLOW_SINK_IDLE_TIMEOUT_S", 600.0),
            sink_buffer_bytes=_env_int("RTMSFLOW_SINK_BUFFER_BYTES", 64 << 20),
        )

    def bootstrap(self) -> str:
        """The broker list: the configured one, else the local broker started by `rtmsflow kafka up`."""
        if self.kafka_bootstrap:
            return self.kafka_bootstrap
        from rtmsflow.broker import LocalKafka  # local import: the broker module is heavier

        running = LocalKafka().status()
        if running is None:
            raise RuntimeError(
                "no Kafka broker configured: set RTMSFLOW_KAFKA_BOOTSTRAP or run `rtmsflow kafka up`"
            )
        return running

    def describe(self) -> dict[str, object]:
        """The settings as a dict with secrets masked, for the start-up log line."""
        out: dict[str, object] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in _SECRET_FIELDS and value:
                value = "***"
            out[f.name] = value
        return out
