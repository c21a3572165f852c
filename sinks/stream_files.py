"""One stream's files, built from its ordered records: the builders' contract (live sinks and replay).

A builder is fed one stream's records and markers in topic order; `finalize(how)` publishes its files
with the manifest last (`sinks.atomic`). The builders: `sinks.media_stream_files.MediaStreamFiles`
and `sinks.transcript_stream.TranscriptStreamFiles`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any, Literal, Protocol

from schemas.records import StreamEnd as MarkerEnd
from sinks.atomic import FileGroup
from sinks.layout import StreamLayout
from sinks.manifest import StreamEnd, StreamTally, build_manifest, encode_manifest, file_entries

# Marker count kinds that are not records of the ordered topic: they go to late/duplicate counts.
_SIDE_COUNTS = ("LATE", "DUPLICATE")

EndHow = Literal["marker", "idle_timeout"]


def owns_media(name: str) -> bool:
    """File names the media sink writes in a stream directory (everything but the transcript sink's)."""
    return not owns_transcript(name)


def owns_transcript(name: str) -> bool:
    """File names the transcript sink writes (its chat files too)."""
    return name.startswith(("transcript.", "chat."))


@dataclass(frozen=True)
class Finalized:
    """What a finalize produced: the published paths (manifest last) and their total size."""

    meeting_uuid: str
    rtms_stream_id: str
    how: EndHow
    matched: bool | None
    paths: Sequence[PurePath]  # files on disk, or `bucket/key` of objects
    bytes_written: int


class StreamFiles(Protocol):
    """The builder contract the sink core drives (see the module docstring)."""

    layout: StreamLayout
    topics: tuple[str, ...]

    def begin(self) -> None: ...
    def add(self, topic: str, record: Mapping[str, Any]) -> None: ...
    def end_topic(self, topic: str, marker: MarkerEnd) -> None: ...
    @property
    def ready(self) -> bool: ...
    def finalize(self, how: EndHow) -> Finalized: ...
    def abort(self) -> None: ...
    def buffered_bytes(self) -> int: ...
    def take_rejected(self) -> list[tuple[str, Mapping[str, Any], Exception]]: ...
    @property
    def open_files(self) -> int: ...


def _merge_marker_counts(markers: Mapping[str, MarkerEnd], tally: StreamTally) -> dict[str, int]:
    """The markers' record counts (summed over topics); LATE/DUPLICATE go to the tally's counters."""
    counts: dict[str, int] = {}
    for topic in sorted(markers):
        for kind, count in markers[topic]["counts"].items():
            if kind == "LATE":
                tally.late(count)
            elif kind == "DUPLICATE":
                tally.duplicate(count)
            else:
                counts[kind] = counts.get(kind, 0) + count
    return counts


def stream_end(how: EndHow, markers: Mapping[str, MarkerEnd], tally: StreamTally) -> StreamEnd:
    """How a stream ended, for its manifest: by its markers (their counts checked against the
    tally's) or by the idle timeout. Shared by every builder."""
    if how == "marker" and markers:
        counts = _merge_marker_counts(markers, tally)
        reasons = [m["stop_reason"] for m in markers.values() if m.get("stop_reason") is not None]
        return StreamEnd.by_marker(counts, tally.frame_counts, reasons[0] if reasons else None)
    return StreamEnd.by_idle_timeout(tally.frame_counts)


def publish_stream(
    layout: StreamLayout,
    group: FileGroup,
    how: EndHow,
    end: StreamEnd,
    tally: StreamTally,
    span_ms: tuple[int, int],
    extra: Mapping[str, Any],
) -> Finalized:
    """Publish a stream's finished files with its manifest last; `extra` adds the builder's own
    manifest fields. Shared by every builder."""
    summary = tally.summary(end, start_ms=span_ms[0], stop_ms=span_ms[1])
    files = file_entries(group.partials())
    manifest = build_manifest(layout.meeting_uuid, [summary], tally.participants, files)
    manifest.update(extra)
    paths = group.publish(encode_manifest(manifest))
    return Finalized(
        layout.meeting_uuid, layout.rtms_stream_id, how, end.matched, paths, sum(f.size for f in files)
    )
