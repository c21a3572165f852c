"""Media frames as wire bytes, serialized once: only the timestamps are filled in per send.

A media item becomes fixed `bytes` pieces and `int` media offsets that `render()` fills in; base64 and
JSON prefixes are cached, and the WebSocket framing is done here, so a frame is one `transport.write`."""

from __future__ import annotations

import base64
import json
from typing import Any, Protocol

from rtms_protocol import MsgType

# Media channels: index into per-stream arrays (one socket per channel, or one `all` socket).
AUDIO, VIDEO, DESKSHARE, TRANSCRIPT, CHAT = 0, 1, 2, 3, 4
CHANNEL_NAMES = ("audio", "video", "deskshare", "transcript", "chat")
CHANNEL_OF = {name: i for i, name in enumerate(CHANNEL_NAMES)}
CHANNEL_MSG_TYPE = (
    MsgType.MEDIA_DATA_AUDIO,
    MsgType.MEDIA_DATA_VIDEO,
    MsgType.MEDIA_DATA_SHARE,
    MsgType.MEDIA_DATA_TRANSCRIPT,
    MsgType.MEDIA_DATA_CHAT,
)

Piece = bytes | int  # int = media offset (ms) rendered as base_ms + offset


class MediaItemLike(Protocol):
    """What the server needs of an item (emulator.media.MediaItem, or a test's hand-made frame)."""

    @property
    def kind(self) -> str: ...
    @property
    def offset_ms(self) -> int: ...
    @property
    def user_id(self) -> int: ...
    @property
    def user_name(self) -> str: ...
    @property
    def data(self) -> bytes | str: ...
    @property
    def start_ms(self) -> int | None: ...
    @property
    def end_ms(self) -> int | None: ...
    @property
    def event(self) -> dict[str, Any] | None: ...


def ws_text_header(length: int) -> bytes:
    """Header of an unmasked, unfragmented WebSocket text frame (FIN + opcode 1)."""
    if length < 126:
        return bytes((0x81, length))
    if length < 65536:
        return b"\x81\x7e" + length.to_bytes(2, "big")
    return b"\x81\x7f" + length.to_bytes(8, "big")


def ws_text_frame(text: str | bytes) -> bytes:
    """A whole WebSocket text frame carrying `text`."""
    data = text.encode() if isinstance(text, str) else text
    return ws_text_header(len(data)) + data


def render(pieces: tuple[Piece, ...], base_ms: int, out: list[bytes]) -> int:
    """Append the WebSocket frame of `pieces` (timestamps = base_ms + offset) to `out`; returns
    its size in bytes."""
    if len(pieces) == 4:  # audio / video / share: (head, base64, tail, offset), then "}}"
        head, b64, tail, offset = pieces
        ts = b"%d" % (base_ms + offset)  # type: ignore[operator]
        n = len(head) + len(b64) + len(tail) + len(ts) + 2  # type: ignore[arg-type]
        header = ws_text_header(n)
        out += (header, head, b64, tail, ts, b"}}")  # type: ignore[arg-type]
        return n + len(header)
    chunks = [p if p.__class__ is bytes else b"%d" % (base_ms + p) for p in pieces]  # type: ignore[operator]
    n = 0
    for c in chunks:
        n += len(c)
    header = ws_text_header(n)
    out.append(header)
    out.extend(chunks)
    return n + len(header)


class FrameEncoder:
    """Turns media items into pieces, caching what repeats. One per server (shared by streams)."""

    def __init__(self, max_cached_bytes: int = 64 << 20) -> None:
        self._b64: dict[bytes, bytes] = {}
        self._b64_bytes = 0
        self._max = max_cached_bytes
        self._prefix: dict[tuple[int, int, str], bytes] = {}
        self._tails: dict[int, bytes] = {}

    def _base64(self, data: bytes) -> bytes:
        # Keyed by the payload itself: a looped `bytes` object hashes once (CPython caches it)
        # and hits by identity; a fresh object that equals a cached one hits too.
        b64 = self._b64.get(data)
        if b64 is None:
            b64 = base64.b64encode(data)
            if self._b64_bytes + len(b64) > self._max:
                self._b64.clear()
                self._b64_bytes = 0
            self._b64[data] = b64
            self._b64_bytes += len(b64)
        return b64

    def _user_prefix(self, msg_type: int, user_id: int, user_name: str) -> bytes:
        key = (msg_type, user_id, user_name)
        prefix = self._prefix.get(key)
        if prefix is None:
            name = json.dumps(user_name, ensure_ascii=False)
            prefix = f'{{"msg_type":{msg_type},"content":{{"user_id":{user_id},"user_name":{name},'.encode()
            if msg_type not in (CHANNEL_MSG_TYPE[TRANSCRIPT], CHANNEL_MSG_TYPE[CHAT]):
                prefix += b'"data":"'
            if len(self._prefix) > 100_000:
                self._prefix.clear()
            self._prefix[key] = prefix
        return prefix

    def pieces(self, channel: int, item: MediaItemLike, language: int | None = None) -> tuple[Piece, ...]:
        """The wire pieces of a media item on `channel` (AUDIO..CHAT); `language` is the
        transcript's RTMS language code (omitted when None). A chat item's `event` holds its
        `message_id` and `recipients` ([{user_id, user_name}], none: to everyone)."""
        msg_type = CHANNEL_MSG_TYPE[channel]
        prefix = self._user_prefix(msg_type, item.user_id, item.user_name)
        data = item.data
        if channel == TRANSCRIPT:
            text = data if isinstance(data, str) else data.decode()
            start = item.start_ms if item.start_ms is not None else item.offset_ms
            end = item.end_ms if item.end_ms is not None else item.offset_ms
            body = json.dumps(text, ensure_ascii=False).encode()
            lang = b"" if language is None else b',"language":%d' % language
            # Zoom's SDK drops transcripts without start_time/end_time; language is optional.
            return (
                prefix + b'"start_time":',
                start,
                b',"end_time":',
                end,
                b',"timestamp":',
                item.offset_ms,
                lang + b',"data":' + body + b"}}",
            )
        if channel == CHAT:  # rtms_protocol.ChatFrame's form: message_id and recipients when known
            extra = (
                {"message_id": item.event.get("message_id"), "recipients": item.event.get("recipients")}
                if item.event
                else {}
            )
            head = b"".join(
                b"%s:%s,"
                % (json.dumps(k).encode(), json.dumps(v, ensure_ascii=False, separators=(",", ":")).encode())
                for k, v in extra.items()
                if v
            )
            text = data if isinstance(data, str) else data.decode()
            body = json.dumps(text, ensure_ascii=False).encode()
            return (prefix + head + b'"timestamp":', item.offset_ms, b',"data":' + body + b"}}")
        raw = data.encode() if isinstance(data, str) else data
        tail = self._tails.get(len(raw))
        if tail is None:
            if len(self._tails) > 100_000:
                self._tails.clear()
            tail = self._tails[len(raw)] = b'","length":%d,"timestamp":' % len(raw)
        return (prefix, self._base64(raw), tail, item.offset_ms)
