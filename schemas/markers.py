"""Control records: end-of-stream markers (raw and ordered topics) and progress marks (raw topics).

A control record has a null value, is keyed like the topic's data, and says what it is in headers
(`rtmsflow.control`, plus a StreamEnd or StreamProgress record, always single-object encoded).
Semantics: docs/DESIGN.md, "In-band control records"; docs/CONTRACT.md."""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping
from typing import Any, cast

from fastavro import schemaless_reader, schemaless_writer

from schemas.catalog import catalog, current_schema
from schemas.records import StreamEnd, StreamProgress
from schemas.topics import (
    CONTROL_HEADER,
    END_OF_STREAM,
    PROGRESS,
    STREAM_END_HEADER,
    STREAM_PROGRESS_HEADER,
)

_SCHEMA = "stream_end"
_PROGRESS_SCHEMA = "stream_progress"
_MAGIC = b"\xc3\x01"

Headers = Iterable[tuple[str, bytes]]


class MarkerError(ValueError):
    """A record claims to be a control record but its StreamEnd header cannot be read."""


def marker_headers(end: Mapping[str, Any]) -> list[tuple[str, bytes]]:
    """The headers of the marker record for `end` (a StreamEnd; fields with defaults may be left out)."""
    return [(CONTROL_HEADER, END_OF_STREAM), (STREAM_END_HEADER, _single_object(_SCHEMA, end))]


def progress_headers(progress: Mapping[str, Any]) -> list[tuple[str, bytes]]:
    """The headers of a progress mark for `progress` (a StreamProgress)."""
    return [(CONTROL_HEADER, PROGRESS), (STREAM_PROGRESS_HEADER, _single_object(_PROGRESS_SCHEMA, progress))]


def _single_object(name: str, record: Mapping[str, Any]) -> bytes:
    schema = current_schema(name)
    out = io.BytesIO()
    out.write(_MAGIC + schema.fingerprint)
    try:
        schemaless_writer(out, schema.parsed, dict(record), strict_allow_default=True)
    except Exception as exc:
        raise ValueError(f"not a valid {schema.parsed['name']} record: {exc}") from exc
    return out.getvalue()


def is_control(headers: Headers | None) -> bool:
    """True when a record's headers mark it as a control record (its value is then null)."""
    return bool(headers) and any(name == CONTROL_HEADER for name, _ in headers or ())


def read_marker(headers: Headers | None) -> StreamEnd | None:
    """The StreamEnd of a marker record, or None for a data record (no control header) and for a
    progress mark.

    Raises MarkerError when the control header is there but the StreamEnd is missing or unreadable."""
    control = read_control(headers)
    return cast(StreamEnd, control) if control is not None and "ended" in control else None


def read_control(headers: Headers | None) -> StreamEnd | StreamProgress | None:
    """The StreamEnd of a marker or the StreamProgress of a progress mark; None for a data record.

    Raises MarkerError when the control header is there but its record is missing or unreadable."""
    if not headers:
        return None
    control = end = progress = None
    for name, value in headers:
        if name == CONTROL_HEADER:
            control = value
        elif name == STREAM_END_HEADER:
            end = value
        elif name == STREAM_PROGRESS_HEADER:
            progress = value
    if control is None:
        return None
    if control == END_OF_STREAM:
        return cast(StreamEnd, _read(_SCHEMA, STREAM_END_HEADER, end))
    if control == PROGRESS:
        return cast(StreamProgress, _read(_PROGRESS_SCHEMA, STREAM_PROGRESS_HEADER, progress))
    raise MarkerError(f"unknown control record {control!r}")


def _read(name: str, header: str, data: bytes | None) -> dict[str, Any]:
    label = current_schema(name).parsed["name"]
    if data is None:
        raise MarkerError(f"control record without its {header} header")
    if len(data) < 11 or data[:2] != _MAGIC:
        raise MarkerError(f"{label} header is not Avro single-object encoded")
    writer = catalog().by_fingerprint.get(bytes(data[2:10]))
    if writer is None or writer.name != name:
        raise MarkerError(f"{label} header written with an unknown schema (fingerprint {data[2:10].hex()})")
    current = current_schema(name)
    body = io.BytesIO(data)
    body.seek(10)
    try:
        record = schemaless_reader(body, writer.parsed, None if writer is current else current.parsed)
    except Exception as exc:
        raise MarkerError(f"unreadable {label} header: {type(exc).__name__}: {exc}") from exc
    return cast(dict[str, Any], record)
