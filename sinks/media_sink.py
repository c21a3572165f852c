"""`rtmsflow sink media`: `rtms.audio` + `rtms.video` into each stream's WAVs and MP4s.

A `SinkCore` whose builder is `MediaStreamFiles`; a stream is finalized on its markers on both topics (or
the idle timeout). A video partition whose streams hold more than `Settings.sink_buffer_bytes` is paused."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from rtmsflow.settings import Settings
from schemas.codec import Codec
from schemas.topics import AUDIO, VIDEO
from sinks.layout import StreamLayout
from sinks.media_stream_files import MEDIA_MANIFEST, MediaStreamFiles
from sinks.storage import open_storage
from sinks.stream_sink import SinkCore, SinkService

DEFAULT_GROUP = "rtmsflow-sink-media"


def media_core(
    settings: Settings,
    data_dir: Path | str | None = None,
    *,
    rebuild_all: bool = False,
    accept: Callable[[str], bool] | None = None,
    idle_timeout_s: float | None = None,
    muxer_process: bool = False,
    spool: Path | None = None,
) -> SinkCore:
    """The media sink's core over the settings' topics, writing under `data_dir` (default: the
    settings' data dir; a directory or `s3://bucket/prefix`, spooled under `spool`). `rebuild_all`:
    write every stream even if its manifest exists (replay). `muxer_process`: each MP4's muxer (the
    AAC encoder) in a process of its own, on another core (replay: one meeting at full speed; the
    live sink keeps it inline)."""
    storage = open_storage(settings, data_dir, "media", spool)

    def factory(layout: StreamLayout) -> MediaStreamFiles:
        return MediaStreamFiles(layout, muxer_process=muxer_process, groups=storage.group)

    def is_finalized(layout: StreamLayout) -> bool:
        return storage.is_finalized(layout, MEDIA_MANIFEST)

    return SinkCore(
        "media",
        {t.name: t.full_name(settings.topic_prefix) for t in (AUDIO, VIDEO)},
        storage.root,
        Codec.from_settings(settings),
        factory,
        is_finalized=None if rebuild_all else is_finalized,
        idle_timeout_s=settings.sink_idle_timeout_s if idle_timeout_s is None else idle_timeout_s,
        accept=accept,
        storage=storage,
    )


def media_service(settings: Settings, group_id: str = DEFAULT_GROUP) -> SinkService:
    """The live media sink: its core in a consumer group."""
    return SinkService(
        settings, media_core(settings), group_id=group_id, buffer_bytes=settings.sink_buffer_bytes
    )
