"""Frame identity: what makes two raw records the same frame (docs/DESIGN.md, "Frame identity").

`identity_digest` is 16 bytes of BLAKE2b over a length-prefixed encoding of (meeting, stream, kind,
participant, channel, RTMS timestamp) and the record's content; `ingest_epoch`, `ingest_seq`,
`received_at_ms` and the media parameters are left out, so a repeat has its original's digest."""

from __future__ import annotations

import hashlib
import operator
import struct
from collections.abc import Mapping
from typing import Any

DIGEST_SIZE = 16
_LEN = struct.Struct(">I")
_NONE = b"\xff\xff\xff\xff"  # a length no field can have: null differs from "" everywhere

# The content fields of each raw value schema, in a fixed order.
CONTENT_FIELDS: dict[str, tuple[str, ...]] = {
    "AUDIO": ("payload",),
    "VIDEO": ("payload",),
    "DESKSHARE": ("payload",),
    "TRANSCRIPT": ("text", "language", "start_time_ms", "end_time_ms"),
    "EVENT": ("msg_type", "event_type", "name", "state", "reason", "rtms_session_id", "body"),
    # rtms.raw.chat; `body` tells apart the chat messages ingest kept on rtms.raw.events before
    # rtms.raw.chat existed (recipients are not hashed: id, text and sender name a message)
    "CHAT": ("message_id", "text", "private", "body"),
}
KEY_FIELDS = ("meeting_uuid", "rtms_stream_id", "stream_kind", "participant_id", "channel_id", "timestamp_ms")


def _part(value: Any) -> bytes:
    if value is None:
        return _NONE
    if isinstance(value, bool):
        data = b"\x01" if value else b"\x00"
    elif isinstance(value, int):
        data = value.to_bytes(9, "big", signed=True)
    elif isinstance(value, str):
        data = value.encode()
    elif isinstance(value, bytes | bytearray | memoryview):
        data = bytes(value)
    else:
        raise TypeError(f"identity field of type {type(value).__name__}")
    return _LEN.pack(len(data)) + data


def identity_digest(record: Mapping[str, Any]) -> bytes:
    """The identity of a raw record (any raw topic's decoded value) as 16 bytes. Records of an
    unknown stream kind use the fields every raw schema has plus nothing: they are dead-lettered
    by the processors anyway.

    The same bytes as `reference_digest` (which spells the encoding out), computed faster: the
    encoded (meeting, stream, kind, participant, channel) repeat along a stream and are remembered
    (bounded), and the whole encoding is hashed at once."""
    try:
        head = _HEAD(record)
        timestamp = record["timestamp_ms"]
    except (KeyError, TypeError):
        return reference_digest(record)
    meeting, stream, kind, participant, channel = head
    # only values whose equality means equal encodings (True == 1 but encodes otherwise)
    if (
        type(meeting) is not str
        or type(stream) is not str
        or type(participant) is not int
        or not (kind is None or type(kind) is str)
        or not (channel is None or type(channel) is str)
        or type(timestamp) is not int
    ):
        return reference_digest(record)
    prefix = _PREFIXES.get(head)
    if prefix is None:
        prefix = b"".join(_part(v) for v in head)
        if len(_PREFIXES) >= _PREFIX_MEMORY:
            _PREFIXES.clear()
        _PREFIXES[head] = prefix
    parts = [prefix, _LONG_LEN, timestamp.to_bytes(9, "big", signed=True)]
    for name in CONTENT_FIELDS.get(kind or "", ()):
        value = record.get(name)
        if type(value) is bytes:  # the payload of audio and video: no copy
            parts.append(_LEN.pack(len(value)))
            parts.append(value)
        else:
            parts.append(_part(value))
    return hashlib.blake2b(b"".join(parts), digest_size=DIGEST_SIZE).digest()


def reference_digest(record: Mapping[str, Any]) -> bytes:
    """`identity_digest` field by field: BLAKE2b-128 over `_part` of each KEY_FIELDS value, then
    of each of the stream kind's CONTENT_FIELDS values."""
    h = hashlib.blake2b(digest_size=DIGEST_SIZE)
    for name in KEY_FIELDS:
        h.update(_part(record.get(name)))
    for name in CONTENT_FIELDS.get(record.get("stream_kind") or "", ()):
        h.update(_part(record.get(name)))
    return h.digest()


# identity_digest's fast path: KEY_FIELDS but the timestamp, fetched at once, and their encodings
_HEAD = operator.itemgetter(*KEY_FIELDS[:-1])
_LONG_LEN = _LEN.pack(9)
_PREFIX_MEMORY = 4096
_PREFIXES: dict[tuple[Any, ...], bytes] = {}
