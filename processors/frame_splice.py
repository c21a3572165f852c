"""Ordered audio and video frames written by splicing their raw record's bytes, not re-encoding.

An ordered frame is its raw frame plus `seq`, `offset_ms` and `gap` after `received_at_ms`, so its Avro
bytes are slices of the raw value around those fields. `FrameSplicer.for_codec` checks the layout once;
`splice` returns None (the caller encodes) for an older writer schema or an unexpected layout."""

from __future__ import annotations

import json
import operator
from typing import Any

from schemas.codec import CONFLUENT_HEADER_LEN, SINGLE_OBJECT_HEADER_LEN, Codec
from schemas.topics import AUDIO, RAW_AUDIO, RAW_VIDEO, VIDEO

INSERTED = ("seq", "offset_ms", "gap")
_KNOWN_MEMORY = 4096  # remembered sizes of (names, ids, kind) tuples per topic
_T = 1_732_400_000_000
_AUDIO = {"codec": "L16", "sample_rate": 16000, "channels": 1, "send_rate_ms": 20, "mixed": True}
_VIDEO = {"codec": "H264", "width": 1280, "height": 720, "fps": 25, "mode": "ACTIVE_SPEAKER"}
_COMMON = {"meeting_uuid": "m0TtQ/ab+cd==", "rtms_stream_id": "0f1e2d3c", "participant_id": 16778240,
           "participant_name": None, "channel_id": None, "timestamp_ms": _T + 20, "stream_started_ms": _T,
           "ingest_epoch": 3, "ingest_seq": 1, "received_at_ms": _T + 27}  # fmt: skip
# raw values the layout check encodes both ways (null and non-ASCII names, large and negative longs)
SAMPLES: dict[str, list[dict[str, Any]]] = {
    RAW_AUDIO.name: [
        {**_COMMON, "stream_kind": "AUDIO", "payload": bytes(range(256)) * 3, "media": _AUDIO},
        {**_COMMON, "stream_kind": "AUDIO", "participant_name": "Zoë Ünal 山田", "channel_id": "ch-1",
         "participant_id": -5, "ingest_seq": 1 << 40, "payload": b"", "media": {**_AUDIO, "mixed": False}},
    ],
    RAW_VIDEO.name: [
        {**_COMMON, "stream_kind": "VIDEO", "payload": b"\x00\x00\x00\x01\x65" * 600, "keyframe": True,
         "has_parameter_sets": True, "media": _VIDEO},
        {**_COMMON, "stream_kind": "DESKSHARE", "participant_name": "Ann", "payload": b"\x01",
         "keyframe": False, "has_parameter_sets": False, "media": _VIDEO},
    ],
}  # fmt: skip
# raw topic (base name) -> ordered topic (base name), the pairs whose layouts are spliced
PAIRS = {RAW_AUDIO.name: AUDIO.name, RAW_VIDEO.name: VIDEO.name}


def _zigzag(n: int) -> bytes:
    """Avro's encoding of a long."""
    if 0 <= n < _SMALL_LONGS:
        return _SMALL[n]
    return _zigzag_any(n)


def _zigzag_any(n: int) -> bytes:
    z = (n << 1) ^ (n >> 63)
    if z < 0x80:
        return bytes((z,))
    out = bytearray()
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


# the encodings of 0 .. 8191 (one or two bytes: payload lengths, most seqs), made once (~0.4 MB)
_SMALL_LONGS = 8192
_SMALL = [_zigzag_any(n) for n in range(_SMALL_LONGS)]


def _long_size(n: int) -> int:
    z = (n << 1) ^ (n >> 63)
    return (z.bit_length() + 6) // 7 or 1


def _string_size(s: str) -> int:
    n = len(s) if s.isascii() else len(s.encode())
    return _long_size(n) + n


class _Layout:
    """How to size the raw fields before the payload from their decoded values. The fields that
    are not plain longs (names, ids, the kind) repeat along a lane: their size is remembered per
    value tuple (bounded), so a frame costs the sizes of its few longs."""

    def __init__(self, fields: list[dict[str, Any]]) -> None:
        fixed: list[tuple[str, Any]] = []
        longs: list[str] = []
        for f in fields:
            t = f["type"]
            if isinstance(t, dict) and t.get("type") == "long":
                t = "long"  # timestamp-millis and friends: a long on the wire
            if t == "long":
                longs.append(f["name"])
            elif t == "string":
                fixed.append((f["name"], _string_size))
            elif t == ["null", "string"]:
                fixed.append((f["name"], _optional_string_size))
            elif isinstance(t, dict) and t.get("type") == "enum":
                index = {symbol: i for i, symbol in enumerate(t["symbols"])}
                fixed.append((f["name"], lambda v, index=index: _long_size(index[v])))
            else:
                raise ValueError(f"field {f['name']}: no splice sizing for {json.dumps(t)[:80]}")
        if not fixed or len(longs) < 2:
            raise ValueError("the splice sizing expects both kinds of fields")
        self.sizers = [size for _, size in fixed]
        self.fixed = operator.itemgetter(*(name for name, _ in fixed))
        self.longs = operator.itemgetter(*longs)
        self.known: dict[tuple[Any, ...], int] = {}

    def size(self, record: dict[str, Any]) -> int:
        values = self.fixed(record)
        total = self.known.get(values)
        if total is None:
            total = sum(size(v) for size, v in zip(self.sizers, values, strict=True))
            if len(self.known) >= _KNOWN_MEMORY:
                self.known.clear()
            self.known[values] = total
        for n in self.longs(record):
            z = (n << 1) ^ (n >> 63)
            total += (z.bit_length() + 6) // 7 or 1
        return total


def _optional_string_size(v: str | None) -> int:
    return 1 if v is None else 1 + _string_size(v)


class FrameSplicer:
    """Splices ordered frames out of raw ones for the topics whose schemas allow it (see above)."""

    def __init__(
        self, body_start: int, raw_headers: dict[str, bytes], ordered_headers: dict[str, bytes],
        layouts: dict[str, _Layout],
    ) -> None:  # fmt: skip
        self.body_start = body_start
        self.raw_headers = raw_headers
        self.ordered_headers = ordered_headers
        self.layouts = layouts

    @property
    def topics(self) -> frozenset[str]:
        """The ordered topics (base names) spliced."""
        return frozenset(self.layouts)

    @classmethod
    def for_codec(cls, codec: Codec) -> FrameSplicer:
        """A splicer for `codec` (prepared for the raw and ordered topics): `SAMPLES` are encoded
        both ways to check each pair's layout."""
        start = CONFLUENT_HEADER_LEN if codec.registry_url else SINGLE_OBJECT_HEADER_LEN
        prefix = codec.prefix
        splicer = cls(start, {}, {}, {})
        for raw, ordered in PAIRS.items():
            layout = _layout_of(codec, prefix + raw, prefix + ordered)
            if layout is None:
                continue
            for sample in SAMPLES[raw]:
                raw_value = codec.encode(prefix + raw, sample)
                frame = {
                    **codec.decode(prefix + raw, raw_value),
                    "seq": 300,
                    "offset_ms": 123_456,
                    "gap": None,
                }
                expected = codec.encode(prefix + ordered, frame)
                splicer.raw_headers[ordered] = raw_value[:start]
                splicer.ordered_headers[ordered] = expected[:start]
                splicer.layouts[ordered] = layout
                if splicer.splice(ordered, raw_value, frame) != expected:
                    del splicer.layouts[ordered]
                    break
        return splicer

    def splice(self, ordered_topic: str, raw_value: bytes, frame: dict[str, Any]) -> bytes | None:
        """The value of `frame` on `ordered_topic` (base name; the frame is its raw record's fields
        plus seq, offset_ms and a null gap) from its raw value, or None when it cannot be spliced
        (encode it instead)."""
        layout = self.layouts.get(ordered_topic)
        start = self.body_start
        if layout is None or not raw_value.startswith(self.raw_headers[ordered_topic]):
            return None
        split = start + layout.size(frame)
        payload = frame["payload"]
        length = _zigzag(len(payload))
        if not (raw_value.startswith(length, split) and raw_value.startswith(payload, split + len(length))):
            return None
        return b"".join(
            (
                self.ordered_headers[ordered_topic],
                raw_value[start:split],
                _zigzag(frame["seq"]),
                _zigzag(frame["offset_ms"]),
                b"\x00",
                raw_value[split:],
            )
        )


def _layout_of(codec: Codec, raw_topic: str, ordered_topic: str) -> _Layout | None:
    """The raw fields before the inserted ones, if the ordered schema is the raw one with
    `INSERTED` added after them (and a null-first gap union); else None."""
    raw = codec.schema_for(raw_topic).schema["fields"]
    ordered = codec.schema_for(ordered_topic).schema["fields"]
    names = [f["name"] for f in ordered]
    try:
        at = names.index(INSERTED[0])
    except ValueError:
        return None
    if names[at : at + 3] != list(INSERTED) or len(ordered) != len(raw) + 3:
        return None
    rest = ordered[:at] + ordered[at + 3 :]
    if [json.dumps(f["type"], sort_keys=True) for f in rest] != [
        json.dumps(f["type"], sort_keys=True) for f in raw
    ] or [f["name"] for f in rest] != [f["name"] for f in raw]:
        return None
    seq, offset, gap = ordered[at : at + 3]
    if (
        seq["type"] != "long"
        or offset["type"] != "long"
        or not (isinstance(gap["type"], list) and gap["type"][0] == "null")
    ):
        return None
    try:
        return _Layout(raw[:at])
    except ValueError:
        return None
