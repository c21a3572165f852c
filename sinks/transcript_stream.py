"""`TranscriptStreamFiles`: one stream's transcript files, built from its `rtms.transcript` records.

The transcript sink's builder under the contract of `sinks.stream_files` (the media sink's builder
and the shared end-of-stream logic live there); the file formats are `sinks.transcript_files`'.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import Any

from schemas.records import StreamEnd as MarkerEnd
from schemas.topics import TRANSCRIPT
from sinks.atomic import FileGroup
from sinks.layout import StreamLayout
from sinks.manifest import StreamTally, build_manifest, encode_manifest, file_entries
from sinks.stream_files import EndHow, Finalized, owns_transcript, stream_end
from sinks.transcript_files import (
    JSONL_NAME,
    SRT_NAME,
    TXT_NAME,
    VTT_NAME,
    TranscriptWriter,
    Utterance,
    write_captions,
)

TRANSCRIPT_MANIFEST = "transcript.manifest.json"


class TranscriptStreamFiles:
    """`transcript.txt` and `.jsonl` (live), `.vtt` and `.srt` (at finalize), `transcript.manifest.json`."""

    topics: tuple[str, ...] = (TRANSCRIPT.name,)
    manifest_name = TRANSCRIPT_MANIFEST

    def __init__(self, layout: StreamLayout, groups: Callable[..., FileGroup] = FileGroup) -> None:
        self.layout = layout
        self.origin_ms = layout.start_ms
        self.group = groups(layout.stream_dir, TRANSCRIPT_MANIFEST, owns_transcript)  # disk or bucket
        self.tally = StreamTally(layout.rtms_stream_id)
        self.markers: dict[str, MarkerEnd] = {}
        self.after_end = 0
        self._writer: TranscriptWriter | None = None

    @classmethod
    def is_finalized(cls, layout: StreamLayout) -> bool:
        """True when the stream's transcript manifest exists."""
        return (layout.stream_dir / TRANSCRIPT_MANIFEST).is_file()

    def begin(self) -> None:
        self.group.begin()
        self._writer = TranscriptWriter(self.group.partial(TXT_NAME), self.group.partial(JSONL_NAME))

    def add(self, topic: str, record: Mapping[str, Any]) -> None:
        """One `rtms.transcript` utterance: appended to the TXT (when final) and the jsonl at once."""
        if topic in self.markers:
            self.after_end += 1
            return
        if self._writer is None:
            raise RuntimeError("begin() the stream before feeding it")
        utterance = Utterance.from_record(record)
        self.tally.observe("TRANSCRIPT", utterance.start_ms, utterance.end_ms - utterance.start_ms)
        if utterance.participant_id:
            self.tally.participant(utterance.participant_id, utterance.participant_name)
        self._writer.add(utterance)

    def end_topic(self, topic: str, marker: MarkerEnd) -> None:
        self.markers.setdefault(topic, marker)

    @property
    def ready(self) -> bool:
        return TRANSCRIPT.name in self.markers

    def buffered_bytes(self) -> int:
        return 0

    def take_rejected(self) -> list[tuple[str, Mapping[str, Any], Exception]]:
        return []

    @property
    def open_files(self) -> int:
        return 2 if self._writer is not None else 0

    def finalize(self, how: EndHow) -> Finalized:
        """Close the live files, write VTT and SRT from the jsonl, publish, manifest last."""
        if self._writer is None:
            raise RuntimeError("begin() the stream before finalizing it")
        self._writer.close()
        cues = write_captions(
            self.group.partial(JSONL_NAME),
            self.group.partial(VTT_NAME),
            self.group.partial(SRT_NAME),
            self.origin_ms,
        )
        end = stream_end(how, self.markers, self.tally)
        stop = max(self.tally.stop_ms or self.origin_ms, self.origin_ms)
        summary = self.tally.summary(end, start_ms=self.origin_ms, stop_ms=stop)
        files = file_entries(self.group.partials())
        manifest = build_manifest(self.layout.meeting_uuid, [summary], self.tally.participants, files)
        manifest["cues"] = cues
        manifest["records_after_end"] = self.after_end
        paths = self.group.publish(encode_manifest(manifest))
        return Finalized(
            self.layout.meeting_uuid,
            self.layout.rtms_stream_id,
            how,
            end.matched,
            paths,
            sum(f.size for f in files),
        )

    def abort(self) -> None:
        if self._writer is not None:
            writer, self._writer = self._writer, None
            with contextlib.suppress(OSError):  # a full disk fails the close's flush: dropped anyway
                writer.close()
        self.group.abort()
