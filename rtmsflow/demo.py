"""`rtmsflow demo`: the main job — one emulated meeting through the whole pipeline, files out. It
makes sure a broker runs (stops only one it started), starts each stage as its own process, plays a meeting
(`rtmsflow emulator meeting`), waits until the sinks finalized it, stops the stages in order and prints
the files (in `out/data`, or the bucket `RTMSFLOW_DATA_DIR=s3://...` names), leftovers' apart. Live on
a terminal (`rtmsflow.live`); logs in `out/logs/<run>/`. The stages meet only in Kafka: none imported."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click

from rtmsflow.cli import load_settings
from rtmsflow.live import LiveWatch, Screen, split_streams, summary_lines, wants_live
from rtmsflow.logs import get_logger, setup_logging
from rtmsflow.output import ManifestRef, Output, open_output
from rtmsflow.s3_client import parse_target
from rtmsflow.settings import Settings
from rtmsflow.stack import Supervisor, free_ports, stack_stages, stage_env, wait_drained
from rtmsflow.view import LiveView

log = get_logger(__name__)

# What the emulator can play (its clips) and ingest can ask RTMS for.
DEMO_RESOLUTIONS = ("360p", "720p", "1080p")


async def _wait_finalized(
    sup: Supervisor, settings: Settings, output: Output, since: float, timeout_s: float, transcript: bool,
    meeting_uuid: str, screen: Screen,
) -> None:  # fmt: skip
    """Until the processors and both sinks have drained and the meeting's media manifest (and, when
    it has transcripts, its transcript manifest) are published; in plain mode, says so every few
    seconds. A data dir that cannot be read yet (a bucket's outage) is read again until the deadline."""
    deadline = time.monotonic() + timeout_s
    said = time.monotonic()
    meetings: dict[ManifestRef, str | None] = {}  # a published manifest is not rewritten
    while True:
        manifests = await asyncio.to_thread(_manifests_of, output, since, meeting_uuid, meetings)
        names = {ref.name for ref in manifests}
        if "manifest.json" in names and (not transcript or any(n != "manifest.json" for n in names)):
            break
        if time.monotonic() > deadline:
            raise click.ClickException(
                f"the meeting was not finalized within {timeout_s:.0f}s (manifests: {sorted(names)}); "
                f"logs in {sup.log_dir}"
            )
        if screen.live is None and time.monotonic() - said > 5:
            screen.say(f"waiting for the sinks to finalize ({len(manifests)} manifest(s) so far)")
            said = time.monotonic()
        await asyncio.sleep(0.5)
    for stage in sup.stages:
        if stage.spec.group is not None:
            await wait_drained(
                settings, stage.spec.group, stage.spec.reads, max(5.0, deadline - time.monotonic())
            )


def _manifests_of(
    output: Output, since: float, meeting_uuid: str, meetings: dict[ManifestRef, str | None]
) -> list[ManifestRef]:
    """The manifests of `meeting_uuid` published since `since` (`meetings`: those read so far)."""
    try:
        refs = output.manifests(since)
    except OSError:
        return []
    for ref in refs:
        if ref not in meetings:
            try:
                meetings[ref] = str(output.read(ref).get("meeting_uuid"))
            except (OSError, ValueError):
                continue  # read next time
    return [ref for ref in refs if meetings.get(ref) == meeting_uuid]


@click.command()
@click.option("--participants", default=3, show_default=True, type=click.IntRange(1, 500),
              help="Participants in the emulated meeting.")  # fmt: skip
@click.option("--duration", default=20.0, show_default=True, type=click.FloatRange(min=0.1),
              help="Meeting length in seconds of media time.")  # fmt: skip
@click.option("--video/--no-video", default=True, show_default=True,
              help="The meeting has video (and ingest asks for it).")  # fmt: skip
@click.option("--video-resolution", default="720p", show_default=True, type=click.Choice(DEMO_RESOLUTIONS),
              help="Camera resolution, and the one ingest asks for.")  # fmt: skip
@click.option("--video-fps", default=25, show_default=True, type=click.IntRange(1, 30),
              help="Camera frame rate, and the one ingest asks for.")  # fmt: skip
@click.option("--deskshare/--no-deskshare", default=False, show_default=True,
              help="The host shares a screen (and ingest asks for it).")  # fmt: skip
@click.option("--transcript/--no-transcript", default=True, show_default=True,
              help="The meeting has transcripts (and ingest asks for them).")  # fmt: skip
@click.option("--speed", default=1.0, show_default=True, type=click.FloatRange(min=0.01),
              help="Play faster than real time (e.g. 4).")  # fmt: skip
@click.option("--out", "out_dir", default="out", show_default=True, type=click.Path(file_okay=False),
              help="Where the data, the stages' logs and the summary go.")  # fmt: skip
@click.option(
    "--timeout", "timeout_s", default=180.0, show_default=True, help="Seconds to wait for the files."
)
@click.option("--plain", is_flag=True,
              help="Plain lines instead of the live view (the default when output is not a terminal).")  # fmt: skip
@click.option("--verbose", is_flag=True, help="Also stream every stage's JSON log lines.")
def demo(
    participants: int,
    duration: float,
    video: bool,
    video_resolution: str,
    video_fps: int,
    deskshare: bool,
    transcript: bool,
    speed: float,
    out_dir: str,
    timeout_s: float,
    plain: bool,
    verbose: bool,
) -> None:
    """Play one emulated meeting through the whole pipeline and print the files it became."""
    from rtmsflow.admin import ensure_topics
    from rtmsflow.broker import LocalKafka

    settings = load_settings()
    out = Path(out_dir).resolve()
    run_id = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    log_dir = out / "logs" / run_id
    setup_logging(settings.log_level, log_dir / "demo.log")  # the terminal gets the view instead
    # the files go to <out>/data, or to the bucket RTMSFLOW_DATA_DIR=s3://bucket/prefix names
    data_dir = settings.data_dir if parse_target(settings.data_dir) else str(out / "data")
    meeting_uuid = f"demo-{run_id}=="
    stages = stack_stages(settings, free_ports(5))
    view = LiveView(
        [s.name for s in stages], expected_s={meeting_uuid: duration / speed}, this_run=[meeting_uuid]
    )
    screen = Screen(view, f"rtmsflow demo: logs in {log_dir}", live=wants_live(plain))
    started_wall = time.time()
    started = time.monotonic()
    broker: LocalKafka | None = None
    with screen:
        bootstrap = settings.kafka_bootstrap
        if not bootstrap:
            broker = LocalKafka()
            running = broker.status()
            bootstrap = running or broker.start()
            if running:
                broker = None  # not ours to stop
            screen.say(f"Kafka broker: local KRaft at {bootstrap}")
        else:
            screen.say(f"Kafka broker: {bootstrap} (RTMSFLOW_KAFKA_BOOTSTRAP)")
        settings = dataclasses.replace(settings, kafka_bootstrap=bootstrap, data_dir=data_dir)
        output = open_output(settings)
        env = stage_env(
            settings,
            {
                "ZM_RTMS_CLIENT": settings.zoom_client_id or "demo-client-id",
                "ZM_RTMS_SECRET": settings.zoom_client_secret or secrets.token_hex(16),
                "ZOOM_SECRET_TOKEN": settings.zoom_webhook_secret or secrets.token_hex(16),
                "RTMSFLOW_ALLOWED_HOSTS": "127.0.0.1",
                "RTMSFLOW_ALLOW_INSECURE_WS": "1",
                "RTMSFLOW_DATA_DIR": data_dir,
                # ingest asks for what the meeting has
                "RTMSFLOW_RTMS_VIDEO": "1" if video else "0",
                "RTMSFLOW_RTMS_VIDEO_RESOLUTION": video_resolution,
                "RTMSFLOW_RTMS_VIDEO_FPS": str(video_fps),
                "RTMSFLOW_RTMS_DESKSHARE": "1" if deskshare else "0",
                "RTMSFLOW_RTMS_TRANSCRIPT": "1" if transcript else "0",
            },
        )
        asyncio.run(ensure_topics(settings))
        sup = Supervisor(settings, stages, env, log_dir)
        watch = LiveWatch(settings, view, screen, sup, output, started_wall, verbose=verbose)

        async def run() -> None:
            await watch.start()
            watching = asyncio.create_task(watch.run())
            screen.say(f"starting {', '.join(s.name for s in stages)} (logs in {sup.log_dir})")
            await sup.start()
            watcher = asyncio.create_task(sup.watch())
            try:
                webhook = f"http://127.0.0.1:{sup.stage('ingest-http').spec.port}/webhook"
                # the emulator's own log is quiet unless another level than the default is asked for
                emulator_log_level = "WARNING" if settings.log_level == "INFO" else settings.log_level
                shown = f"{video_resolution} at {video_fps} fps" if video else "no video"
                screen.say(
                    f"playing a {duration:g}s meeting of {participants} participants ({shown}) at {speed:g}x"
                )
                with (log_dir / "emulator.log").open("ab") as emulator_log:
                    emulator = await asyncio.to_thread(
                        subprocess.run,
                        [
                            sys.executable, "-m", "rtmsflow.cli", "emulator", "meeting",
                            "--participants", str(participants), "--duration", str(duration),
                            "--video" if video else "--no-video", "--video-resolution", video_resolution,
                            "--video-fps", str(video_fps), "--deskshare" if deskshare else "--no-deskshare",
                            "--transcript" if transcript else "--no-transcript",
                            "--speed", str(speed), "--meeting-uuid", meeting_uuid, "--webhook", webhook,
                        ],
                        env={**env, "RTMSFLOW_LOG_LEVEL": emulator_log_level},
                        stdout=subprocess.DEVNULL,
                        stderr=emulator_log,
                        check=False,
                    )  # fmt: skip
                if emulator.returncode != 0:
                    raise click.ClickException(
                        f"the emulator failed (exit {emulator.returncode}); its log: {log_dir / 'emulator.log'}"
                    )
                screen.say("meeting played; the stream is stopped")
                await _wait_finalized(
                    sup, settings, output, started_wall, timeout_s, transcript, meeting_uuid, screen
                )
                if sup.failed:
                    raise click.ClickException(sup.failed)
            finally:
                watcher.cancel()
                screen.say("stopping the stages in order")
                await sup.stop(drain_timeout_s=30)
                watching.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watching
                await watch.scrape_once()

        try:
            asyncio.run(run())
        finally:
            if broker is not None and not settings.demo_keep_broker:
                broker.stop()
    mine, leftovers = split_streams(output.describe(started_wall), [meeting_uuid])
    report: dict[str, Any] = {
        "meeting_uuid": meeting_uuid,
        "elapsed_s": round(time.monotonic() - started, 1),
        "streams": mine,
        "leftover_streams": leftovers,
        "logs": str(log_dir),
    }
    summary = out / f"summary-{run_id}.json"
    tmp = summary.with_suffix(".json.partial")
    tmp.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    tmp.replace(summary)
    click.echo(f"\nmeeting {meeting_uuid}: played, processed and written in {report['elapsed_s']}s")
    for line in summary_lines(mine, leftovers):
        click.echo(line)
    click.echo(f"summary: {summary}\nlogs: {log_dir}")
