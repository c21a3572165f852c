"""The seam between an RTMS session backend and the frame handler it feeds (the Kafka producer).

A backend holds one RTMS stream: it connects, parses, reconnects within the stream and hands typed values
to a `FrameHandler`, whose coroutines block only when the producer's window is full (backpressure). It
never writes end-of-stream markers: `wait()` returns a `SessionOutcome` and the owner (the worker) does."""

from __future__ import annotations

import asyncio
import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal, Protocol

from rtmsflow.settings import Settings


class Product(StrEnum):
    """Which Zoom product a stream belongs to (the Avro `Product` enum's symbols)."""

    MEETING = "MEETING"
    WEBINAR = "WEBINAR"
    VIDEO_SDK = "VIDEO_SDK"
    CONTACT_CENTER = "CONTACT_CENTER"
    UNKNOWN = "UNKNOWN"


@dataclass(frozen=True)
class StreamSession:
    """One RTMS stream to hold: what a `*.rtms_started` webhook says.

    `meeting_uuid` is the instance id whatever the product (meeting / webinar uuid, Video SDK
    session id, Contact Center engagement id); it is the Kafka key and the handshake's
    `meeting_uuid`. `server_urls` is Zoom's string as sent (may hold several comma-separated URLs).

    `started_ms` is the `event_ts` of its first `rtms_started` webhook (the webhook service's clock).
    `media_origin_ms` is t = 0 of its media time once a holding fixed it from the media clock
    (read back from `rtms.sessions` by a worker that takes the stream over; 0 = not yet: the
    producer fixes it from the first-packet event and the first media). `fresh` is True when
    this worker took the stream from its `rtms_started` as it arrived (nobody held it before), so
    the end-of-stream counts of this holding cover the whole stream.
    """

    meeting_uuid: str
    rtms_stream_id: str
    server_urls: str
    product: Product = Product.MEETING
    started_ms: int = 0
    fresh: bool = False
    media_origin_ms: int = 0


# --- typed values a backend hands to the frame handler -------------------------------------------------


@dataclass(frozen=True)
class AudioParams:
    """Audio parameters as granted in the data handshake response (msg 4)."""

    codec: str = "L16"  # L16, G711, G722, OPUS
    sample_rate: int = 16000
    channels: int = 1
    send_rate_ms: int = 20
    mixed: bool = True


@dataclass(frozen=True)
class VideoParams:
    """Video / deskshare parameters as granted in the data handshake response."""

    codec: str = "H264"  # H264, JPG, PNG
    width: int = 1280
    height: int = 720
    fps: int = 30
    mode: str = "UNKNOWN"  # the Avro VideoMode symbol of the granted data_opt (`video_mode`)


_VIDEO_MODES = {3: "ACTIVE_SPEAKER", 4: "INDIVIDUAL", 5: "GALLERY"}


def video_mode(data_opt: int | None) -> str:
    """The Avro `VideoMode` symbol of a granted video `data_opt` (3 active speaker, 4 individual,
    5 gallery); UNKNOWN for anything else."""
    return _VIDEO_MODES.get(data_opt or 0, "UNKNOWN")


@dataclass(frozen=True)
class AudioData:
    """One audio packet (msg 14), payload already base64-decoded."""

    timestamp_ms: int
    payload: bytes
    params: AudioParams
    participant_id: int = 0
    participant_name: str | None = None
    channel_id: str | None = None


@dataclass(frozen=True)
class VideoData:
    """One video (msg 15) or deskshare (msg 16) frame, payload already base64-decoded."""

    kind: Literal["VIDEO", "DESKSHARE"]
    timestamp_ms: int
    payload: bytes
    params: VideoParams
    participant_id: int = 0
    participant_name: str | None = None


@dataclass(frozen=True)
class TranscriptData:
    """One transcript piece (msg 17)."""

    timestamp_ms: int
    text: str
    participant_id: int = 0
    participant_name: str | None = None
    channel_id: str | None = None
    language: int | None = None
    start_time_ms: int | None = None  # None (or 0) when Zoom did not send it
    end_time_ms: int | None = None


@dataclass(frozen=True)
class Participant:
    """A participant named in an event (leave events carry no name)."""

    user_id: int
    user_name: str | None = None


@dataclass(frozen=True)
class ChatData:
    """One in-meeting chat message (msg 18); `recipients` empty for a message to everyone."""

    timestamp_ms: int
    text: str
    participant_id: int = 0
    participant_name: str | None = None
    message_id: str | None = None
    recipients: tuple[Participant, ...] = ()


@dataclass(frozen=True)
class EventData:
    """A signaling message worth keeping: EVENT_UPDATE (6), STREAM_STATE (8), SESSION_STATE (9).

    `name` is the readable name of the raw_event schema (participant_join, active_speaker,
    stream_state, ...); `body` is the message's JSON exactly as received. `timestamp_ms` 0 means
    Zoom sent none (the record then carries the receive time, flagged `zoom_timestamp=false`).
    Lifecycle webhooks (rtms_started / rtms_interrupted / rtms_stopped) travel as msg_type 0.
    """

    msg_type: int
    name: str
    timestamp_ms: int
    body: str
    event_type: int | None = None
    participant_id: int = 0
    participant_name: str | None = None
    participants: tuple[Participant, ...] = ()
    state: int | None = None
    reason: int | None = None
    rtms_session_id: str | None = None


@dataclass(frozen=True)
class DeadLetterData:
    """Input the backend could not use. `payload` is the message exactly as received."""

    source: str  # ws:signaling, ws:media/audio, sdk, ...
    reason: str  # for a human: "bad base64 in content.data"
    error: str  # error class, e.g. ProtocolError.bad_base64
    payload: bytes


@dataclass(frozen=True)
class SessionOutcome:
    """How a backend's session ended.

    `ended` = the stream is over (STREAM_STATE TERMINATED, stream closed by us, fatal handshake
    status, reconnect budget spent): the owner writes end-of-stream markers. `ended=False` means we
    left (rebalance, shutdown) and another worker may take the stream over.
    """

    ended: bool
    stop_reason: int | None = None
    detail: str = ""
    extra: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class MediaLost:
    """A working media socket (`channel`: audio, video, deskshare, transcript) dropped; what its
    topic misses until it is back is a known loss."""

    channel: str


# --- the two interfaces ------------------------------------------------------------------------


class FrameHandler(Protocol):
    """Where a backend puts what it received. All methods are safe to call concurrently for
    different sessions; for one session, calls must come in receive order (that order is the
    `ingest_seq` order)."""

    async def audio(self, session: StreamSession, frame: AudioData) -> None:
        """Queue one audio packet for `rtms.raw.audio`."""

    async def video(self, session: StreamSession, frame: VideoData) -> None:
        """Queue one video or deskshare frame for `rtms.raw.video`."""

    async def transcript(self, session: StreamSession, frame: TranscriptData) -> None:
        """Queue one transcript piece for `rtms.raw.transcript`."""

    async def event(self, session: StreamSession, event: EventData) -> None:
        """Queue one event / state update for `rtms.raw.events`."""

    async def chat(self, session: StreamSession, message: ChatData) -> None:
        """Queue one chat message for `rtms.raw.chat` (as the chat privacy setting says)."""

    async def dead_letter(self, session: StreamSession | None, letter: DeadLetterData) -> None:
        """Queue unusable input for `rtms.deadletter` (and count it)."""

    async def media_lost(self, session: StreamSession, lost: MediaLost) -> None:
        """Note that a media socket dropped (its loss is listed before its topic's next frame)."""

    async def flush(self, session: StreamSession | None = None) -> None:
        """Wait until everything queued so far (for this session, or for all) is acknowledged."""

    async def end_of_stream(
        self, session: StreamSession, stop_reason: int | None, *, ended: str = "STOPPED"
    ) -> None:
        """Flush the session, then write the end-of-stream marker (`schemas.markers`) on every raw
        topic; `ended` is STOPPED or UNEXPECTED. Idempotent per (meeting, stream id)."""


class SessionBackend(ABC):
    """Holds one RTMS stream and feeds a `FrameHandler`. One instance per stream.

    Lifecycle: `start()` once, then `wait()` and/or `stop()`; `stop()` is idempotent. Backends are
    built as `factory(settings, frames)`; `load_backend(settings.ingest_backend)` returns the factory.
    """

    @abstractmethod
    async def start(self, session: StreamSession) -> None:
        """Begin connecting in the background; returns without waiting for the handshake."""

    @abstractmethod
    async def reconnect(self, server_urls: str | None = None, since_ms: int | None = None) -> None:
        """Tear signaling and media down and connect again: `rtms_interrupted` (no URLs; skipped
        when the backend has reconnected on its own since `since_ms`, the webhook's time) or a
        server failover (a new `rtms_started` with new `server_urls`: always)."""

    @abstractmethod
    async def stop(self, *, close_stream: bool = False) -> None:
        """Leave: `close_stream=True` asks Zoom to end the stream (STREAM_CLOSE_REQ), False just
        disconnects (rebalance; Zoom keeps the stream for the next owner). Idempotent."""

    @abstractmethod
    async def wait(self) -> SessionOutcome:
        """Until the session is over, by itself or through `stop()`."""


class TaskBackend(SessionBackend):
    """The lifecycle both backends share: the session is one task (`_run`), `reconnect()` and
    `stop()` are requests posted to it (`_request_reconnect`, `_request_stop`), and `wait()` is its
    outcome. A subclass calls `_refuse_second_start()` first in `start()`, `_launch()` last."""

    _task: asyncio.Task[SessionOutcome] | None = None

    def _refuse_second_start(self) -> None:
        if self._task is not None:
            raise RuntimeError(f"{type(self).__name__}.start() called twice; use one backend per stream")

    def _launch(self, name: str) -> None:
        self._task = asyncio.create_task(self._run(), name=name)

    async def reconnect(self, server_urls: str | None = None, since_ms: int | None = None) -> None:
        self._request_reconnect(server_urls, since_ms)

    async def stop(self, *, close_stream: bool = False) -> None:
        if self._task is None:
            return
        if not self._task.done():
            self._request_stop(close_stream)
        await asyncio.wait([self._task])

    async def wait(self) -> SessionOutcome:
        if self._task is None:
            raise RuntimeError(f"{type(self).__name__}.wait() before start()")
        return await asyncio.shield(self._task)

    @abstractmethod
    async def _run(self) -> SessionOutcome:
        """The session, from connecting to its outcome."""

    @abstractmethod
    def _request_reconnect(self, server_urls: str | None, since_ms: int | None) -> None:
        """Post a reconnect request to the running session."""

    @abstractmethod
    def _request_stop(self, close_stream: bool) -> None:
        """Post a stop request to the running session."""


class BackendFactory(Protocol):
    """Builds a backend: `factory(settings, frames)`; every backend also takes the client's media
    and reconnect choices as `config=` (an `ingest.rtms_client.ClientConfig`)."""

    def __call__(self, settings: Settings, frames: FrameHandler, *, config: Any = None) -> SessionBackend: ...


# name -> "module:attribute"; modules are imported on use so the SDK is only loaded when chosen.
BACKENDS: dict[str, str] = {
    "websocket": "ingest.ws_client:WebSocketBackend",
    "sdk": "ingest.sdk_backend:SdkBackend",
}


def load_backend(name: str) -> BackendFactory:
    """The backend class registered under `name` (Settings.ingest_backend)."""
    try:
        target = BACKENDS[name]
    except KeyError:
        raise ValueError(f"unknown ingest backend {name!r}: choose one of {sorted(BACKENDS)}") from None
    module_name, attr = target.split(":")
    factory: BackendFactory = getattr(importlib.import_module(module_name), attr)
    return factory
