"""Zoom RTMS on the wire, without I/O: the numbers, the signatures and the JSON messages.

Shared by the ingest client and the emulator. Every message is a frozen dataclass with
`to_dict()`; `encode(msg)` gives the JSON text and `parse(raw)` turns text (or bytes) back into the
dataclass of its `msg_type`, raising `ProtocolError(reason, field)` for anything malformed. Field
names and key order follow what Zoom's SDK puts on the wire (see the RTMS protocol notes, 2-3).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass, field
from enum import IntEnum, IntFlag
from typing import Any, ClassVar, TypeVar

PROTOCOL_VERSION = 1


# --- numbers -----------------------------------------------------------------------------------


class MsgType(IntEnum):
    """RTMS_MESSAGE_TYPE: the `msg_type` of every message."""

    UNDEFINED = 0
    SIGNALING_HAND_SHAKE_REQ = 1
    SIGNALING_HAND_SHAKE_RESP = 2
    DATA_HAND_SHAKE_REQ = 3
    DATA_HAND_SHAKE_RESP = 4
    EVENT_SUBSCRIPTION = 5
    EVENT_UPDATE = 6
    CLIENT_READY_ACK = 7
    STREAM_STATE_UPDATE = 8
    SESSION_STATE_UPDATE = 9
    SESSION_STATE_REQ = 10
    SESSION_STATE_RESP = 11
    KEEP_ALIVE_REQ = 12
    KEEP_ALIVE_RESP = 13
    MEDIA_DATA_AUDIO = 14
    MEDIA_DATA_VIDEO = 15
    MEDIA_DATA_SHARE = 16
    MEDIA_DATA_TRANSCRIPT = 17
    MEDIA_DATA_CHAT = 18
    STREAM_STATE_REQ = 19
    STREAM_STATE_RESP = 20
    STREAM_CLOSE_REQ = 21
    STREAM_CLOSE_RESP = 22
    META_DATA_AUDIO = 23
    META_DATA_VIDEO = 24
    META_DATA_SHARE = 25
    META_DATA_TRANSCRIPT = 26
    META_DATA_CHAT = 27
    VIDEO_SUBSCRIPTION_REQ = 28
    VIDEO_SUBSCRIPTION_RESP = 29


class StreamState(IntEnum):
    """RTMS_STREAM_STATE (STREAM_STATE_UPDATE `state`)."""

    INACTIVE = 0
    ACTIVE = 1
    INTERRUPTED = 2
    TERMINATING = 3
    TERMINATED = 4
    PAUSED = 5
    RESUMED = 6


class SessionState(IntEnum):
    """RTMS_SESSION_STATE (SESSION_STATE_UPDATE `state`)."""

    INACTIVE = 0
    INITIALIZE = 1
    STARTED = 2
    PAUSED = 3
    RESUMED = 4
    STOPPED = 5


class StopReason(IntEnum):
    """RTMS_STOP_REASON (docs prefix the names with STOP_BC_)."""

    UNDEFINED = 0
    HOST_TRIGGERED = 1
    USER_TRIGGERED = 2
    USER_LEFT = 3
    USER_EJECTED = 4
    HOST_DISABLED_APP = 5
    MEETING_ENDED = 6
    STREAM_CANCELED = 7
    STREAM_REVOKED = 8
    ALL_APPS_DISABLED = 9
    INTERNAL_EXCEPTION = 10
    CONNECTION_TIMEOUT = 11
    INSTANCE_CONNECTION_INTERRUPTED = 12
    SIGNAL_CONNECTION_INTERRUPTED = 13
    DATA_CONNECTION_INTERRUPTED = 14
    SIGNAL_CONNECTION_CLOSED_ABNORMALLY = 15
    DATA_CONNECTION_CLOSED_ABNORMALLY = 16
    EXIT_SIGNAL = 17
    AUTHENTICATION_FAILURE = 18
    AWAIT_RECONNECTION_TIMEOUT = 19
    RECEIVER_REQUEST_CLOSE = 20
    CUSTOMER_DISCONNECTED = 21
    AGENT_DISCONNECTED = 22
    ADMIN_DISABLED_APP = 23
    KEEP_ALIVE_TIMEOUT = 24
    MANUAL_API_TRIGGERED = 25
    STREAMING_NOT_SUPPORTED = 26


class StatusCode(IntEnum):
    """RTMS_STATUS_CODE: `status_code` of handshake and request responses."""

    OK = 0
    INVALID_MESSAGE_TYPE = 1
    INVALID_RTMS_STREAM_ID = 2
    INVALID_SIGNATURE = 3
    INVALID_PAYLOAD = 4
    INVALID_EVENTS = 5
    INVALID_EVENT_TYPE = 6
    INVALID_MEDIA_TYPE = 7
    DUPLICATE_SIGNAL_REQUEST = 8
    MEDIA_TYPE_AUDIO_NOT_SUPPORT = 9
    MEDIA_TYPE_VIDEO_NOT_SUPPORT = 10
    MEDIA_TYPE_DESKSHARE_NOT_SUPPORT = 11
    MEDIA_TYPE_TRANSCRIPT_NOT_SUPPORT = 12
    MEDIA_TYPE_CHAT_NOT_SUPPORT = 13
    MEDIA_TYPE_INVALID_VALUE = 14
    MEDIA_DATA_ALL_CONNECTION_EXIST = 15
    DUPLICATE_MEDIA_DATA_CONNECTION = 16
    INVALID_MEDIA_PARAMS = 17
    INVALID_MEDIA_AUDIO_PARAMS = 18
    INVALID_MEDIA_AUDIO_CONTENT_TYPE = 19
    INVALID_MEDIA_AUDIO_SAMPLE_RATE = 20
    INVALID_MEDIA_AUDIO_CHANNEL = 21
    INVALID_MEDIA_AUDIO_CODEC = 22
    INVALID_MEDIA_AUDIO_DATA_OPT = 23
    INVALID_MEDIA_AUDIO_SEND_RATE = 24
    INVALID_MEDIA_VIDEO_PARAMS = 25
    INVALID_MEDIA_VIDEO_CONTENT_TYPE = 26
    INVALID_MEDIA_VIDEO_CODEC = 27
    INVALID_MEDIA_VIDEO_RESOLUTION = 28
    INVALID_MEDIA_VIDEO_DATA_OPT = 29
    INVALID_MEDIA_VIDEO_FPS = 30
    INVALID_MEDIA_DESKSHARE_PARAMS = 31
    INVALID_MEDIA_DESKSHARE_CONTENT_TYPE = 32
    INVALID_MEDIA_DESKSHARE_CODEC = 33
    INVALID_MEDIA_DESKSHARE_RESOLUTION = 34
    INVALID_MEDIA_DESKSHARE_FPS = 35
    INVALID_MEDIA_TRANSCRIPT_PARAMS = 36
    INVALID_MEDIA_TRANSCRIPT_CONTENT_TYPE = 37
    INVALID_MEDIA_CHAT_PARAMS = 38
    INVALID_MEDIA_CHAT_CONTENT_TYPE = 39
    INVALID_RTMS_SESSION_ID = 40
    INVALID_CLIENT_READY_ACK = 41
    INVALID_EVENT_SUBSCRIBE = 42
    INVALID_MEDIA_TRANSCRIPT_SOURCE_LANGUAGE = 43
    DUPLICATE_VIDEO_SUBSCRIPTION = 44
    INTERNAL_EXCEPTION = 45


class MediaType(IntFlag):
    """MEDIA_DATA_TYPE bits of a data handshake's `media_type`; ALL asks for every permitted type."""

    AUDIO = 1
    VIDEO = 2
    DESKSHARE = 4
    TRANSCRIPT = 8
    CHAT = 16
    ALL = 32


class EventType(IntEnum):
    """EVENT_UPDATE `event_type` for meetings (Contact Center reuses 8-29 with other meanings)."""

    UNDEFINED = 0
    FIRST_PACKET_TIMESTAMP = 1
    ACTIVE_SPEAKER_CHANGE = 2
    PARTICIPANT_JOIN = 3
    PARTICIPANT_LEAVE = 4
    SHARING_START = 5
    SHARING_STOP = 6
    MEDIA_CONNECTION_INTERRUPTED = 7
    PARTICIPANT_VIDEO_ON = 8
    PARTICIPANT_VIDEO_OFF = 9


class ContentType(IntEnum):
    """MEDIA_CONTENT_TYPE."""

    UNDEFINED = 0
    RTP = 1
    RAW_AUDIO = 2
    RAW_VIDEO = 3
    FILE_STREAM = 4
    TEXT = 5


class Codec(IntEnum):
    """MEDIA_PAYLOAD_TYPE: audio codecs 1-4, image/video codecs 5-7."""

    UNDEFINED = 0
    L16 = 1
    G711 = 2
    G722 = 3
    OPUS = 4
    JPG = 5
    PNG = 6
    H264 = 7


class AudioSampleRate(IntEnum):
    """AUDIO_SAMPLE_RATE; `.hz` is the rate in Hz."""

    SR_8K = 0
    SR_16K = 1
    SR_32K = 2
    SR_48K = 3

    @property
    def hz(self) -> int:
        return (8000, 16000, 32000, 48000)[self.value]


class AudioChannel(IntEnum):
    """Audio channel count."""

    MONO = 1
    STEREO = 2


class DataOption(IntEnum):
    """MEDIA_DATA_OPTION: mixed or per-speaker audio; active-speaker, individual or gallery video."""

    UNDEFINED = 0
    AUDIO_MIXED_STREAM = 1
    AUDIO_MULTI_STREAMS = 2
    VIDEO_SINGLE_ACTIVE_STREAM = 3
    VIDEO_SINGLE_INDIVIDUAL_STREAM = 4
    VIDEO_MIXED_GALLERY_VIEW = 5


class Resolution(IntEnum):
    """MEDIA_RESOLUTION; `.size` is (width, height) (SD is 640x360 here; Zoom also uses 854x480)."""

    SD = 1
    HD = 2
    FHD = 3
    QHD = 4

    @property
    def size(self) -> tuple[int, int]:
        return {1: (640, 360), 2: (1280, 720), 3: (1920, 1080), 4: (2560, 1440)}[self.value]


class TranscriptLanguage(IntEnum):
    """RTMS_TRANSCRIPT_LANGUAGE (-1 = none: automatic language identification)."""

    NONE = -1
    ARABIC = 0
    BENGALI = 1
    CANTONESE = 2
    CATALAN = 3
    CHINESE_SIMPLIFIED = 4
    CHINESE_TRADITIONAL = 5
    CZECH = 6
    DANISH = 7
    DUTCH = 8
    ENGLISH = 9
    ESTONIAN = 10
    FINNISH = 11
    FRENCH_CANADA = 12
    FRENCH_FRANCE = 13
    GERMAN = 14
    HEBREW = 15
    HINDI = 16
    HUNGARIAN = 17
    INDONESIAN = 18
    ITALIAN = 19
    JAPANESE = 20
    KOREAN = 21
    MALAY = 22
    PERSIAN = 23
    POLISH = 24
    PORTUGUESE = 25
    ROMANIAN = 26
    RUSSIAN = 27
    SPANISH = 28
    SWEDISH = 29
    TAGALOG = 30
    TAMIL = 31
    TELUGU = 32
    THAI = 33
    TURKISH = 34
    UKRAINIAN = 35
    VIETNAMESE = 36


# --- signatures ---------------------------------------------------------------------------------


def _hmac_hex(key: str, msg: bytes) -> str:
    return hmac.new(key.encode(), msg, hashlib.sha256).hexdigest()


def handshake_signature(client_id: str, client_secret: str, meeting_uuid: str, stream_id: str) -> str:
    """The `signature` of signaling and data handshakes: lowercase hex
    HMAC-SHA256(client secret, "client_id,meeting_uuid,rtms_stream_id")."""
    return _hmac_hex(client_secret, f"{client_id},{meeting_uuid},{stream_id}".encode())


def webhook_signature(secret: str, timestamp: str | int, raw_body: bytes) -> str:
    """The `x-zm-signature` header of a webhook: "v0=" + hex HMAC-SHA256(webhook secret token,
    "v0:{x-zm-request-timestamp}:{raw body}"). Always hash the raw bytes, never a re-serialization."""
    return "v0=" + _hmac_hex(secret, b"v0:" + str(timestamp).encode() + b":" + raw_body)


def url_validation_token(secret: str, plain_token: str) -> str:
    """`encryptedToken` answering an `endpoint.url_validation` challenge."""
    return _hmac_hex(secret, plain_token.encode())


def signatures_equal(a: str, b: str) -> bool:
    """Constant-time comparison of two signatures."""
    return hmac.compare_digest(a.encode(), b.encode())


# --- errors and field access ---------------------------------------------------------------------


class ProtocolError(ValueError):
    """A message that cannot be used. `reason` is one of bad_json, not_object, missing_field,
    bad_field, unknown_msg_type, bad_base64; `field` names the offending key ("content.data")."""

    def __init__(self, reason: str, field: str = "", detail: str = "") -> None:
        self.reason = reason
        self.field = field
        super().__init__(f"{reason}: {field}" + (f" ({detail})" if detail else ""))


_T = TypeVar("_T")
_MISSING: Any = object()


def _get(d: dict[str, Any], key: str, typ: type[_T], default: Any = _MISSING, path: str = "") -> _T:
    """`d[key]` checked against `typ` (bool is not an int here); `default` when absent or null."""
    value = d.get(key)
    name = path + key
    if value is None:
        if default is _MISSING:
            raise ProtocolError("missing_field", name)
        return default  # type: ignore[no-any-return]
    if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
        raise ProtocolError("bad_field", name, f"expected {typ.__name__}, got {type(value).__name__}")
    return value


def _obj(d: dict[str, Any], key: str, path: str = "", required: bool = True) -> dict[str, Any] | None:
    value = _get(d, key, dict, _MISSING if required else None, path)
    return value


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


# --- media parameters ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AudioParams:
    """`media_params.audio`. Protocol defaults: L16, 16 kHz, mono, mixed, 20 ms."""

    content_type: int = ContentType.RAW_AUDIO
    sample_rate: int = AudioSampleRate.SR_16K
    channel: int = AudioChannel.MONO
    codec: int = Codec.L16
    data_opt: int = DataOption.AUDIO_MIXED_STREAM
    send_rate: int = 20


@dataclass(frozen=True, slots=True)
class VideoParams:
    """`media_params.video` (`data_opt` None) or `.deskshare` (no `data_opt` on the wire)."""

    content_type: int = ContentType.RAW_VIDEO
    codec: int = Codec.H264
    resolution: int = Resolution.HD
    data_opt: int | None = DataOption.VIDEO_SINGLE_ACTIVE_STREAM
    fps: int = 30


@dataclass(frozen=True, slots=True)
class TranscriptParams:
    """`media_params.transcript`."""

    content_type: int = ContentType.TEXT
    src_language: int = TranscriptLanguage.ENGLISH
    enable_lid: bool = True


@dataclass(frozen=True, slots=True)
class MediaParams:
    """The `media_params` object of a data handshake: one entry per media type (None = absent)."""

    audio: AudioParams | None = None
    video: VideoParams | None = None
    deskshare: VideoParams | None = None
    transcript: TranscriptParams | None = None
    chat: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.audio is not None:
            out["audio"] = _params_dict(self.audio)
        if self.video is not None:
            out["video"] = _params_dict(self.video)
        if self.deskshare is not None:
            out["deskshare"] = _params_dict(self.deskshare)
        if self.transcript is not None:
            out["transcript"] = _params_dict(self.transcript)
        if self.chat is not None:
            out["chat"] = dict(self.chat)
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None, path: str = "media_params.") -> MediaParams | None:
        """Parse `media_params`; unknown keys are ignored, absent numbers take the protocol default."""
        if d is None:
            return None
        audio = _obj(d, "audio", path, required=False)
        video = _obj(d, "video", path, required=False)
        share = _obj(d, "deskshare", path, required=False)
        transcript = _obj(d, "transcript", path, required=False)
        chat = _obj(d, "chat", path, required=False)
        return cls(
            audio=_params_from(AudioParams, audio, path + "audio.") if audio is not None else None,
            video=_params_from(VideoParams, video, path + "video.") if video is not None else None,
            deskshare=(
                _params_from(VideoParams, share, path + "deskshare.", data_opt=None)
                if share is not None
                else None
            ),
            transcript=(
                _params_from(TranscriptParams, transcript, path + "transcript.")
                if transcript is not None
                else None
            ),
            chat=chat,
        )


def _params_dict(p: AudioParams | VideoParams | TranscriptParams) -> dict[str, Any]:
    return _drop_none({name: getattr(p, name) for name in p.__slots__})


_P = TypeVar("_P", AudioParams, VideoParams, TranscriptParams)


def _params_from(cls: type[_P], d: dict[str, Any], path: str, **overrides: Any) -> _P:
    values: dict[str, Any] = {}
    for name in cls.__slots__:
        default = overrides.get(name, getattr(cls(), name))
        typ = bool if isinstance(default, bool) else int
        values[name] = _get(d, name, typ, default, path)
    return cls(**values)


# --- messages ------------------------------------------------------------------------------------


class Message:
    """Base of every message dataclass: `MSG_TYPE` and `to_dict()`."""

    __slots__ = ()
    MSG_TYPE: ClassVar[MsgType]

    def to_dict(self) -> dict[str, Any]:  # pragma: no cover - every subclass overrides
        raise NotImplementedError

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Message:  # pragma: no cover
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class HandshakeRequest(Message):
    """SIGNALING_HAND_SHAKE_REQ (1), client to server. `sequence` is not validated anywhere: the SDK
    sends its millisecond tick, samples a random number or nothing."""

    MSG_TYPE: ClassVar[MsgType] = MsgType.SIGNALING_HAND_SHAKE_REQ
    meeting_uuid: str
    rtms_stream_id: str
    signature: str
    sequence: int | None = None
    protocol_version: int = PROTOCOL_VERSION
    buffer_data: bool | None = None
    rtms_client_agent: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return _drop_none(
            {
                "msg_type": int(self.MSG_TYPE),
                "protocol_version": self.protocol_version,
                "sequence": self.sequence,
                "meeting_uuid": self.meeting_uuid,
                "rtms_stream_id": self.rtms_stream_id,
                "signature": self.signature,
                "buffer_data": self.buffer_data,
                "rtms_client_agent": self.rtms_client_agent,
            }
        )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HandshakeRequest:
        return cls(
            meeting_uuid=_get(d, "meeting_uuid", str),
            rtms_stream_id=_get(d, "rtms_stream_id", str),
            signature=_get(d, "signature", str),
            sequence=_get(d, "sequence", int, None),
            protocol_version=_get(d, "protocol_version", int, PROTOCOL_VERSION),
            buffer_data=_get(d, "buffer_data", bool, None),
            rtms_client_agent=_get(d, "rtms_client_agent", str, None),
        )



@dataclass(frozen=True, slots=True)
class HandshakeResponse(Message):
    """SIGNALING_HAND_SHAKE_RESP (2). `media_urls` is `media_server.server_urls` (per-type keys and
    `all`); it is empty on failure."""

    MSG_TYPE: ClassVar[MsgType] = MsgType.SIGNALING_HAND_SHAKE_RESP
    status_code: int
    reason: str = ""
    media_urls: dict[str, str] = field(default_factory=dict)
    sequence: int = 0
    protocol_version: int = PROTOCOL_VERSION

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "msg_type": int(self.MSG_TYPE),
            "protocol_version": self.protocol_version,
            "sequence": self.sequence,
            "status_code": self.status_code,
            "reason": self.reason,
        }
        if self.media_urls:
            out["media_server"] = {"server_urls": dict(self.media_urls)}
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HandshakeResponse:
        status = _get(d, "status_code", int)
        urls: dict[str, str] = {}
        server = _obj(d, "media_server", required=False)
        if server is not None:
            raw_urls = _obj(server, "server_urls", "media_server.", required=status == StatusCode.OK) or {}
            urls = {k: _get(raw_urls, k, str, path="media_server.server_urls.") for k in raw_urls}
        elif status == StatusCode.OK:
            raise ProtocolError("missing_field", "media_server")
        return cls(
            status_code=status,
            reason=_get(d, "reason", str, ""),
            media_urls=urls,
            sequence=_get(d, "sequence", int, 0),
            protocol_version=_get(d, "protocol_version", int, PROTOCOL_VERSION),
        )


@dataclass(frozen=True, slots=True)
class DataHandshakeRequest(Message):
    """DATA_HAND_SHAKE_REQ (3) on a media socket. `media_type` is a MediaType bit (or several);
    `media_params` None means "server defaults" (the SDK sends null for transcripts)."""

    MSG_TYPE: ClassVar[MsgType] = MsgType.DATA_HAND_SHAKE_REQ
    meeting_uuid: str
    rtms_stream_id: str
    signature: str
    media_type: int
    media_params: MediaParams | None = None
    sequence: int | None = None
    protocol_version: int = PROTOCOL_VERSION
    payload_encryption: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        return _drop_none(
            {
                "msg_type": int(self.MSG_TYPE),
                "protocol_version": self.protocol_version,
                "sequence": self.sequence,
                "meeting_uuid": self.meeting_uuid,
                "rtms_stream_id": self.rtms_stream_id,
                "signature": self.signature,
                "media_type": self.media_type,
                "payload_encryption": self.payload_encryption,
                "media_params": self.media_params.to_dict() if self.media_params is not None else None,
            }
        )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DataHandshakeRequest:
        return cls(
            meeting_uuid=_get(d, "meeting_uuid", str),
            rtms_stream_id=_get(d, "rtms_stream_id", str),
            signature=_get(d, "signature", str),
            media_type=_get(d, "media_type", int),
            media_params=MediaParams.from_dict(_obj(d, "media_params", required=False)),
            sequence=_get(d, "sequence", int, None),
            protocol_version=_get(d, "protocol_version", int, PROTOCOL_VERSION),
            payload_encryption=_get(d, "payload_encryption", bool, None),
        )


@dataclass(frozen=True, slots=True)
class DataHandshakeResponse(Message):
    """DATA_HAND_SHAKE_RESP (4): the granted (possibly adjusted) parameters; decode with these.
    The SDK requires the boolean `payload_encrypted`."""

    MSG_TYPE: ClassVar[MsgType] = MsgType.DATA_HAND_SHAKE_RESP
    status_code: int
    reason: str = ""
    media_params: MediaParams | None = None
    payload_encrypted: bool = False
    sequence: int = 0
    protocol_version: int = PROTOCOL_VERSION

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "msg_type": int(self.MSG_TYPE),
            "protocol_version": self.protocol_version,
            "status_code": self.status_code,
            "reason": self.reason,
            "sequence": self.sequence,
            "payload_encrypted": self.payload_encrypted,
        }
        if self.media_params is not None:
            out["media_params"] = self.media_params.to_dict()
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DataHandshakeResponse:
        return cls(
            status_code=_get(d, "status_code", int),
            reason=_get(d, "reason", str, ""),
            media_params=MediaParams.from_dict(_obj(d, "media_params", required=False)),
            payload_encrypted=_get(d, "payload_encrypted", bool, False),
            sequence=_get(d, "sequence", int, 0),
            protocol_version=_get(d, "protocol_version", int, PROTOCOL_VERSION),
        )


@dataclass(frozen=True, slots=True)
class EventSubscription(Message):
    """EVENT_SUBSCRIPTION (5): `changes` is ((event_type, subscribe), ...) in wire order."""

    MSG_TYPE: ClassVar[MsgType] = MsgType.EVENT_SUBSCRIPTION
    changes: tuple[tuple[int, bool], ...]

    @classmethod
    def subscribe(cls, *event_types: int) -> EventSubscription:
        return cls(tuple((int(t), True) for t in event_types))

    @classmethod
    def unsubscribe(cls, *event_types: int) -> EventSubscription:
        return cls(tuple((int(t), False) for t in event_types))

    def to_dict(self) -> dict[str, Any]:
        return {
            "msg_type": int(self.MSG_TYPE),
            "events": [{"event_type": t, "subscribe": s} for t, s in self.changes],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EventSubscription:
        events = _get(d, "events", list)
        changes = []
        for i, item in enumerate(events):
            if not isinstance(item, dict):
                raise ProtocolError("bad_field", f"events[{i}]")
            path = f"events[{i}]."
            changes.append(
                (_get(item, "event_type", int, path=path), _get(item, "subscribe", bool, True, path))
            )
        return cls(tuple(changes))


@dataclass(frozen=True, slots=True)
class Participant:
    """A participant in an event (leave and video on/off events carry no name)."""

    user_id: int
    user_name: str | None = None


@dataclass(frozen=True, slots=True)
class EventUpdate(Message):
    """EVENT_UPDATE (6). Speaker and sharing-start events carry `user_id`/`user_name`; join, leave
    and video on/off carry `participants`; the others only a timestamp."""

    MSG_TYPE: ClassVar[MsgType] = MsgType.EVENT_UPDATE
    event_type: int
    timestamp: int
    user_id: int | None = None
    user_name: str | None = None
    participants: tuple[Participant, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        event: dict[str, Any] = {"event_type": self.event_type, "timestamp": self.timestamp}
        if self.user_id is not None:
            event["user_id"] = self.user_id
        if self.user_name is not None:
            event["user_name"] = self.user_name
        if self.participants is not None:
            event["participants"] = [
                _drop_none({"user_id": p.user_id, "user_name": p.user_name}) for p in self.participants
            ]
        return {"msg_type": int(self.MSG_TYPE), "event": event}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EventUpdate:
        ev = _obj(d, "event")
        assert ev is not None
        participants = None
        raw = _get(ev, "participants", list, None, "event.")
        if raw is not None:
            items = []
            for i, p in enumerate(raw):
                if not isinstance(p, dict):
                    raise ProtocolError("bad_field", f"event.participants[{i}]")
                path = f"event.participants[{i}]."
                items.append(
                    Participant(_get(p, "user_id", int, path=path), _get(p, "user_name", str, None, path))
                )
            participants = tuple(items)
        return cls(
            event_type=_get(ev, "event_type", int, path="event."),
            timestamp=_get(ev, "timestamp", int, 0, "event."),
            user_id=_get(ev, "user_id", int, None, "event."),
            user_name=_get(ev, "user_name", str, None, "event."),
            participants=participants,
        )


@dataclass(frozen=True, slots=True)
class ClientReadyAck(Message):
    """CLIENT_READY_ACK (7): sent once every media handshake succeeded; media flows after it."""

    MSG_TYPE: ClassVar[MsgType] = MsgType.CLIENT_READY_ACK
    rtms_stream_id: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"msg_type": int(self.MSG_TYPE), "rtms_stream_id": self.rtms_stream_id}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ClientReadyAck:
        return cls(_get(d, "rtms_stream_id", str, ""))


@dataclass(frozen=True, slots=True)
class StreamStateUpdate(Message):
    """STREAM_STATE_UPDATE (8); TERMINATED (4) carries the stop reason (the SDK calls on_leave(reason))."""

    MSG_TYPE: ClassVar[MsgType] = MsgType.STREAM_STATE_UPDATE
    state: int
    reason: int = StopReason.UNDEFINED
    timestamp: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "msg_type": int(self.MSG_TYPE),
            "state": self.state,
            "reason": self.reason,
            "timestamp": self.timestamp,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StreamStateUpdate:
        return cls(_get(d, "state", int), _get(d, "reason", int, 0), _get(d, "timestamp", int, 0))


@dataclass(frozen=True, slots=True)
class SessionStateUpdate(Message):
    """SESSION_STATE_UPDATE (9). The docs disagree on the stop reason's key, so both `stop_reason`
    and `reason` are written; either is read."""

    MSG_TYPE: ClassVar[MsgType] = MsgType.SESSION_STATE_UPDATE
    state: int
    timestamp: int
    rtms_session_id: str
    stop_reason: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"msg_type": int(self.MSG_TYPE), "state": self.state}
        if self.stop_reason is not None:
            out["stop_reason"] = self.stop_reason
            out["reason"] = self.stop_reason
        out["timestamp"] = self.timestamp
        out["rtms_session_id"] = self.rtms_session_id
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SessionStateUpdate:
        reason = _get(d, "stop_reason", int, None)
        return cls(
            state=_get(d, "state", int),
            timestamp=_get(d, "timestamp", int, 0),
            rtms_session_id=_get(d, "rtms_session_id", str, ""),
            stop_reason=reason if reason is not None else _get(d, "reason", int, None),
        )


@dataclass(frozen=True, slots=True)
class SessionStateRequest(Message):
    """SESSION_STATE_REQ (10)."""

    MSG_TYPE: ClassVar[MsgType] = MsgType.SESSION_STATE_REQ
    rtms_session_id: str

    def to_dict(self) -> dict[str, Any]:
        return {"msg_type": int(self.MSG_TYPE), "rtms_session_id": self.rtms_session_id}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SessionStateRequest:
        return cls(_get(d, "rtms_session_id", str))


@dataclass(frozen=True, slots=True)
class SessionStateResponse(Message):
    """SESSION_STATE_RESP (11)."""

    MSG_TYPE: ClassVar[MsgType] = MsgType.SESSION_STATE_RESP
    rtms_session_id: str
    state: int
    timestamp: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "msg_type": int(self.MSG_TYPE),
            "rtms_session_id": self.rtms_session_id,
            "state": self.state,
            "timestamp": self.timestamp,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SessionStateResponse:
        return cls(_get(d, "rtms_session_id", str), _get(d, "state", int), _get(d, "timestamp", int, 0))


@dataclass(frozen=True, slots=True)
class KeepAliveRequest(Message):
    """KEEP_ALIVE_REQ (12), server to client on every socket. Zoom's SDK ignores a request without
    an integer `sequence`, so servers send both."""

    MSG_TYPE: ClassVar[MsgType] = MsgType.KEEP_ALIVE_REQ
    timestamp: int
    sequence: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return _drop_none(
            {"msg_type": int(self.MSG_TYPE), "timestamp": self.timestamp, "sequence": self.sequence}
        )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> KeepAliveRequest:
        return cls(_get(d, "timestamp", int, 0), _get(d, "sequence", int, None))

    def response(self) -> KeepAliveResponse:
        """The answer: echo `timestamp` and, when present, `sequence`."""
        return KeepAliveResponse(self.timestamp, self.sequence)


@dataclass(frozen=True, slots=True)
class KeepAliveResponse(Message):
    """KEEP_ALIVE_RESP (13), on the socket the request came on."""

    MSG_TYPE: ClassVar[MsgType] = MsgType.KEEP_ALIVE_RESP
    timestamp: int
    sequence: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return _drop_none(
            {"msg_type": int(self.MSG_TYPE), "sequence": self.sequence, "timestamp": self.timestamp}
        )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> KeepAliveResponse:
        return cls(_get(d, "timestamp", int, 0), _get(d, "sequence", int, None))


@dataclass(frozen=True, slots=True)
class StreamStateRequest(Message):
    """STREAM_STATE_REQ (19)."""

    MSG_TYPE: ClassVar[MsgType] = MsgType.STREAM_STATE_REQ
    rtms_stream_id: str

    def to_dict(self) -> dict[str, Any]:
        return {"msg_type": int(self.MSG_TYPE), "rtms_stream_id": self.rtms_stream_id}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StreamStateRequest:
        return cls(_get(d, "rtms_stream_id", str, ""))


@dataclass(frozen=True, slots=True)
class StreamStateResponse(Message):
    """STREAM_STATE_RESP (20)."""

    MSG_TYPE: ClassVar[MsgType] = MsgType.STREAM_STATE_RESP
    rtms_stream_id: str
    state: int
    timestamp: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "msg_type": int(self.MSG_TYPE),
            "state": self.state,
            "rtms_stream_id": self.rtms_stream_id,
            "timestamp": self.timestamp,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StreamStateResponse:
        return cls(_get(d, "rtms_stream_id", str, ""), _get(d, "state", int), _get(d, "timestamp", int, 0))


@dataclass(frozen=True, slots=True)
class StreamCloseRequest(Message):
    """STREAM_CLOSE_REQ (21): the client asks Zoom to end the stream (stop reason 20 follows)."""

    MSG_TYPE: ClassVar[MsgType] = MsgType.STREAM_CLOSE_REQ
    rtms_stream_id: str

    def to_dict(self) -> dict[str, Any]:
        return {"msg_type": int(self.MSG_TYPE), "rtms_stream_id": self.rtms_stream_id}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StreamCloseRequest:
        return cls(_get(d, "rtms_stream_id", str, ""))


@dataclass(frozen=True, slots=True)
class StreamCloseResponse(Message):
    """STREAM_CLOSE_RESP (22)."""

    MSG_TYPE: ClassVar[MsgType] = MsgType.STREAM_CLOSE_RESP
    rtms_stream_id: str
    status_code: int = StatusCode.OK
    reason: str = "OK"
    timestamp: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "msg_type": int(self.MSG_TYPE),
            "rtms_stream_id": self.rtms_stream_id,
            "status_code": self.status_code,
            "reason": self.reason,
            "timestamp": self.timestamp,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StreamCloseResponse:
        return cls(
            _get(d, "rtms_stream_id", str, ""),
            _get(d, "status_code", int),
            _get(d, "reason", str, ""),
            _get(d, "timestamp", int, 0),
        )


@dataclass(frozen=True, slots=True)
class VideoSubscriptionRequest(Message):
    """VIDEO_SUBSCRIPTION_REQ (28): pick the one participant whose video to receive (video
    `data_opt` 4 only). The SDK's `timestamp` is its monotonic tick, not epoch."""

    MSG_TYPE: ClassVar[MsgType] = MsgType.VIDEO_SUBSCRIPTION_REQ
    user_id: int
    subscribe: bool = True
    timestamp: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return _drop_none(
            {
                "msg_type": int(self.MSG_TYPE),
                "user_id": self.user_id,
                "subscribe": self.subscribe,
                "timestamp": self.timestamp,
            }
        )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VideoSubscriptionRequest:
        return cls(_get(d, "user_id", int), _get(d, "subscribe", bool, True), _get(d, "timestamp", int, None))


@dataclass(frozen=True, slots=True)
class VideoSubscriptionResponse(Message):
    """VIDEO_SUBSCRIPTION_RESP (29)."""

    MSG_TYPE: ClassVar[MsgType] = MsgType.VIDEO_SUBSCRIPTION_RESP
    user_id: int
    status_code: int = StatusCode.OK
    reason: str = "OK"
    timestamp: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "msg_type": int(self.MSG_TYPE),
            "user_id": self.user_id,
            "status_code": self.status_code,
            "reason": self.reason,
            "timestamp": self.timestamp,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VideoSubscriptionResponse:
        return cls(
            _get(d, "user_id", int),
            _get(d, "status_code", int),
            _get(d, "reason", str, ""),
            _get(d, "timestamp", int, 0),
        )


MEDIA_MSG_TYPES = frozenset(
    {
        MsgType.MEDIA_DATA_AUDIO,
        MsgType.MEDIA_DATA_VIDEO,
        MsgType.MEDIA_DATA_SHARE,
        MsgType.MEDIA_DATA_TRANSCRIPT,
        MsgType.MEDIA_DATA_CHAT,
    }
)
TEXT_MSG_TYPES = frozenset({MsgType.MEDIA_DATA_TRANSCRIPT, MsgType.MEDIA_DATA_CHAT})


@dataclass(frozen=True, slots=True)
class MediaFrame(Message):
    """A media message (14 audio, 15 video, 16 share, 17 transcript, 18 chat).

    `data` is the decoded payload: bytes for audio/video/share (base64 on the wire), str for
    transcript/chat (plain text on the wire). Zoom's SDK drops frames without `user_name` or
    `timestamp` (and transcripts without `start_time`/`end_time`), so `to_dict` always writes them
    for transcripts; parsing is lenient and defaults everything but `data` and `timestamp`.
    """

    msg_type: int
    timestamp: int
    data: bytes | str
    user_id: int = 0
    user_name: str = ""
    length: int | None = None
    start_time: int | None = None
    end_time: int | None = None
    language: int | None = None
    channel_id: str | None = None

    @property
    def MSG_TYPE(self) -> MsgType:  # type: ignore[override]  # one class for five msg_types
        return MsgType(self.msg_type)

    def to_dict(self) -> dict[str, Any]:
        content: dict[str, Any] = {"user_id": self.user_id, "user_name": self.user_name}
        if self.msg_type in TEXT_MSG_TYPES:
            text = self.data if isinstance(self.data, str) else self.data.decode()
            content["start_time"] = self.start_time if self.start_time is not None else self.timestamp
            content["end_time"] = self.end_time if self.end_time is not None else self.timestamp
            content["timestamp"] = self.timestamp
            if self.language is not None:
                content["language"] = self.language
            content["data"] = text
        else:
            raw = self.data.encode() if isinstance(self.data, str) else self.data
            content["data"] = base64.b64encode(raw).decode("ascii")
            content["length"] = self.length if self.length is not None else len(raw)
            content["timestamp"] = self.timestamp
        if self.channel_id is not None:
            content["channel_id"] = self.channel_id
        return {"msg_type": self.msg_type, "content": content}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MediaFrame:
        msg_type = _get(d, "msg_type", int)
        c = _obj(d, "content")
        assert c is not None
        p = "content."
        raw = _get(c, "data", str, path=p)
        data: bytes | str
        if msg_type in TEXT_MSG_TYPES:
            data = raw
        else:
            try:
                data = base64.b64decode(raw, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise ProtocolError("bad_base64", "content.data", str(exc)) from None
        return cls(
            msg_type=msg_type,
            timestamp=_get(c, "timestamp", int, path=p),
            data=data,
            user_id=_get(c, "user_id", int, 0, p),
            user_name=_get(c, "user_name", str, "", p),
            length=_get(c, "length", int, None, p),
            start_time=_get(c, "start_time", int, None, p),
            end_time=_get(c, "end_time", int, None, p),
            language=_get(c, "language", int, None, p),
            channel_id=_get(c, "channel_id", str, None, p),
        )


_PARSERS: dict[int, type[Message]] = {
    cls.MSG_TYPE: cls
    for cls in (
        HandshakeRequest,
        HandshakeResponse,
        DataHandshakeRequest,
        DataHandshakeResponse,
        EventSubscription,
        EventUpdate,
        ClientReadyAck,
        StreamStateUpdate,
        SessionStateUpdate,
        SessionStateRequest,
        SessionStateResponse,
        KeepAliveRequest,
        KeepAliveResponse,
        StreamStateRequest,
        StreamStateResponse,
        StreamCloseRequest,
        StreamCloseResponse,
        VideoSubscriptionRequest,
        VideoSubscriptionResponse,
    )
}
_PARSERS.update({t: MediaFrame for t in MEDIA_MSG_TYPES})


def encode(msg: Message) -> str:
    """The compact JSON text of a message."""
    return json.dumps(msg.to_dict(), separators=(",", ":"), ensure_ascii=False)


def decode_json(raw: str | bytes | bytearray) -> dict[str, Any]:
    """JSON text (or UTF-8 bytes: Zoom's SDK accepts JSON in binary frames too) to an object with
    an integer `msg_type`."""
    try:
        obj = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError("bad_json", "", str(exc)) from None
    if not isinstance(obj, dict):
        raise ProtocolError("not_object", "", type(obj).__name__)
    _get(obj, "msg_type", int)
    return obj


def parse(raw: str | bytes | bytearray | dict[str, Any]) -> Message:
    """Any RTMS message to its dataclass; `ProtocolError` if it is malformed or of unknown type."""
    d = raw if isinstance(raw, dict) else decode_json(raw)
    msg_type = _get(d, "msg_type", int)
    cls = _PARSERS.get(msg_type)
    if cls is None:
        raise ProtocolError("unknown_msg_type", "msg_type", str(msg_type))
    return cls.from_dict(d)
