"""The pipe between the ingest worker and its SDK host process (`ingest.sdk_host`), without I/O.

Commands: one JSON object a line on the host's stdin. Answers: length-prefixed binary messages on its
stdout, a 9-byte header `<I length><B kind><I sid>` then a kind-specific body (media binary, no base64,
to keep the copy cheap); `sid` 0 is the host itself."""

from __future__ import annotations

import json
import struct
from dataclasses import asdict, dataclass, field
from enum import IntEnum
from typing import Any


class Kind(IntEnum):
    """What a host message carries, and so its body after the header:

    * media (AUDIO, VIDEO, DESKSHARE, TRANSCRIPT): `MEDIA` (timestamp, user id, start, end, name length),
      the UTF-8 user name, then the payload bytes exactly as the SDK handed them over;
    * JOIN_CONFIRM / LEAVE: `REASON` (the SDK's `on_join_confirm` / `on_leave` argument);
    * EVENT: the SDK's `on_event_ex` JSON text (the inner `event` object of an EVENT_UPDATE);
    * LEFT: empty (the client is released: nothing more comes for this sid);
    * ERROR, HELLO: UTF-8 text (HELLO is JSON: pid, rtms version)."""

    AUDIO = 1
    VIDEO = 2
    DESKSHARE = 3
    TRANSCRIPT = 4
    JOIN_CONFIRM = 10
    LEAVE = 11
    EVENT = 12
    LEFT = 13
    ERROR = 14
    HELLO = 15


MEDIA_KINDS = frozenset({Kind.AUDIO, Kind.VIDEO, Kind.DESKSHARE, Kind.TRANSCRIPT})

HEADER = struct.Struct("<IBI")  # length of the rest, kind, sid
MEDIA = struct.Struct("<qqqqH")  # timestamp, user id, start, end, name length
REASON = struct.Struct("<i")
_HEAD_AFTER_LENGTH = HEADER.size - 4


def media_header(
    kind: Kind, sid: int, ts: int, user_id: int, start: int, end: int, name: bytes, size: int
) -> bytes:
    """Everything of a media message before its payload (`size` = payload length)."""
    length = _HEAD_AFTER_LENGTH + MEDIA.size + len(name) + size
    return HEADER.pack(length, kind, sid) + MEDIA.pack(ts, user_id, start, end, len(name)) + name


def control(kind: Kind, sid: int, body: bytes = b"") -> bytes:
    """A whole non-media message."""
    return HEADER.pack(_HEAD_AFTER_LENGTH + len(body), kind, sid) + body


def reason_message(kind: Kind, sid: int, reason: int) -> bytes:
    """A JOIN_CONFIRM or LEAVE message."""
    return control(kind, sid, REASON.pack(reason))


@dataclass(frozen=True, slots=True)
class MediaMessage:
    """A decoded media message. `payload` is a view into the read buffer's copy, kept as bytes."""

    kind: Kind
    sid: int
    timestamp_ms: int
    user_id: int
    user_name: str
    start_ms: int
    end_ms: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class ControlMessage:
    """A decoded non-media message; `reason` is set for JOIN_CONFIRM and LEAVE."""

    kind: Kind
    sid: int
    reason: int | None = None
    text: str = ""


Message = MediaMessage | ControlMessage


class MessageReader:
    """Splits the host's byte stream into messages: `feed(chunk)` returns the complete ones."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, chunk: bytes) -> list[Message]:
        buf = self._buf
        buf += chunk
        out: list[Message] = []
        pos = 0
        end = len(buf)
        while end - pos >= 4:
            (length,) = struct.unpack_from("<I", buf, pos)
            if end - pos - 4 < length:
                break
            out.append(_decode(buf, pos + 4, pos + 4 + length))
            pos += 4 + length
        if pos:
            del buf[:pos]
        return out

    @property
    def pending_bytes(self) -> int:
        """Bytes of an incomplete message still waiting for the rest."""
        return len(self._buf)


def _decode(buf: bytearray, start: int, stop: int) -> Message:
    kind_value, sid = struct.unpack_from("<BI", buf, start)
    try:
        kind = Kind(kind_value)
    except ValueError:
        raise ValueError(f"SDK host sent an unknown message kind {kind_value}") from None
    pos = start + _HEAD_AFTER_LENGTH
    if kind in MEDIA_KINDS:
        ts, user_id, begin, finish, name_len = MEDIA.unpack_from(buf, pos)
        pos += MEDIA.size
        name = bytes(buf[pos : pos + name_len]).decode("utf-8", "replace")
        pos += name_len
        return MediaMessage(kind, sid, ts, user_id, name, begin, finish, bytes(buf[pos:stop]))
    if kind in (Kind.JOIN_CONFIRM, Kind.LEAVE):
        (reason,) = REASON.unpack_from(buf, pos)
        return ControlMessage(kind, sid, reason=reason)
    return ControlMessage(kind, sid, text=bytes(buf[pos:stop]).decode("utf-8", "replace"))


# --- commands (worker -> host) ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SdkAudio:
    """Audio parameters in the SDK's numbers; the fields are `rtms.AudioParams`' keywords
    (`duration` = send rate in ms, `frame_size` = samples per frame)."""

    content_type: int
    codec: int
    sample_rate: int
    channel: int
    data_opt: int
    duration: int
    frame_size: int


@dataclass(frozen=True, slots=True)
class SdkVideo:
    """Video parameters; the fields are `rtms.VideoParams`' keywords."""

    content_type: int
    codec: int
    resolution: int
    data_opt: int
    fps: int


@dataclass(frozen=True, slots=True)
class SdkDeskshare:
    """Deskshare parameters; the fields are `rtms.DeskshareParams`' keywords."""

    content_type: int
    codec: int
    resolution: int
    fps: int


@dataclass(frozen=True, slots=True)
class SdkTranscript:
    """Transcript parameters; the fields are `rtms.TranscriptParams`' attributes."""

    src_language: int
    enable_lid: bool


@dataclass(frozen=True, slots=True)
class SdkMedia:
    """The media an SDK client asks for, in the SDK's own numbers (`rtms.AudioParams` etc.).

    `None` for a type = do not connect it (the SDK opens a media socket per registered callback).
    """

    audio: SdkAudio | None = None
    video: SdkVideo | None = None
    deskshare: SdkDeskshare | None = None
    transcript: SdkTranscript | None = None

    @classmethod
    def from_dict(cls, m: dict[str, Any]) -> SdkMedia:
        """The inverse of `asdict` (what a `JoinCommand` line holds)."""
        return cls(
            audio=SdkAudio(**m["audio"]) if m.get("audio") else None,
            video=SdkVideo(**m["video"]) if m.get("video") else None,
            deskshare=SdkDeskshare(**m["deskshare"]) if m.get("deskshare") else None,
            transcript=SdkTranscript(**m["transcript"]) if m.get("transcript") else None,
        )


@dataclass(frozen=True, slots=True)
class JoinCommand:
    """Start one SDK client: join `server_url` (one URL: the SDK does not split lists)."""

    sid: int
    meeting_uuid: str
    rtms_stream_id: str
    server_url: str
    signature: str
    media: SdkMedia = field(default_factory=SdkMedia)
    op: str = "join"

    def encode(self) -> bytes:
        return (json.dumps(asdict(self), separators=(",", ":")) + "\n").encode()


@dataclass(frozen=True, slots=True)
class LeaveCommand:
    """Leave and release one SDK client (done on the client's own SDK thread)."""

    sid: int
    op: str = "leave"

    def encode(self) -> bytes:
        return (json.dumps(asdict(self), separators=(",", ":")) + "\n").encode()


QUIT = b'{"op":"quit"}\n'


def decode_command(line: bytes | str) -> JoinCommand | LeaveCommand | None:
    """One command line as its dataclass; None for `quit`. ValueError for anything else."""
    obj: Any = json.loads(line)
    if not isinstance(obj, dict):
        raise ValueError("command is not a JSON object")
    op = obj.get("op")
    if op == "quit":
        return None
    if op == "leave":
        return LeaveCommand(int(obj["sid"]))
    if op == "join":
        media = SdkMedia.from_dict(obj.get("media") or {})
        return JoinCommand(
            sid=int(obj["sid"]),
            meeting_uuid=str(obj["meeting_uuid"]),
            rtms_stream_id=str(obj["rtms_stream_id"]),
            server_url=str(obj["server_url"]),
            signature=str(obj["signature"]),
            media=media,
        )
    raise ValueError(f"unknown SDK host command {op!r}")
