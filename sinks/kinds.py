"""The two live sinks, media and transcripts: what each reads and writes, and how its core and its
consumer-group service are built (`rtmsflow sink media|transcripts`, replay)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rtmsflow.settings import Settings
from schemas.codec import Codec
from schemas.topics import AUDIO, CHAT, TRANSCRIPT, VIDEO, TopicSpec
from sinks.atomic import FileGroup
from sinks.layout import StreamLayout
from sinks.media_stream_files import MEDIA_MANIFEST, MediaStreamFiles
from sinks.storage import open_storage
from sinks.stream_files import StreamFiles
from sinks.stream_sink import SinkCore, SinkService
from sinks.transcript_stream import TRANSCRIPT_MANIFEST, TranscriptStreamFiles

# a stream's builder from its layout, the storage's file groups, the settings and `muxer_process`
# (media only)
FilesFactory = Callable[[StreamLayout, Callable[..., FileGroup], Settings, bool], StreamFiles]


@dataclass(frozen=True)
class SinkKind:
    """What one sink is: its name (metrics label, spool, CLI command), the topics it reads, the
    manifest that says a stream is done, its stream builder, and how full a fetch should be: the
    broker holds a fetch up to `fetch_max_wait_ms` until it has `fetch_min_bytes`."""

    name: str
    topics: tuple[TopicSpec, ...]
    manifest: str
    files: FilesFactory
    fetch_min_bytes: int = 1
    fetch_max_wait_ms: int = 500

    def core(
        self,
        settings: Settings,
        data_dir: Path | str | None = None,
        *,
        rebuild_all: bool = False,
        accept: Callable[[str], bool] | None = None,
        idle_timeout_s: float | None = None,
        muxer_process: bool = False,
        spool: Path | None = None,
    ) -> SinkCore:
        """The sink's core over the settings' topics, writing under `data_dir` (default: the
        settings' data dir; a directory or `s3://bucket/prefix`, spooled under `spool`).
        `rebuild_all`: write every stream even if its manifest exists (replay). `muxer_process`:
        each MP4's muxer (the AAC encoder) in a process of its own, on another core (replay: one
        meeting at full speed; the live sink keeps it inline)."""
        storage = open_storage(settings, data_dir, self.name, spool)

        def factory(layout: StreamLayout) -> StreamFiles:
            return self.files(layout, storage.group, settings, muxer_process)

        def is_finalized(layout: StreamLayout) -> bool:
            return storage.is_finalized(layout, self.manifest)

        return SinkCore(
            self.name,
            {t.name: t.full_name(settings.topic_prefix) for t in self.topics},
            storage.root,
            Codec(settings.schema_registry_url, settings.topic_prefix),
            factory,
            is_finalized=None if rebuild_all else is_finalized,
            idle_timeout_s=settings.sink_idle_timeout_s if idle_timeout_s is None else idle_timeout_s,
            accept=accept,
            storage=storage,
        )

    def service(self, settings: Settings, group_id: str) -> SinkService:
        """The live sink: its core in consumer group `group_id`."""
        return SinkService(
            settings,
            self.core(settings),
            group_id=group_id,
            buffer_bytes=settings.sink_buffer_bytes,
            fetch_min_bytes=self.fetch_min_bytes,
            fetch_max_wait_ms=self.fetch_max_wait_ms,
        )


def _media_files(
    layout: StreamLayout, groups: Callable[..., FileGroup], settings: Settings, muxer_process: bool
) -> StreamFiles:
    return MediaStreamFiles(layout, muxer_process=muxer_process, groups=groups)


def _transcript_files(
    layout: StreamLayout, groups: Callable[..., FileGroup], settings: Settings, muxer_process: bool
) -> StreamFiles:
    return TranscriptStreamFiles(layout, groups=groups, chat_in_transcript=settings.sink_chat_in_transcript)


# a stream is finalized on its markers on every topic (or the idle timeout); a video partition whose
# streams hold more than `Settings.sink_buffer_bytes` is paused. Its fetches wait to carry ~1 MiB
# (or 100 ms): at live rates a fetch answered with the first record is most of the sink's Kafka CPU
MEDIA_SINK = SinkKind(
    "media", (AUDIO, VIDEO), MEDIA_MANIFEST, _media_files, fetch_min_bytes=1 << 20, fetch_max_wait_ms=100
)
# `transcript.txt` and `.jsonl` grow (under their temporary names) as utterances arrive, `chat.txt`
# and `.jsonl` as chat messages do; at the end VTT and SRT are written from the jsonl (and the chat
# interleaved into `transcript.txt` if asked), everything is published, `transcript.manifest.json` last
TRANSCRIPT_SINK = SinkKind("transcripts", (TRANSCRIPT, CHAT), TRANSCRIPT_MANIFEST, _transcript_files)
SINKS = {kind.name: kind for kind in (MEDIA_SINK, TRANSCRIPT_SINK)}
