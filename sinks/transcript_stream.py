"""`TranscriptStreamFiles`: one stream's transcript and chat files, from its `rtms.transcript` and `rtms.chat`.

The transcript sink's builder under the contract of `sinks.stream_files` (the media sink's builder
and the shared end-of-stream logic live there); the file formats are `sinks.transcript_files`'.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import Any

from schemas.records import StreamEnd as MarkerEnd
from schemas.topics import CHAT, TRANSCRIPT
from sinks.atomic import FileGroup
from sinks.chat_files import CHAT_JSONL_NAME, CHAT_TXT_NAME, ChatLine, ChatWriter, write_interleaved
from sinks.layout import StreamLayout
from sinks.manifest import StreamTally
from sinks.stream_files import EndHow, Finalized, owns_transcript, publish_stream, stream_end
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
    """`transcript.txt` and `.jsonl`, `chat.txt` and `.jsonl` (live), `.vtt` and `.srt` (at finalize),
    `transcript.manifest.json`; with `chat_in_transcript`, `transcript.txt` is rewritten at finalize with
    the chat interleaved."""

    topics: tuple[str, ...] = (TRANSCRIPT.name, CHAT.name)
    manifest_name = TRANSCRIPT_MANIFEST

    def __init__(
        self,
        layout: StreamLayout,
        groups: Callable[..., FileGroup] = FileGroup,
        chat_in_transcript: bool = False,
    ) -> None:
        self.layout = layout
        self.chat_in_transcript = chat_in_transcript
        self._chat: ChatWriter | None = None
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
        self._chat = ChatWriter(self.group.partial(CHAT_TXT_NAME), self.group.partial(CHAT_JSONL_NAME))

    def add(self, topic: str, record: Mapping[str, Any]) -> None:
        """One `rtms.transcript` utterance: appended to the TXT (when final) and the jsonl at once."""
        if topic in self.markers:
            self.after_end += 1
            return
        if self._writer is None or self._chat is None:
            raise RuntimeError("begin() the stream before feeding it")
        if topic == CHAT.name:
            line = ChatLine.from_record(record)
            self.tally.observe("CHAT", line.timestamp_ms, 0)
            if line.sender_id:
                self.tally.participant(line.sender_id, line.sender_name)
            self._chat.add(line)
            return
        utterance = Utterance.from_record(record)
        self.tally.observe("TRANSCRIPT", utterance.start_ms, utterance.end_ms - utterance.start_ms)
        if utterance.participant_id:
            self.tally.participant(utterance.participant_id, utterance.participant_name)
        self._writer.add(utterance)

    def end_topic(self, topic: str, marker: MarkerEnd) -> None:
        self.markers.setdefault(topic, marker)

    @property
    def ready(self) -> bool:
        return all(topic in self.markers for topic in self.topics)

    def buffered_bytes(self) -> int:
        return 0

    def take_rejected(self) -> list[tuple[str, Mapping[str, Any], Exception]]:
        return []

    @property
    def open_files(self) -> int:
        return 4 if self._writer is not None else 0

    def finalize(self, how: EndHow) -> Finalized:
        """Close the live files, write VTT and SRT from the jsonl, publish, manifest last."""
        if self._writer is None or self._chat is None:
            raise RuntimeError("begin() the stream before finalizing it")
        self._writer.close()
        self._chat.close()
        if self.chat_in_transcript:
            write_interleaved(
                self.group.partial(JSONL_NAME),
                self.group.partial(CHAT_JSONL_NAME),
                self.group.partial(TXT_NAME),
            )
        cues = write_captions(
            self.group.partial(JSONL_NAME),
            self.group.partial(VTT_NAME),
            self.group.partial(SRT_NAME),
            self.origin_ms,
        )
        end = stream_end(how, self.markers, self.tally)
        stop = max(self.tally.stop_ms or self.origin_ms, self.origin_ms)
        extra = {"cues": cues, "chat_messages": self._chat.messages, "records_after_end": self.after_end}
        return publish_stream(self.layout, self.group, how, end, self.tally, (self.origin_ms, stop), extra)

    def abort(self) -> None:
        for writer in (self._writer, self._chat):
            if writer is not None:
                with contextlib.suppress(OSError):  # a full disk fails the close's flush: dropped anyway
                    writer.close()
        self._writer = self._chat = None
        self.group.abort()
