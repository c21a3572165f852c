"""One settings object for every stage, read from the environment.

Each variable is a field of `Settings` (name, default, check); `Settings.from_env()` reads them all (a bad
value is a `SettingError` naming it) and `describe()` gives them, secrets masked, for the start-up log.
CLI options override single fields; nothing else reads the environment."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from schemas.deployment import DEFAULT_PARTITIONS, DEFAULT_RETENTION_DAYS

# Video resolutions by their common name, as the emulator plays them and ingest asks RTMS for them
# (RTMS MEDIA_RESOLUTION SD, HD, FHD, QHD = 1..4).
VIDEO_RESOLUTIONS: dict[str, int] = {"360p": 1, "720p": 2, "1080p": 3, "1440p": 4}
VIDEO_MODES = ("active", "individual")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
INGEST_BACKENDS = ("websocket", "sdk")
# what ingest keeps of private chat messages (RTMSFLOW_CHAT_PRIVATE)
CHAT_PRIVATE_CHOICES = ("drop", "keep", "unaddressed")


class SettingError(ValueError):
    """An environment variable holds a value that cannot be used; `env` names the variable."""

    def __init__(self, env: str, problem: str) -> None:
        self.env = env
        super().__init__(f"{env} {problem}")


Parse = Callable[[str, str], Any]  # (variable name, raw text) -> value, or SettingError


def _text(env: str, raw: str) -> str:
    return raw


def _integer(lo: int | None = None, hi: int | None = None) -> Parse:
    def parse(env: str, raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise SettingError(env, f"must be an integer, got {raw!r}") from None
        _in_range(env, value, lo, hi)
        return value

    return parse


def _number(lo: float | None = None) -> Parse:
    def parse(env: str, raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise SettingError(env, f"must be a number, got {raw!r}") from None
        _in_range(env, value, lo, None)
        return value

    return parse


def _in_range(env: str, value: float, lo: float | None, hi: float | None) -> None:
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        bounds = f"at least {lo}" if hi is None else f"between {lo} and {hi}"
        raise SettingError(env, f"must be {bounds}, got {value}")


def _flag(env: str, raw: str) -> bool:
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise SettingError(env, f"must be true or false (1/0, yes/no, on/off), got {raw!r}")


def _names(env: str, raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _choice(*options: str, upper: bool = False) -> Parse:
    def parse(env: str, raw: str) -> str:
        value = raw.upper() if upper else raw
        if value not in options:
            raise SettingError(env, f"must be one of {', '.join(options)}, got {raw!r}")
        return value

    return parse


def _url_path(env: str, raw: str) -> str:
    if not raw.startswith("/"):
        raise SettingError(env, f"must be a path starting with '/', got {raw!r}")
    return raw


def _setting(default: Any, *env: str, parse: Parse = _text, secret: bool = False) -> Any:
    """A field read from the first non-empty variable of `env` (later names are older aliases)."""
    return field(default=default, metadata={"env": env, "parse": parse, "secret": secret})


_PORT = _integer(0, 65535)


@dataclass(frozen=True)
class Settings:
    """Runtime configuration. Build it with `Settings.from_env()`; each field says its variable."""

    # -- Kafka and the contract ----------------------------------------------------------------
    # Broker list; default: the local broker's address (`rtmsflow kafka up`).
    kafka_bootstrap: str = _setting("", "RTMSFLOW_KAFKA_BOOTSTRAP", "KAFKA_BOOTSTRAP")
    # Confluent-compatible registry; empty = Avro single-object encoding.
    schema_registry_url: str = _setting("", "RTMSFLOW_SCHEMA_REGISTRY_URL")
    # Partition count of every topic (one count for all: co-partitioning). It bounds each stage's
    # parallelism and cannot grow later without moving live meetings, so the default is sized for
    # growth: 24 spreads evenly over 1, 2, 3, 4, 6, 8, 12 or 24 workers of a stage.
    partitions: int = _setting(DEFAULT_PARTITIONS, "RTMSFLOW_PARTITIONS", parse=_integer(1))
    # How long data topics keep records (replay works for that long).
    retention_days: int = _setting(DEFAULT_RETENTION_DAYS, "RTMSFLOW_RETENTION_DAYS", parse=_integer(1))
    # Replication factor of created topics.
    replication: int = _setting(1, "RTMSFLOW_REPLICATION", parse=_integer(1))
    # Prefix for every topic name (tests use it to isolate runs).
    topic_prefix: str = _setting("", "RTMSFLOW_TOPIC_PREFIX")

    # -- files, logs, caches -------------------------------------------------------------------
    # Where sinks write recordings and transcripts (and prune/forget delete them): a directory, or
    # an S3-compatible bucket and prefix as `s3://bucket/prefix` (same layout, names and bytes).
    data_dir: str = _setting("./data", "RTMSFLOW_DATA_DIR")
    # With a bucket: the S3 endpoint (empty = AWS), region, credentials (empty = boto3's usual
    # chain: ~/.aws, instance role), addressing ("auto" = path-style when an endpoint is set, as
    # MinIO-like servers want; "path" or "virtual"), the multipart part size (MiB, S3's minimum is
    # 5), and the local spool where a stream's files are written while they are uploaded (empty =
    # <cache>/spool).
    s3_endpoint: str = _setting("", "RTMSFLOW_S3_ENDPOINT", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
    s3_region: str = _setting("", "RTMSFLOW_S3_REGION", "AWS_REGION", "AWS_DEFAULT_REGION")
    s3_access_key_id: str = _setting("", "RTMSFLOW_S3_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID")
    s3_secret_access_key: str = _setting(
        "", "RTMSFLOW_S3_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY", secret=True
    )
    s3_addressing: str = _setting("auto", "RTMSFLOW_S3_ADDRESSING", parse=_choice("auto", "path", "virtual"))
    s3_part_mb: int = _setting(8, "RTMSFLOW_S3_PART_MB", parse=_integer(5, 5000))
    spool_dir: str = _setting("", "RTMSFLOW_SPOOL_DIR")
    # DEBUG, INFO, WARNING, ERROR or CRITICAL.
    log_level: str = _setting("INFO", "RTMSFLOW_LOG_LEVEL", parse=_choice(*LOG_LEVELS, upper=True))
    # Downloaded artefacts (Kafka jars, the registry, encoded clips, the SDK's home); empty =
    # ~/.cache/rtmsflow.
    cache_dir: str = _setting("", "RTMSFLOW_CACHE")
    # The local broker's data, config, pid and log files; empty = <cache>/kafka/<version>/state.
    kafka_state_dir: str = _setting("", "RTMSFLOW_KAFKA_STATE")
    # `rtmsflow demo` leaves the local broker it started running (the next run starts faster).
    demo_keep_broker: bool = _setting(False, "RTMSFLOW_DEMO_KEEP_BROKER", parse=_flag)

    # -- Zoom ----------------------------------------------------------------------------------
    # The app's OAuth client id and secret (RTMS handshake signature).
    zoom_client_id: str = _setting("", "ZM_RTMS_CLIENT")
    zoom_client_secret: str = _setting("", "ZM_RTMS_SECRET", secret=True)
    # The webhook secret token (x-zm-signature, url_validation).
    zoom_webhook_secret: str = _setting("", "ZOOM_SECRET_TOKEN", "ZM_RTMS_WEBHOOK_SECRET", secret=True)

    # -- ingest http: the webhook endpoint (also its /health and /metrics) -----------------------
    http_host: str = _setting("127.0.0.1", "RTMSFLOW_HTTP_HOST")  # also where every stage's metrics bind
    http_port: int = _setting(8080, "RTMSFLOW_HTTP_PORT", parse=_PORT)  # 0 = any free port
    webhook_path: str = _setting("/webhook", "RTMSFLOW_WEBHOOK_PATH", parse=_url_path)
    # Replay window for x-zm-request-timestamp, seconds.
    webhook_max_skew_s: int = _setting(300, "RTMSFLOW_WEBHOOK_MAX_SKEW_S", parse=_integer(1))
    # Seconds a connection has to send a whole request (headers, then body) before it is closed;
    # also how long an idle keep-alive connection stays open.
    webhook_header_timeout_s: float = _setting(10.0, "RTMSFLOW_WEBHOOK_HEADER_TIMEOUT_S", parse=_number(0.1))
    # Hosts ingest may connect to ("*.zoom.us" style globs), comma-separated.
    allowed_hosts: tuple[str, ...] = _setting(
        ("*.zoom.us", "*.zoom.com", "*.zoomgov.com"), "RTMSFLOW_ALLOWED_HOSTS", parse=_names
    )
    # Also accept ws:// (only for the emulator on loopback).
    allow_insecure_ws: bool = _setting(False, "RTMSFLOW_ALLOW_INSECURE_WS", parse=_flag)

    # -- every long-running stage --------------------------------------------------------------
    # Port of a stage's /health and /metrics (ingest http serves them on its webhook port instead);
    # 0 = a free port, named in the stage's start-up log line. The option --metrics-port overrides.
    metrics_port: int = _setting(0, "RTMSFLOW_METRICS_PORT", parse=_PORT)

    # -- ingest worker -------------------------------------------------------------------------
    ingest_group: str = _setting("rtmsflow-ingest", "RTMSFLOW_INGEST_GROUP")
    # Group session timeout: how soon a dead worker's meetings move to another worker.
    ingest_session_timeout_ms: int = _setting(8_000, "RTMSFLOW_INGEST_SESSION_TIMEOUT_MS", parse=_integer(1))
    # "websocket" (our client) or "sdk" (Zoom's rtms package, extra `rtmsflow[sdk]`).
    ingest_backend: str = _setting("websocket", "RTMSFLOW_INGEST_BACKEND", parse=_choice(*INGEST_BACKENDS))
    # A stopping worker closes its streams at Zoom and writes their end-of-stream markers
    # (`rtmsflow up` on Ctrl-C), instead of leaving them to another worker.
    ingest_end_streams_on_stop: bool = _setting(False, "RTMSFLOW_INGEST_END_STREAMS_ON_STOP", parse=_flag)
    # First RTMS reconnect delay, seconds (doubles per attempt, capped at 30 s).
    rtms_backoff_base_s: float = _setting(3.0, "RTMSFLOW_RTMS_BACKOFF_BASE_S", parse=_number(0.0))
    # What the worker asks RTMS for: per-participant audio (else the mixed stream), video on/off,
    # its resolution and frame rate (H.264), screen share, transcripts, and the transcript language
    # (RTMS language code; -1 = auto).
    rtms_audio_multi: bool = _setting(False, "RTMSFLOW_RTMS_AUDIO_MULTI", parse=_flag)
    rtms_video: bool = _setting(True, "RTMSFLOW_RTMS_VIDEO", parse=_flag)
    rtms_video_resolution: str = _setting(
        "720p", "RTMSFLOW_RTMS_VIDEO_RESOLUTION", parse=_choice(*VIDEO_RESOLUTIONS)
    )
    rtms_video_fps: int = _setting(25, "RTMSFLOW_RTMS_VIDEO_FPS", parse=_integer(1, 30))
    # Whose video: the active speaker's (`active`) or each participant's own camera (`individual`:
    # a `video-<participant>.mp4` each), at most this many participants at once (1: what Zoom's V1
    # protocol serves; more need its multiple individual streams, up to 4 at 720p).
    rtms_video_mode: str = _setting("active", "RTMSFLOW_RTMS_VIDEO_MODE", parse=_choice(*VIDEO_MODES))
    rtms_video_participants: int = _setting(1, "RTMSFLOW_RTMS_VIDEO_PARTICIPANTS", parse=_integer(1, 16))
    rtms_deskshare: bool = _setting(False, "RTMSFLOW_RTMS_DESKSHARE", parse=_flag)
    rtms_transcript: bool = _setting(True, "RTMSFLOW_RTMS_TRANSCRIPT", parse=_flag)
    transcript_language: int = _setting(-1, "RTMSFLOW_TRANSCRIPT_LANGUAGE", parse=_integer(-1))
    # In-meeting chat (media type 16): asked for when on; Zoom refuses it to an app without the
    # chat scope and the stream goes on without it.
    rtms_chat: bool = _setting(True, "RTMSFLOW_RTMS_CHAT", parse=_flag)
    # What ingest keeps of private chat messages (to chosen participants): drop (public chat only),
    # keep (with their recipients) or unaddressed (the message, flagged private, without recipients).
    chat_private: str = _setting("drop", "RTMSFLOW_CHAT_PRIVATE", parse=_choice(*CHAT_PRIVATE_CHOICES))
    # Zoom's SDK backend: the SDK host's home (empty = <cache>/sdk), its SDK threads, poll
    # interval (ms) and Python interpreter (empty = this one).
    sdk_home: str = _setting("", "RTMSFLOW_SDK_HOME")
    sdk_threads: int = _setting(1, "RTMSFLOW_SDK_THREADS", parse=_integer(1))
    sdk_poll_ms: float = _setting(10.0, "RTMSFLOW_SDK_POLL_MS", parse=_number(0.1))
    sdk_python: str = _setting("", "RTMSFLOW_SDK_PYTHON")

    # -- processors ----------------------------------------------------------------------------
    # Consumer group (the restart state is kept per group).
    process_group: str = _setting("rtmsflow-processors", "RTMSFLOW_PROCESS_GROUP")
    process_session_timeout_ms: int = _setting(
        10_000, "RTMSFLOW_PROCESS_SESSION_TIMEOUT_MS", parse=_integer(1)
    )
    # Reorder window per lane, ms of media time: a frame is held until a frame this much later has
    # arrived, and one that comes after that goes to rtms.late.
    reorder_window_ms: int = _setting(300, "RTMSFLOW_REORDER_WINDOW_MS", parse=_integer(0))
    # How long (media time) a released frame's identity is remembered, so a repeat within it counts
    # as a duplicate (older repeats count as late; neither is emitted twice).
    dedupe_horizon_ms: int = _setting(5_000, "RTMSFLOW_DEDUPE_HORIZON_MS", parse=_integer(0))
    # How often the processors wait for their output's acks, write their restart state and commit
    # (bounds the re-read after a crash, not correctness).
    process_commit_interval_ms: int = _setting(
        1_000, "RTMSFLOW_PROCESS_COMMIT_INTERVAL_MS", parse=_integer(1)
    )
    # How often at most a live meeting's rtms.meetings record is rewritten (it is also written when
    # a stream starts and at each end-of-stream marker).
    meetings_index_interval_ms: int = _setting(
        5_000, "RTMSFLOW_MEETINGS_INDEX_INTERVAL_MS", parse=_integer(1)
    )

    # -- sinks ---------------------------------------------------------------------------------
    sink_media_group: str = _setting("rtmsflow-sink-media", "RTMSFLOW_SINK_MEDIA_GROUP")
    sink_transcripts_group: str = _setting("rtmsflow-sink-transcripts", "RTMSFLOW_SINK_TRANSCRIPTS_GROUP")
    # A sink finalizes a stream that had no record for this long (seconds) and no end-of-stream
    # marker (its ingest died for good); the manifest then says `idle_timeout`.
    sink_idle_timeout_s: float = _setting(600.0, "RTMSFLOW_SINK_IDLE_TIMEOUT_S", parse=_number(0.0))
    # The transcript sink also writes the chat into transcript.txt, by time among the utterances
    # (chat.txt and chat.jsonl are written either way).
    sink_chat_in_transcript: bool = _setting(False, "RTMSFLOW_SINK_CHAT_IN_TRANSCRIPT", parse=_flag)
    # Media a sink may hold per partition while one topic waits for the other (video for audio);
    # past it the partition is paused until the other topic catches up.
    sink_buffer_bytes: int = _setting(64 << 20, "RTMSFLOW_SINK_BUFFER_BYTES", parse=_integer(1))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Every setting from the environment (or `environ`); SettingError names a bad variable."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            read = _read(f.metadata, env)
            if read is not None:
                values[f.name] = read
        return cls(**values)

    @staticmethod
    def env_names() -> dict[str, tuple[str, ...]]:
        """Each field's environment variable(s), the first being the one to use."""
        return {f.name: tuple(f.metadata["env"]) for f in fields(Settings)}

    def cache_path(self) -> Path:
        """Where downloaded artefacts live: `cache_dir`, else ~/.cache/rtmsflow."""
        return Path(self.cache_dir) if self.cache_dir else Path.home() / ".cache" / "rtmsflow"

    def spool_path(self) -> Path:
        """Where a sink writing to a bucket keeps a stream's files until they are uploaded."""
        return Path(self.spool_dir) if self.spool_dir else self.cache_path() / "spool"

    def sdk_home_path(self) -> Path:
        """The SDK host's home: `sdk_home`, else <cache>/sdk."""
        return Path(self.sdk_home) if self.sdk_home else self.cache_path() / "sdk"

    def sdk_python_path(self) -> str:
        """The interpreter of the SDK host: `sdk_python`, else this one."""
        return self.sdk_python or sys.executable

    def describe(self) -> dict[str, object]:
        """The settings as a dict with secrets masked, for the start-up log line."""
        out: dict[str, object] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.metadata.get("secret") and value:
                value = "***"
            out[f.name] = value
        return out


def _read(metadata: Mapping[str, Any], env: Mapping[str, str]) -> Any:
    """The value of the first non-empty variable of the field, parsed; None when none is set."""
    for name in metadata["env"]:
        raw = env.get(name, "")
        if raw != "":
            return metadata["parse"](name, raw)
    return None


def default_cache_dir() -> Path:
    """Where downloaded artefacts (Kafka jars) live: $RTMSFLOW_CACHE or ~/.cache/rtmsflow.

    Reads only that variable (through its field), so callers without a `Settings` at hand (the
    broker, the clip cache) do not depend on every other setting being valid."""
    return Settings(cache_dir=setting_from_env("cache_dir")).cache_path()


def setting_from_env(name: str) -> Any:
    """One field's value from the environment (its default when unset); SettingError if bad."""
    read = _read(_field_metadata(name), os.environ)
    return getattr(Settings(), name) if read is None else read


def _field_metadata(name: str) -> Mapping[str, Any]:
    return next(f.metadata for f in fields(Settings) if f.name == name)
