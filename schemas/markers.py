"""End-of-stream markers: how a stream's end travels in-band on every raw and ordered topic.

A marker is a Kafka record in the meeting's partition, keyed like the topic's data, whose **value is
null** and whose headers say what it is::

    rtmsflow.control    = b"end_of_stream"
    rtmsflow.stream_end = StreamEnd record (schemas/avro/stream_end.avsc), Avro single-object encoding

A null value is never mistaken for data: a standard Avro consumer (Confluent's deserializer, the
console consumer) hands out None for it, and the topic's value schema stays the data's alone. The
StreamEnd header says which stream ended, how (STOPPED or UNEXPECTED), and how many records of each
kind the writer put on the topic, so a consumer can tell a complete stream from a truncated one. A
marker is written once in effect per (stream, topic); readers treat a repeated one as a no-op.

The header is always single-object encoded (CRC-64-AVRO fingerprint of the writer schema), with or
without a schema registry: it needs no registry look-up to read, and older StreamEnd versions
resolve to the current one as topic values do.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping
from typing import Any, cast

from fastavro import schemaless_reader, schemaless_writer

from schemas.catalog import catalog, current_schema
from schemas.records import StreamEnd
from schemas.topics import CONTROL_HEADER, END_OF_STREAM, STREAM_END_HEADER

_SCHEMA = "stream_end"
_MAGIC = b"\xc3\x01"

Headers = Iterable[tuple[str, bytes]]


class MarkerError(ValueError):
    """A record claims to be a control record but its StreamEnd header cannot be read."""


def marker_headers(end: Mapping[str, Any]) -> list[tuple[str, bytes]]:
    """The headers of the marker record for `end` (a StreamEnd; fields with defaults may be left out)."""
    schema = current_schema(_SCHEMA)
    out = io.BytesIO()
    out.write(_MAGIC + schema.fingerprint)
    try:
        schemaless_writer(out, schema.parsed, dict(end), strict_allow_default=True)
    except Exception as exc:
        raise ValueError(f"not a valid StreamEnd record: {exc}") from exc
    return [(CONTROL_HEADER, END_OF_STREAM), (STREAM_END_HEADER, out.getvalue())]


def is_control(headers: Headers | None) -> bool:
    """True when a record's headers mark it as a control record (its value is then null)."""
    return bool(headers) and any(name == CONTROL_HEADER for name, _ in headers or ())


def read_marker(headers: Headers | None) -> StreamEnd | None:
    """The StreamEnd of a marker record, or None for a data record (no control header).

    Raises MarkerError when the control header is there but the StreamEnd is missing or unreadable."""
    if not headers:
        return None
    control = data = None
    for name, value in headers:
        if name == CONTROL_HEADER:
            control = value
        elif name == STREAM_END_HEADER:
            data = value
    if control is None:
        return None
    if control != END_OF_STREAM:
        raise MarkerError(f"unknown control record {control!r}")
    if data is None:
        raise MarkerError(f"end-of-stream marker without its {STREAM_END_HEADER} header")
    if len(data) < 11 or data[:2] != _MAGIC:
        raise MarkerError("StreamEnd header is not Avro single-object encoded")
    writer = catalog().by_fingerprint.get(bytes(data[2:10]))
    if writer is None or writer.name != _SCHEMA:
        raise MarkerError(f"StreamEnd header written with an unknown schema (fingerprint {data[2:10].hex()})")
    current = current_schema(_SCHEMA)
    body = io.BytesIO(data)
    body.seek(10)
    try:
        record = schemaless_reader(body, writer.parsed, None if writer is current else current.parsed)
    except Exception as exc:
        raise MarkerError(f"unreadable StreamEnd header: {type(exc).__name__}: {exc}") from exc
    return cast(StreamEnd, record)
