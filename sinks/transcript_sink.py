"""`rtmsflow sink transcripts`: `rtms.transcript` into each stream's TXT, jsonl, VTT and SRT, `rtms.chat` into chat.txt/.jsonl.

A `SinkCore` whose builder is `TranscriptStreamFiles`: `transcript.txt` and `.jsonl` grow (under
their temporary names) as utterances arrive; the marker (or the idle timeout) finalizes the stream:
VTT and SRT are written from the jsonl, everything is published, `transcript.manifest.json` last.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from rtmsflow.settings import Settings
from schemas.codec import Codec
from schemas.topics import CHAT, TRANSCRIPT
from sinks.layout import StreamLayout
from sinks.storage import open_storage
from sinks.stream_sink import SinkCore, SinkService
from sinks.transcript_stream import TRANSCRIPT_MANIFEST, TranscriptStreamFiles

DEFAULT_GROUP = "rtmsflow-sink-transcripts"


def transcript_core(
    settings: Settings,
    data_dir: Path | str | None = None,
    *,
    rebuild_all: bool = False,
    accept: Callable[[str], bool] | None = None,
    idle_timeout_s: float | None = None,
    spool: Path | None = None,
) -> SinkCore:
    """The transcript sink's core (see `sinks.media_sink.media_core` for the arguments)."""
    storage = open_storage(settings, data_dir, "transcripts", spool)

    def factory(layout: StreamLayout) -> TranscriptStreamFiles:
        return TranscriptStreamFiles(
            layout, groups=storage.group, chat_in_transcript=settings.sink_chat_in_transcript
        )

    def is_finalized(layout: StreamLayout) -> bool:
        return storage.is_finalized(layout, TRANSCRIPT_MANIFEST)

    return SinkCore(
        "transcripts",
        {spec.name: spec.full_name(settings.topic_prefix) for spec in (TRANSCRIPT, CHAT)},
        storage.root,
        Codec.from_settings(settings),
        factory,
        is_finalized=None if rebuild_all else is_finalized,
        idle_timeout_s=settings.sink_idle_timeout_s if idle_timeout_s is None else idle_timeout_s,
        accept=accept,
        storage=storage,
    )


def transcript_service(settings: Settings, group_id: str = DEFAULT_GROUP) -> SinkService:
    """The live transcript sink: its core in a consumer group."""
    return SinkService(settings, transcript_core(settings), group_id=group_id)
