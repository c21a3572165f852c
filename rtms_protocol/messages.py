"""RTMS messages: one frozen dataclass per message type, and `parse`.

`encode(msg)` gives the JSON text; `parse(raw)` turns text, bytes or a decoded object into the dataclass
of its `msg_type`, raising `ProtocolError(reason, field)` for anything malformed."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import Any, ClassVar

from rtms_protocol.codec import (
    REQUIRED,
    Message,
    ProtocolError,
    Wire,
    decode_fields,
    decode_json,
    drop_none,
    get,
    get_obj,
)
from rtms_protocol.constants import (
    MEDIA_MSG_TYPES,
    PROTOCOL_VERSION,
    TEXT_MSG_TYPES,
    MsgType,
    StatusCode,
    StopReason,
)
from rtms_protocol.params import MediaParams


def _media_params(value: dict[str, Any], path: str) -> MediaParams | None:
    return MediaParams.from_dict(value, path + ".")


def _params_json(params: MediaParams) -> dict[str, Any]:
    return params.to_dict()


def _version() -> Wire:
    return Wire("protocol_version", int, PROTOCOL_VERSION)


@dataclass(frozen=True, slots=True)
class HandshakeRequest(Message):
    """SIGNALING_HAND_SHAKE_REQ (1), client to server. `sequence` is not validated anywhere: the SDK
    sends its millisecond tick, samples a random number or nothing."""

    MSG_TYPE: ClassVar[MsgType] = MsgType.SIGNALING_HAND_SHAKE_REQ
    WIRE = (
        _version(),
        Wire("sequence", int, None),
        Wire("meeting_uuid", str),
        Wire("rtms_stream_id", str),
        Wire("signature", str),
        Wire("buffer_data", bool, None),
        Wire("rtms_client_agent", str, None),
    )
    meeting_uuid: str
    rtms_stream_id: str
    signature: str
    sequence: int | None = None
    protocol_version: int = PROTOCOL_VERSION
    buffer_data: bool | None = None
    rtms_client_agent: str | None = None


def _server_urls_json(urls: dict[str, str]) -> dict[str, Any] | None:
    return {"server_urls": dict(urls)} if urls else None


def _server_urls(server: dict[str, Any], path: str) -> dict[str, str]:
    raw = get_obj(server, "server_urls", path + ".", required=False) or {}
    return {k: get(raw, k, str, path=path + ".server_urls.") for k in raw}


@dataclass(frozen=True, slots=True)
class HandshakeResponse(Message):
    """SIGNALING_HAND_SHAKE_RESP (2). `media_urls` is `media_server.server_urls` (per-type keys and
    `all`); it is empty on failure, and required on success."""

    MSG_TYPE: ClassVar[MsgType] = MsgType.SIGNALING_HAND_SHAKE_RESP
    WIRE = (
        _version(),
        Wire("sequence", int, 0),
        Wire("status_code", int),
        Wire("reason", str, ""),
        Wire("media_server", dict, {}, "media_urls", _server_urls_json, _server_urls),
    )
    READ = ("status_code", "media_server", "reason", "sequence", "protocol_version")
    status_code: int
    reason: str = ""
    media_urls: dict[str, str] = field(default_factory=dict)
    sequence: int = 0
    protocol_version: int = PROTOCOL_VERSION

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HandshakeResponse:
        if get(d, "status_code", int) == StatusCode.OK:  # a success must name the media servers
            server = get_obj(d, "media_server")
            assert server is not None
            get_obj(server, "server_urls", "media_server.")
        return decode_fields(cls, d)


@dataclass(frozen=True, slots=True)
class DataHandshakeRequest(Message):
    """DATA_HAND_SHAKE_REQ (3) on a media socket. `media_type` is a MediaType bit (or several);
    `media_params` None means "server defaults" (the SDK sends null for transcripts)."""

    MSG_TYPE: ClassVar[MsgType] = MsgType.DATA_HAND_SHAKE_REQ
    WIRE = (
        _version(),
        Wire("sequence", int, None),
        Wire("meeting_uuid", str),
        Wire("rtms_stream_id", str),
        Wire("signature", str),
        Wire("media_type", int),
        Wire("payload_encryption", bool, None),
        Wire("media_params", dict, None, "", _params_json, _media_params),
    )
    meeting_uuid: str
    rtms_stream_id: str
    signature: str
    media_type: int
    media_params: MediaParams | None = None
    sequence: int | None = None
    protocol_version: int = PROTOCOL_VERSION
    payload_encryption: bool | None = None


@dataclass(frozen=True, slots=True)
class DataHandshakeResponse(Message):
    """DATA_HAND_SHAKE_RESP (4): the granted (possibly adjusted) parameters; decode with these.
    The SDK requires the boolean `payload_encrypted`."""

    MSG_TYPE: ClassVar[MsgType] = MsgType.DATA_HAND_SHAKE_RESP
    WIRE = (
        _version(),
        Wire("status_code", int),
        Wire("reason", str, ""),
        Wire("sequence", int, 0),
        Wire("payload_encrypted", bool, False),
        Wire("media_params", dict, None, "", _params_json, _media_params),
    )
    status_code: int
    reason: str = ""
    media_params: MediaParams | None = None
    payload_encrypted: bool = False
    sequence: int = 0
    protocol_version: int = PROTOCOL_VERSION


def _changes_json(changes: tuple[tuple[int, bool], ...]) -> list[dict[str, Any]]:
    return [{"event_type": t, "subscribe": s} for t, s in changes]


def _changes(events: list[Any], path: str) -> tuple[tuple[int, bool], ...]:
    changes = []
    for i, item in enumerate(events):
        if not isinstance(item, dict):
            raise ProtocolError("bad_field", f"{path}[{i}]")
        at = f"{path}[{i}]."
        changes.append((get(item, "event_type", int, path=at), get(item, "subscribe", bool, True, at)))
    return tuple(changes)


@dataclass(frozen=True, slots=True)
class EventSubscription(Message):
    """EVENT_SUBSCRIPTION (5): `changes` is ((event_type, subscribe), ...) in wire order."""

    MSG_TYPE: ClassVar[MsgType] = MsgType.EVENT_SUBSCRIPTION
    WIRE = (Wire("events", list, REQUIRED, "changes", _changes_json, _changes),)
    changes: tuple[tuple[int, bool], ...]

    @classmethod
    def subscribe(cls, *event_types: int) -> EventSubscription:
        return cls(tuple((int(t), True) for t in event_types))

    @classmethod
    def unsubscribe(cls, *event_types: int) -> EventSubscription:
        return cls(tuple((int(t), False) for t in event_types))


@dataclass(frozen=True, slots=True)
class Participant:
    """A participant in an event (leave and video on/off events carry no name)."""

    user_id: int
    user_name: str | None = None


def _participants_json(participants: tuple[Participant, ...]) -> list[dict[str, Any]]:
    return [drop_none({"user_id": p.user_id, "user_name": p.user_name}) for p in participants]


def _participants(raw: list[Any], path: str) -> tuple[Participant, ...]:
    items = []
    for i, p in enumerate(raw):
        if not isinstance(p, dict):
            raise ProtocolError("bad_field", f"{path}[{i}]")
        at = f"{path}[{i}]."
        items.append(Participant(get(p, "user_id", int, path=at), get(p, "user_name", str, None, at)))
    return tuple(items)


@dataclass(frozen=True, slots=True)
class EventUpdate(Message):
    """EVENT_UPDATE (6), its fields inside `event`. Speaker and sharing-start events carry
    `user_id`/`user_name`; join, leave and video on/off carry `participants`; the others only a
    timestamp."""

    MSG_TYPE: ClassVar[MsgType] = MsgType.EVENT_UPDATE
    NEST = "event"
    WIRE = (
        Wire("event_type", int),
        Wire("timestamp", int, 0),
        Wire("user_id", int, None),
        Wire("user_name", str, None),
        Wire("participants", list, None, "", _participants_json, _participants),
    )
    READ = ("participants", "event_type", "timestamp", "user_id", "user_name")
    event_type: int
    timestamp: int
    user_id: int | None = None
    user_name: str | None = None
    participants: tuple[Participant, ...] | None = None


@dataclass(frozen=True, slots=True)
class ClientReadyAck(Message):
    """CLIENT_READY_ACK (7): sent once every media handshake succeeded; media flows after it."""

    MSG_TYPE: ClassVar[MsgType] = MsgType.CLIENT_READY_ACK
    WIRE = (Wire("rtms_stream_id", str, ""),)
    rtms_stream_id: str = ""


@dataclass(frozen=True, slots=True)
class StreamStateUpdate(Message):
    """STREAM_STATE_UPDATE (8); TERMINATED (4) carries the stop reason (the SDK calls on_leave(reason))."""

    MSG_TYPE: ClassVar[MsgType] = MsgType.STREAM_STATE_UPDATE
    WIRE = (Wire("state", int), Wire("reason", int, 0), Wire("timestamp", int, 0))
    state: int
    reason: int = StopReason.UNDEFINED
    timestamp: int = 0


@dataclass(frozen=True, slots=True)
class SessionStateUpdate(Message):
    """SESSION_STATE_UPDATE (9). The docs disagree on the stop reason's key, so both `stop_reason`
    and `reason` are written; either is read (`stop_reason` first)."""

    MSG_TYPE: ClassVar[MsgType] = MsgType.SESSION_STATE_UPDATE
    WIRE = (
        Wire("state", int),
        Wire("stop_reason", int, None),
        Wire("reason", int, None, "stop_reason"),
        Wire("timestamp", int, 0),
        Wire("rtms_session_id", str, ""),
    )
    READ = ("stop_reason", "state", "timestamp", "rtms_session_id", "reason")
    state: int
    timestamp: int
    rtms_session_id: str
    stop_reason: int | None = None


@dataclass(frozen=True, slots=True)
class SessionStateRequest(Message):
    """SESSION_STATE_REQ (10)."""

    MSG_TYPE: ClassVar[MsgType] = MsgType.SESSION_STATE_REQ
    WIRE = (Wire("rtms_session_id", str),)
    rtms_session_id: str


@dataclass(frozen=True, slots=True)
class SessionStateResponse(Message):
    """SESSION_STATE_RESP (11)."""

    MSG_TYPE: ClassVar[MsgType] = MsgType.SESSION_STATE_RESP
    WIRE = (Wire("rtms_session_id", str), Wire("state", int), Wire("timestamp", int, 0))
    rtms_session_id: str
    state: int
    timestamp: int


@dataclass(frozen=True, slots=True)
class KeepAliveRequest(Message):
    """KEEP_ALIVE_REQ (12), server to client on every socket. Zoom's SDK ignores a request without
    an integer `sequence`, so servers send both."""

    MSG_TYPE: ClassVar[MsgType] = MsgType.KEEP_ALIVE_REQ
    WIRE = (Wire("timestamp", int, 0), Wire("sequence", int, None))
    timestamp: int
    sequence: int | None = None

    def response(self) -> KeepAliveResponse:
        """The answer: echo `timestamp` and, when present, `sequence`."""
        return KeepAliveResponse(self.timestamp, self.sequence)


@dataclass(frozen=True, slots=True)
class KeepAliveResponse(Message):
    """KEEP_ALIVE_RESP (13), on the socket the request came on."""

    MSG_TYPE: ClassVar[MsgType] = MsgType.KEEP_ALIVE_RESP
    WIRE = (Wire("sequence", int, None), Wire("timestamp", int, 0))
    timestamp: int
    sequence: int | None = None


@dataclass(frozen=True, slots=True)
class StreamStateRequest(Message):
    """STREAM_STATE_REQ (19)."""

    MSG_TYPE: ClassVar[MsgType] = MsgType.STREAM_STATE_REQ
    WIRE = (Wire("rtms_stream_id", str, ""),)
    rtms_stream_id: str


@dataclass(frozen=True, slots=True)
class StreamStateResponse(Message):
    """STREAM_STATE_RESP (20)."""

    MSG_TYPE: ClassVar[MsgType] = MsgType.STREAM_STATE_RESP
    WIRE = (Wire("state", int), Wire("rtms_stream_id", str, ""), Wire("timestamp", int, 0))
    rtms_stream_id: str
    state: int
    timestamp: int


@dataclass(frozen=True, slots=True)
class StreamCloseRequest(Message):
    """STREAM_CLOSE_REQ (21): the client asks Zoom to end the stream (stop reason 20 follows)."""

    MSG_TYPE: ClassVar[MsgType] = MsgType.STREAM_CLOSE_REQ
    WIRE = (Wire("rtms_stream_id", str, ""),)
    rtms_stream_id: str


# Responses to a request (22, 29): what a reader takes when the status fields are absent.
_STATUS = (Wire("status_code", int), Wire("reason", str, ""), Wire("timestamp", int, 0))


@dataclass(frozen=True, slots=True)
class StreamCloseResponse(Message):
    """STREAM_CLOSE_RESP (22)."""

    MSG_TYPE: ClassVar[MsgType] = MsgType.STREAM_CLOSE_RESP
    WIRE = (Wire("rtms_stream_id", str, ""), *_STATUS)
    rtms_stream_id: str
    status_code: int = StatusCode.OK
    reason: str = "OK"
    timestamp: int = 0


@dataclass(frozen=True, slots=True)
class VideoSubscriptionRequest(Message):
    """VIDEO_SUBSCRIPTION_REQ (28): pick the one participant whose video to receive (video
    `data_opt` 4 only). The SDK's `timestamp` is its monotonic tick, not epoch."""

    MSG_TYPE: ClassVar[MsgType] = MsgType.VIDEO_SUBSCRIPTION_REQ
    WIRE = (Wire("user_id", int), Wire("subscribe", bool, True), Wire("timestamp", int, None))
    user_id: int
    subscribe: bool = True
    timestamp: int | None = None


@dataclass(frozen=True, slots=True)
class VideoSubscriptionResponse(Message):
    """VIDEO_SUBSCRIPTION_RESP (29)."""

    MSG_TYPE: ClassVar[MsgType] = MsgType.VIDEO_SUBSCRIPTION_RESP
    WIRE = (Wire("user_id", int), *_STATUS)
    user_id: int
    status_code: int = StatusCode.OK
    reason: str = "OK"
    timestamp: int = 0


@dataclass(frozen=True, slots=True)
class MediaFrame(Message):
    """A media message (14 audio, 15 video, 16 share, 17 transcript; 18 chat parses as `ChatFrame`).

    `data` is the decoded payload: bytes for audio/video/share (base64 on the wire), str for
    transcript/chat (plain text on the wire). Zoom's SDK drops frames without `user_name` or
    `timestamp` (and transcripts without `start_time`/`end_time`), so `to_dict` always writes them
    for transcripts; parsing is lenient and defaults everything but `data` and `timestamp`.

    The one message with its own `to_dict`/`from_dict` instead of `WIRE`: which keys it writes, in
    which order, and how `data` is coded all depend on `msg_type`, and it is the hot path (every
    audio packet and video frame), where walking a field list costs about a third more per message.
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
        msg_type = get(d, "msg_type", int)
        c = get_obj(d, "content")
        assert c is not None
        p = "content."
        raw = get(c, "data", str, path=p)
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
            timestamp=get(c, "timestamp", int, path=p),
            data=data,
            user_id=get(c, "user_id", int, 0, p),
            user_name=get(c, "user_name", str, "", p),
            length=get(c, "length", int, None, p),
            start_time=get(c, "start_time", int, None, p),
            end_time=get(c, "end_time", int, None, p),
            language=get(c, "language", int, None, p),
            channel_id=get(c, "channel_id", str, None, p),
        )


@dataclass(frozen=True, slots=True)
class ChatFrame(Message):
    """A chat message (18). Zoom's pages name msg_type 18 and media type bit 16 but show no chat
    packet; like a transcript piece, `content` carries `user_id`, `user_name`, `data` (the text) and
    `timestamp`. `message_id` and `recipients` (absent or empty: a message to everyone) are
    rtmsflow's assumption, optional on the way in."""

    MSG_TYPE: ClassVar[MsgType] = MsgType.MEDIA_DATA_CHAT
    timestamp: int
    text: str
    user_id: int = 0
    user_name: str = ""
    message_id: str | None = None
    recipients: tuple[Participant, ...] = ()

    @property
    def private(self) -> bool:
        """Sent to chosen participants rather than to everyone."""
        return bool(self.recipients)

    def to_dict(self) -> dict[str, Any]:
        content: dict[str, Any] = {"user_id": self.user_id, "user_name": self.user_name}
        if self.message_id is not None:
            content["message_id"] = self.message_id
        if self.recipients:
            content["recipients"] = _participants_json(self.recipients)
        content["timestamp"] = self.timestamp
        content["data"] = self.text
        return {"msg_type": int(MsgType.MEDIA_DATA_CHAT), "content": content}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ChatFrame:
        if get(d, "msg_type", int) != MsgType.MEDIA_DATA_CHAT:
            raise ProtocolError("bad_field", "msg_type")
        c = get_obj(d, "content")
        assert c is not None
        p = "content."
        recipients = c.get("recipients")
        if recipients is not None and not isinstance(recipients, list):
            raise ProtocolError("bad_field", "content.recipients")
        text = get(c, "data", str, path=p)
        return cls(
            timestamp=get(c, "timestamp", int, path=p),
            text=text,
            user_id=get(c, "user_id", int, 0, p),
            user_name=get(c, "user_name", str, "", p),
            message_id=get(c, "message_id", str, None, p),
            recipients=_participants(recipients or [], "content.recipients"),
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
_PARSERS[MsgType.MEDIA_DATA_CHAT] = ChatFrame


def parse(raw: str | bytes | bytearray | dict[str, Any]) -> Message:
    """Any RTMS message to its dataclass; `ProtocolError` if it is malformed or of unknown type."""
    d = raw if isinstance(raw, dict) else decode_json(raw)
    msg_type = get(d, "msg_type", int)
    cls = _PARSERS.get(msg_type)
    if cls is None:
        raise ProtocolError("unknown_msg_type", "msg_type", str(msg_type))
    return cls.from_dict(d)
