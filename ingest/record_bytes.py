"""The raw audio and video records' Avro bytes, joined from cached pieces instead of fastavro's encode.

`RecordEncoder` caches the encodings of a stream's repeating fields by value and joins them with the
per-record longs and payload. It takes a subset of what `Codec.encode` takes and returns None for
anything else, which the caller encodes with the codec: same bytes, same errors."""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from typing import Any

from schemas.codec import CONFLUENT_HEADER_LEN, SINGLE_OBJECT_HEADER_LEN, Codec

__all__ = ["SAMPLES", "Prepared", "RecordEncoder", "avro_long"]

_MISSING: Any = object()
_CACHED_VALUES = 4096  # per field cache (strings, long prefixes, nested records), cleared when full
_LOW_BITS = 14  # longs: the two low varint bytes from a table, the rest cached by value
_LOW_LIMIT = 1 << _LOW_BITS


_T = 1_765_000_000_000
_AUDIO = {"codec": "L16", "sample_rate": 16000, "channels": 1, "send_rate_ms": 20, "mixed": True}
_VIDEO = {"codec": "H264", "width": 1280, "height": 720, "fps": 25, "mode": "ACTIVE_SPEAKER"}
_COMMON = {"meeting_uuid": "m0TtQ/ab+cd==", "rtms_stream_id": "0f1e2d3c", "participant_id": 16778240,
           "participant_name": None, "timestamp_ms": _T + 20, "stream_started_ms": _T,
           "ingest_epoch": (1 << 62) + 3, "ingest_seq": 1, "received_at_ms": _T + 27}  # fmt: skip
# records `for_topic` encodes both ways, by raw topic base name (null and non-ASCII names, with every
# field and with an optional one left out, large and negative longs, empty and large payloads)
SAMPLES: dict[str, list[dict[str, Any]]] = {
    "rtms.raw.audio": [
        {**_COMMON, "stream_kind": "AUDIO", "channel_id": None, "payload": bytes(range(256)) * 3,
         "media": _AUDIO},
        {**_COMMON, "stream_kind": "AUDIO", "participant_name": "Zoë Ünal 山田", "channel_id": "ch-1",
         "participant_id": -5, "ingest_seq": 1 << 40, "payload": b"", "media": {**_AUDIO, "mixed": False}},
    ],
    "rtms.raw.video": [
        {**_COMMON, "stream_kind": "VIDEO", "channel_id": None, "payload": b"\x00\x00\x00\x01\x65" * 6000,
         "keyframe": True, "has_parameter_sets": True, "media": _VIDEO, "access_unit_parsed": True},
        {**_COMMON, "stream_kind": "DESKSHARE", "participant_name": "Ann", "payload": b"\x01",
         "keyframe": False, "has_parameter_sets": False, "media": {**_VIDEO, "mode": "UNKNOWN"},
         "access_unit_parsed": False},
    ],
}  # fmt: skip


class _Unusual(Exception):
    """A value outside the subset encoded here (the codec decides what it becomes)."""


def _varint(z: int) -> bytes:
    out = bytearray()
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


# varints of 0 .. 16383 (one or two bytes), and the two low bytes of every larger varint
_SMALL = [_varint(z) for z in range(_LOW_LIMIT)]
_LOW = [bytes(((z & 0x7F) | 0x80, (z >> 7) | 0x80)) for z in range(_LOW_LIMIT)]
_HIGH: dict[int, bytes] = {}  # z >> 14 -> its varint: the slowly changing part of timestamps


def avro_long(n: int) -> bytes:
    """Avro's zig-zag varint of a long (or an int) already known to be in range."""
    z = (n << 1) ^ (n >> 63)
    if z < _LOW_LIMIT:
        return _SMALL[z]
    high = z >> _LOW_BITS
    tail = _HIGH.get(high)
    if tail is None:
        if len(_HIGH) >= _CACHED_VALUES:
            _HIGH.clear()
        tail = _HIGH[high] = _varint(high)
    return _LOW[z & (_LOW_LIMIT - 1)] + tail


Writer = Callable[[Any], bytes]


def _ranged(bits: int) -> Writer:
    low, high = -(1 << (bits - 1)), 1 << (bits - 1)

    def write(v: Any) -> bytes:
        if v.__class__ is not int:
            if v.__class__ is bool or not isinstance(v, int):
                raise _Unusual
            v = int.__int__(v)  # an IntEnum (the granted AudioChannel): its value, as fastavro writes it
        if not low <= v < high:
            raise _Unusual
        return avro_long(v)

    write.bounds = (low, high)  # type: ignore[attr-defined]  # `_joiner` writes these inline
    return write


def _boolean(v: Any) -> bytes:
    if v is True:
        return b"\x01"
    if v is False:
        return b"\x00"
    raise _Unusual


def _string(prefix: bytes) -> Writer:
    cache: dict[str, bytes] = {}

    def write(v: Any) -> bytes:
        if v.__class__ is not str:
            raise _Unusual
        hit = cache.get(v)
        if hit is None:
            try:
                data = v.encode()
            except UnicodeEncodeError:  # a lone surrogate: the codec's error to give
                raise _Unusual from None
            if len(cache) >= _CACHED_VALUES:
                cache.clear()
            hit = cache[v] = prefix + avro_long(len(data)) + data
        return hit

    return write


def _optional_string() -> Writer:
    string = _string(b"\x02")  # union branch 1

    def write(v: Any) -> bytes:
        return b"\x00" if v is None else string(v)

    return write


def _enum(symbols: list[str]) -> Writer:
    index = {symbol: avro_long(i) for i, symbol in enumerate(symbols)}

    def write(v: Any) -> bytes:
        if v.__class__ is not str or v not in index:
            raise _Unusual
        return index[v]

    return write


def _record(fields: list[tuple[str, Writer, bytes | None]]) -> Writer:
    """A nested record (the `media` params), cached by its items and their exact types (16000.0
    equals 16000 as a key): a stream repeats one."""
    cache: dict[tuple[Any, ...], tuple[tuple[type, ...], bytes]] = {}

    def write(v: Any) -> bytes:
        if v.__class__ is not dict:
            raise _Unusual
        types = tuple(map(type, v.values()))
        try:
            key = tuple(v.items())
            hit = cache.get(key)
        except TypeError:  # an unhashable value
            raise _Unusual from None
        if hit is not None and hit[0] == types:
            return hit[1]
        parts: list[bytes] = []
        if _fields(fields, v, parts) != len(v):
            raise _Unusual  # a key the schema does not have
        data = b"".join(parts)
        if len(cache) >= _CACHED_VALUES:
            cache.clear()
        cache[key] = (types, data)
        return data

    return write


def _fields(
    fields: list[tuple[str, Writer, bytes | None]], record: Mapping[str, Any], out: list[bytes]
) -> int:
    """Append each field's bytes in schema order (a missing field: its default's); the number of
    fields that were present."""
    present = 0
    for name, write, default in fields:
        v = record.get(name, _MISSING)
        if v is _MISSING:
            if default is None:
                raise _Unusual  # required: the codec says which field
            out.append(default)
        else:
            present += 1
            out.append(write(v))
    return present


def _writer(t: Any) -> Writer:
    """The writer of an Avro type, or ValueError for a type not encoded here."""
    if isinstance(t, dict) and t.get("type") in ("long", "int") and "logicalType" in t:
        t = t["type"]  # timestamp-millis and friends: the long on the wire
    if t == "long":
        return _ranged(64)
    if t == "int":
        return _ranged(32)
    if t == "boolean":
        return _boolean
    if t == "string":
        return _string(b"")
    if t == ["null", "string"]:
        return _optional_string()
    if isinstance(t, dict) and t.get("type") == "enum":
        return _enum(list(t["symbols"]))
    if isinstance(t, dict) and t.get("type") == "record":
        return _record(_plan(t["fields"]))
    raise ValueError(f"no writer for Avro type {t!r}")


def _plan(fields: list[dict[str, Any]]) -> list[tuple[str, Writer, bytes | None]]:
    plan: list[tuple[str, Writer, bytes | None]] = []
    for f in fields:
        write = _writer(f["type"])
        default = None
        if "default" in f:
            try:
                default = write(f["default"])
            except _Unusual:
                raise ValueError(f"field {f['name']}: default {f['default']!r} not encoded here") from None
        plan.append((f["name"], write, default))
    return plan


# fields that differ from record to record: written each time; the others in runs cached by value
PER_RECORD = frozenset({"timestamp_ms", "ingest_seq", "received_at_ms"})


def _joiner(
    header: bytes,
    before: list[tuple[str, Writer, bytes | None]],
    after: list[tuple[str, Writer, bytes | None]],
    nested: set[str],
) -> Callable[[tuple[Any, ...]], bytes]:
    """How to write a complete record's values (schema order, the payload between `before` and
    `after`), as one function made for the schema (as `dataclasses` makes `__init__`): runs of
    fields that repeat along a stream, cached by their values and exact types; the per-record longs
    (checked and written inline), the payload and each nested record (cached by itself) on their
    own. It raises `_Unusual` for a value not encoded here."""
    plan = [*before, None, *after]  # None: the payload
    names: dict[str, Any] = {"_Unusual": _Unusual, "avro_long": avro_long, "_type": type, "_map": map}
    lines = ["def join(values):"]
    parts = ["header"]
    names["header"] = header
    i = 0
    while i < len(plan):
        field = plan[i]
        n = len(parts)
        if field is None:
            lines += [
                f"    p = values[{i}]",
                "    if p.__class__ is not bytes:",
                "        raise _Unusual",
            ]
            parts += ["avro_long(len(p))", "p"]
            i += 1
        elif field[0] in PER_RECORD or field[0] in nested:
            write = field[1]
            names[f"w{n}"] = write
            bounds = getattr(write, "bounds", None)
            if bounds is None:
                lines.append(f"    b{n} = w{n}(values[{i}])")
            else:  # a long: the usual int inline, anything else (an IntEnum, bad) by its writer
                lines += [
                    f"    v = values[{i}]",
                    f"    b{n} = avro_long(v) if v.__class__ is int and {bounds[0]} <= v < {bounds[1]} else w{n}(v)",
                ]
            parts.append(f"b{n}")
            i += 1
        else:
            j = i
            while (
                j < len(plan) and (f := plan[j]) is not None and f[0] not in PER_RECORD and f[0] not in nested
            ):
                j += 1
            names[f"c{n}"] = _run_cache(j - i, [f[1] for f in plan[i:j] if f is not None])
            lines.append(f"    b{n} = c{n}(values[{i}:{j}])")
            parts.append(f"b{n}")
            i = j
    lines.append(f"    return b''.join(({', '.join(parts)},))")
    exec("\n".join(lines), names)  # noqa: S102 - source made above from the schema's field positions
    join: Callable[[tuple[Any, ...]], bytes] = names["join"]
    return join


def _run_cache(length: int, writers: list[Writer]) -> Callable[[tuple[Any, ...]], bytes]:
    """The bytes of a run of fields, cached by their values and exact types (16000.0 equals 16000
    as a key)."""
    cache: dict[tuple[Any, ...], tuple[tuple[type, ...], bytes]] = {}

    def run(key: tuple[Any, ...]) -> bytes:
        types = tuple(map(type, key))
        try:
            hit = cache.get(key)
        except TypeError:  # an unhashable value
            raise _Unusual from None
        if hit is not None and hit[0] == types:
            return hit[1]
        data = b"".join([write(v) for write, v in zip(writers, key, strict=True)])
        if len(cache) >= _CACHED_VALUES:
            cache.clear()
        cache[key] = (types, data)
        return data

    return run


_LONG_MIN, _LONG_MAX = -(1 << 63), 1 << 63
_SLOTS = ("timestamp_ms", "ingest_seq", "received_at_ms")  # the per-record longs, in schema order


class Prepared:
    """The bytes of one record's fields other than its per-record longs and payload, ready to be
    joined with them: the records of a stream that share those fields (`RecordEncoder.prepare`)."""

    __slots__ = ("segments",)

    def __init__(self, segments: list[bytes]) -> None:
        self.segments = segments  # before the timestamp, the seq, received_at, the payload; after it

    def encode(self, timestamp_ms: int, ingest_seq: int, received_at_ms: int, payload: bytes) -> bytes | None:
        """The record's value with these in their places, or None for a timestamp that is not a long
        (the codec says what it is). `ingest_seq` and `received_at_ms` are the producer's own."""
        if timestamp_ms.__class__ is not int or not _LONG_MIN <= timestamp_ms < _LONG_MAX:
            return None
        s = self.segments
        return b"".join((s[0], avro_long(timestamp_ms), s[1], avro_long(ingest_seq), s[2],
                         avro_long(received_at_ms), s[3], avro_long(len(payload)), payload, s[4]))  # fmt: skip


class RecordEncoder:
    """Encodes the records of one raw frame topic (payload as `bytes`) by joining cached pieces."""

    def __init__(self, header: bytes, fields: list[dict[str, Any]]) -> None:
        payload = [i for i, f in enumerate(fields) if f["type"] == "bytes"]
        if len(payload) != 1:
            raise ValueError("expects exactly one bytes field (the payload)")
        at = payload[0]
        self.header = header
        self.payload_name = fields[at]["name"]
        self.before = _plan(fields[:at])
        self.after = _plan(fields[at + 1 :])
        self.field_count = len(fields)
        # a record with every field (the producer's): values in schema order, written in steps
        self.values = operator.itemgetter(*(f["name"] for f in fields))
        nested = {
            f["name"] for f in fields if isinstance(f["type"], dict) and f["type"].get("type") == "record"
        }
        self.join = _joiner(header, self.before, self.after, nested)

    @classmethod
    def for_topic(cls, codec: Codec, topic: str, samples: list[dict[str, Any]]) -> RecordEncoder | None:
        """The encoder of `topic` (a broker name, prepared in `codec`), or None when its schema has
        a type not encoded here or a sample's bytes differ from `codec.encode`'s."""
        start = CONFLUENT_HEADER_LEN if codec.registry_url else SINGLE_OBJECT_HEADER_LEN
        try:
            expected = [codec.encode(topic, sample) for sample in samples]
            encoder = cls(expected[0][:start], codec.schema_for(topic).schema["fields"])
        except (ValueError, IndexError):
            return None
        if any(encoder.encode(s) != e for s, e in zip(samples, expected, strict=True)):
            return None
        return encoder

    def prepare(self, record: Mapping[str, Any]) -> Prepared | None:
        """The record's fields but its per-record longs and payload, written once for the records
        that share them; None for a record not in the subset encoded here, or a schema whose
        per-record longs are not all before the payload in this order."""
        if len(record) != self.field_count:
            return None
        try:
            values = self.values(record)
        except KeyError:
            return None
        if record[self.payload_name].__class__ is not bytes:
            return None
        segments: list[bytes] = []
        current = [self.header]
        slots: list[str] = []
        try:
            for field, v in zip([*self.before, None, *self.after], values, strict=True):
                if field is None or field[0] in PER_RECORD:
                    slots.append(self.payload_name if field is None else field[0])
                    segments.append(b"".join(current))
                    current = []
                    if field is not None:
                        if getattr(field[1], "bounds", None) != (_LONG_MIN, _LONG_MAX):
                            return None  # not a long: `Prepared.encode` writes longs
                        field[1](v)  # a long it can write
                else:
                    current.append(field[1](v))
        except _Unusual:
            return None
        segments.append(b"".join(current))
        if tuple(slots) != (*_SLOTS, self.payload_name):
            return None
        return Prepared(segments)

    def encode(self, record: Mapping[str, Any]) -> bytes | None:
        """The record's value bytes, or None when it is not in the subset encoded here (then
        `Codec.encode` gives the bytes or the `EncodeError`)."""
        if len(record) == self.field_count:
            try:
                values = self.values(record)
            except KeyError:
                pass
            else:
                try:
                    return self.join(values)
                except _Unusual:
                    return None
        payload = record.get(self.payload_name)
        if payload.__class__ is not bytes:
            return None
        parts = [self.header]
        try:
            present = _fields(self.before, record, parts)
            parts.append(avro_long(len(payload)))
            parts.append(payload)
            present += _fields(self.after, record, parts)
        except _Unusual:
            return None
        if present + 1 != len(record):
            return None  # a key the schema does not have
        return b"".join(parts)
