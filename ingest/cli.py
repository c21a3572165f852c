"""`rtmsflow ingest http|worker`: the webhook endpoint and the session workers."""

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


@click.group()
def ingest() -> None:
    """Zoom webhooks in, RTMS streams held, every frame produced to the raw topics."""


@ingest.command()
@click.option("--host", default=None, help="Bind address (default: RTMSFLOW_HTTP_HOST).")
@click.option("--port", type=int, default=None, help="Port (default: RTMSFLOW_HTTP_PORT; 0 = any free port).")
@click.option(
    "--path", default="/webhook", envvar="RTMSFLOW_WEBHOOK_PATH", show_default=True, help="Webhook path."
)
def http(host: str | None, port: int | None, path: str) -> None:
    """Receive Zoom's webhooks: verify, answer url_validation, put lifecycle events on rtms.sessions."""
    from ingest.webhook import serve_http

    settings = Settings.from_env()
    if host is not None:
        settings = dataclasses.replace(settings, http_host=host)
    if port is not None:
        settings = dataclasses.replace(settings, http_port=port)
    log.info("ingest http starting", extra={"settings": settings.describe(), "path": path})
    _run(serve_http(settings, path))


@ingest.command()
@click.option("--group", default="rtmsflow-ingest", envvar="RTMSFLOW_INGEST_GROUP", show_default=True,
              help="Consumer group of the workers.")  # fmt: skip
@click.option("--session-timeout-ms", type=int, default=8000, envvar="RTMSFLOW_INGEST_SESSION_TIMEOUT_MS",
              show_default=True, help="Group session timeout: how soon a dead worker's meetings move.")  # fmt: skip
@click.option("--backoff-base-s", type=float, default=3.0, envvar="RTMSFLOW_RTMS_BACKOFF_BASE_S", show_default=True,
              help="First RTMS reconnect delay (doubles per attempt, capped at 30 s).")  # fmt: skip
@click.option("--audio-multi/--audio-mixed", default=False, envvar="RTMSFLOW_RTMS_AUDIO_MULTI",
              help="Per-participant audio streams instead of the mixed stream.")  # fmt: skip
@click.option("--video/--no-video", default=True, envvar="RTMSFLOW_RTMS_VIDEO", help="Receive video.")
@click.option("--video-resolution", type=click.Choice(["sd", "hd", "fhd", "qhd"]), default="hd",
              envvar="RTMSFLOW_RTMS_VIDEO_RESOLUTION", show_default=True, help="Requested video resolution.")  # fmt: skip
@click.option("--video-fps", type=click.IntRange(1, 30), default=25, envvar="RTMSFLOW_RTMS_VIDEO_FPS",
              show_default=True, help="Requested video frame rate (H.264).")  # fmt: skip
@click.option(
    "--deskshare/--no-deskshare",
    default=False,
    envvar="RTMSFLOW_RTMS_DESKSHARE",
    help="Receive screen share.",
)
@click.option(
    "--transcript/--no-transcript",
    default=True,
    envvar="RTMSFLOW_RTMS_TRANSCRIPT",
    help="Receive transcripts.",
)
@click.option(
    "--metrics-port",
    type=int,
    default=None,
    help="Port of /health and /metrics (default RTMSFLOW_METRICS_PORT).",
)
def worker(
    group: str,
    session_timeout_ms: int,
    backoff_base_s: float,
    audio_multi: bool,
    video: bool,
    video_resolution: str,
    video_fps: int,
    deskshare: bool,
    transcript: bool,
    metrics_port: int | None,
) -> None:
    """Hold the live RTMS streams of the rtms.sessions partitions this worker owns."""
    from ingest.backend import FrameHandler, SessionBackend, load_backend
    from ingest.worker import SessionWorker, run_worker
    from ingest.ws_client import client_config

    settings = Settings.from_env()
    config = client_config(
        settings,
        backoff_base_s=backoff_base_s,
        audio_multi=audio_multi,
        video=video,
        video_resolution={"sd": 1, "hd": 2, "fhd": 3, "qhd": 4}[video_resolution],
        video_fps=video_fps,
        deskshare=deskshare,
        transcript=transcript,
    )

    factory = load_backend(settings.ingest_backend)

    def backend(s: Settings, frames: FrameHandler) -> SessionBackend:
        return factory(s, frames, config=config)  # the same media choices, whichever backend

    log.info("ingest worker starting", extra={"settings": settings.describe(), "group": group})
    node = SessionWorker(
        settings, group_id=group, backend_factory=backend, session_timeout_ms=session_timeout_ms
    )
    port = settings.metrics_port if metrics_port is None else metrics_port
    _run(_worker_then_sdk_hosts(settings, run_worker(settings, node, port)))


async def _worker_then_sdk_hosts(settings: Settings, worker: Coroutine[Any, Any, None]) -> None:
    """Run the worker; afterwards stop the SDK host process it may have started (sdk backend)."""
    try:
        await worker
    finally:
        if settings.ingest_backend == "sdk":
            from ingest.sdk_backend import shutdown_sdk_hosts

            await shutdown_sdk_hosts()
