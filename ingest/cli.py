"""`rtmsflow ingest http|worker`: the webhook endpoint and the session workers."""

from __future__ import annotations

import gc
from collections.abc import Coroutine
from typing import Any

import click

from rtmsflow.cli import announce_start, env_help, load_settings, metrics_port_option, session_timeout_option
from rtmsflow.logs import get_logger
from rtmsflow.settings import INGEST_BACKENDS, VIDEO_MODES, VIDEO_RESOLUTIONS, Settings

log = get_logger(__name__)


@click.group()
def ingest() -> None:
    """Zoom webhooks in, RTMS streams held, every frame produced to the raw topics."""


@ingest.command()
@click.option("--host", default=None, help=env_help("Bind address.", "http_host"))
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=None,
    help=env_help("Port of /webhook, /health and /metrics (0 = any free port).", "http_port"),
)
@click.option("--path", default=None, help=env_help("Webhook path.", "webhook_path"))
def http(host: str | None, port: int | None, path: str | None) -> None:
    """Receive Zoom's webhooks: verify, answer url_validation, put lifecycle events on rtms.sessions."""
    from ingest.webhook import serve_http
    from rtmsflow.service import run_until_signal

    if path is not None and not path.startswith("/"):
        raise click.BadParameter("must start with '/'", param_hint="--path")
    settings = load_settings(http_host=host, http_port=port, webhook_path=path)
    log.info("ingest http starting", extra={"settings": settings.describe(), "path": settings.webhook_path})
    run_until_signal(serve_http(settings, settings.webhook_path))


@ingest.command()
@click.option("--group", default=None, help=env_help("Consumer group of the workers.", "ingest_group"))
@session_timeout_option("meetings", "ingest_session_timeout_ms")
@click.option(
    "--backend",
    type=click.Choice(INGEST_BACKENDS),
    default=None,
    help=env_help("How streams are held: our WebSocket client or Zoom's SDK.", "ingest_backend"),
)
@click.option(
    "--backoff-base-s",
    type=click.FloatRange(min=0),
    default=None,
    help=env_help("First RTMS reconnect delay (doubles per attempt, capped at 30 s).", "rtms_backoff_base_s"),
)
@click.option(
    "--audio-multi/--audio-mixed",
    default=None,
    help=env_help("Per-participant audio streams instead of the mixed stream.", "rtms_audio_multi"),
)
@click.option("--video/--no-video", default=None, help=env_help("Receive video.", "rtms_video"))
@click.option(
    "--video-resolution",
    type=click.Choice(list(VIDEO_RESOLUTIONS)),
    default=None,
    help=env_help("Requested video resolution.", "rtms_video_resolution"),
)
@click.option(
    "--video-fps",
    type=click.IntRange(1, 30),
    default=None,
    help=env_help("Requested video frame rate (H.264).", "rtms_video_fps"),
)
@click.option(
    "--video-mode",
    type=click.Choice(VIDEO_MODES),
    default=None,
    help=env_help("Whose video: the active speaker's or each participant's camera.", "rtms_video_mode"),
)
@click.option(
    "--video-participants",
    type=click.IntRange(1, 16),
    default=None,
    help=env_help("Individual video: cameras subscribed at once.", "rtms_video_participants"),
)
@click.option(
    "--deskshare/--no-deskshare", default=None, help=env_help("Receive screen share.", "rtms_deskshare")
)
@click.option(
    "--transcript/--no-transcript", default=None, help=env_help("Receive transcripts.", "rtms_transcript")
)
@click.option("--chat/--no-chat", default=None, help=env_help("Receive in-meeting chat.", "rtms_chat"))
@click.option(
    "--transcript-language",
    type=click.IntRange(min=-1),
    default=None,
    help=env_help("RTMS language code of the transcripts (-1 = auto).", "transcript_language"),
)
@metrics_port_option()
def worker(
    group: str | None,
    session_timeout_ms: int | None,
    backend: str | None,
    backoff_base_s: float | None,
    audio_multi: bool | None,
    video: bool | None,
    video_resolution: str | None,
    video_fps: int | None,
    video_mode: str | None,
    video_participants: int | None,
    deskshare: bool | None,
    transcript: bool | None,
    chat: bool | None,
    transcript_language: int | None,
    metrics_port: int | None,
) -> None:
    """Hold the live RTMS streams of the rtms.sessions partitions this worker owns."""
    from ingest.backend import FrameHandler, SessionBackend, load_backend
    from ingest.worker import SessionWorker
    from ingest.ws_client import client_config
    from rtmsflow.service import run_stage, run_until_signal

    settings = load_settings(
        ingest_group=group,
        ingest_session_timeout_ms=session_timeout_ms,
        ingest_backend=backend,
        rtms_backoff_base_s=backoff_base_s,
        rtms_audio_multi=audio_multi,
        rtms_video=video,
        rtms_video_resolution=video_resolution,
        rtms_video_fps=video_fps,
        rtms_video_mode=video_mode,
        rtms_video_participants=video_participants,
        rtms_deskshare=deskshare,
        rtms_transcript=transcript,
        rtms_chat=chat,
        transcript_language=transcript_language,
        metrics_port=metrics_port,
    )
    config = client_config(
        settings,
        backoff_base_s=settings.rtms_backoff_base_s,
        audio_multi=settings.rtms_audio_multi,
        video=settings.rtms_video,
        video_resolution=VIDEO_RESOLUTIONS[settings.rtms_video_resolution],
        video_fps=settings.rtms_video_fps,
        deskshare=settings.rtms_deskshare,
        transcript=settings.rtms_transcript,
        chat=settings.rtms_chat,
    )

    factory = load_backend(settings.ingest_backend)

    def backend_factory(s: Settings, frames: FrameHandler) -> SessionBackend:
        return factory(s, frames, config=config)  # the same media choices, whichever backend

    port = announce_start(log, "ingest worker", settings, settings.ingest_group)
    node = SessionWorker(
        settings,
        group_id=settings.ingest_group,
        backend_factory=backend_factory,
        session_timeout_ms=settings.ingest_session_timeout_ms,
    )
    # every message leaves a few dozen objects behind: collect in larger, rarer steps, and never walk
    # again what was loaded at start (+2-3 % meetings a core at saturation, BENCHMARKS.md)
    gc.collect()
    gc.freeze()
    gc.set_threshold(100_000, 50, 1000)
    run_until_signal(_worker_then_sdk_hosts(settings, run_stage(node, settings.http_host, port)))


async def _worker_then_sdk_hosts(settings: Settings, worker: Coroutine[Any, Any, None]) -> None:
    """Run the worker; afterwards stop the SDK host process it may have started (sdk backend)."""
    try:
        await worker
    finally:
        if settings.ingest_backend == "sdk":
            from ingest.sdk_backend import shutdown_sdk_hosts

            await shutdown_sdk_hosts()
