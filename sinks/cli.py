"""`rtmsflow sink media|transcripts`, `rtmsflow replay`, `rtmsflow prune`, `rtmsflow forget`."""

from __future__ import annotations

import asyncio
import dataclasses
import signal
from collections.abc import Coroutine
from typing import Any

import click

from rtmsflow.logs import get_logger
from rtmsflow.settings import Settings

log = get_logger(__name__)


def _run(main: Coroutine[Any, Any, None]) -> None:
    """Run until SIGINT/SIGTERM, then let the coroutine's `finally` shut down in order."""

    async def runner() -> None:
        task = asyncio.ensure_future(main)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        try:
            await task
        except asyncio.CancelledError:
            pass

    asyncio.run(runner())


def _sink_settings(idle_timeout_s: float | None) -> Settings:
    settings = Settings.from_env()
    if idle_timeout_s is not None:
        settings = dataclasses.replace(settings, sink_idle_timeout_s=idle_timeout_s)
    return settings


_group_option = click.option("--group", default=None, help="Consumer group (default: rtmsflow-sink-<kind>).")
_port_option = click.option(
    "--metrics-port",
    type=int,
    default=None,
    help="Port of /health and /metrics (default RTMSFLOW_METRICS_PORT).",
)
_idle_option = click.option(
    "--idle-timeout-s",
    type=float,
    default=None,
    help="Finalize a stream without a marker after this long idle (default RTMSFLOW_SINK_IDLE_TIMEOUT_S).",
)


@click.group()
def sink() -> None:
    """Write the ordered topics into files: recordings and transcripts."""


@sink.command()
@_group_option
@_port_option
@_idle_option
def media(group: str | None, metrics_port: int | None, idle_timeout_s: float | None) -> None:
    """rtms.audio + rtms.video -> audio.wav, audio-<participant>.wav, recording.mp4, deskshare.mp4."""
    from sinks.media_sink import DEFAULT_GROUP, media_service
    from sinks.stream_sink import run_service

    settings = _sink_settings(idle_timeout_s)
    service = media_service(settings, group or DEFAULT_GROUP)
    log.info("media sink starting", extra={"settings": settings.describe(), "group": service.group_id})
    _run(run_service(settings, service, settings.metrics_port if metrics_port is None else metrics_port))


@sink.command()
@_group_option
@_port_option
@_idle_option
def transcripts(group: str | None, metrics_port: int | None, idle_timeout_s: float | None) -> None:
    """rtms.transcript -> transcript.txt (live), .jsonl, .vtt, .srt."""
    from sinks.stream_sink import run_service
    from sinks.transcript_sink import DEFAULT_GROUP, transcript_service

    settings = _sink_settings(idle_timeout_s)
    service = transcript_service(settings, group or DEFAULT_GROUP)
    log.info("transcript sink starting", extra={"settings": settings.describe(), "group": service.group_id})
    _run(run_service(settings, service, settings.metrics_port if metrics_port is None else metrics_port))
