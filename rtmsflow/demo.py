"""`rtmsflow demo`: the main job — one emulated meeting through the whole pipeline, files out.

It plays the operator: it makes sure a broker runs (the configured one, else the local KRaft broker,
which it stops afterwards only if it started it), creates the topics, starts every stage as its own
process through its own CLI command under a `Supervisor` (webhook endpoint, ingest worker,
processors, media and transcript sinks), plays a meeting with `rtmsflow emulator meeting` (signed
webhooks + RTMS WebSockets: real PCM, real H.264, transcripts, events), waits until the sinks have
finalized it, stops the stages in order and prints where the files are and what they hold. The
stages meet only in Kafka: this module imports none of them.
"""

from __future__ import annotations

import asyncio
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
from rtmsflow.logs import get_logger
from rtmsflow.s3_client import S3_SCHEME, S3Options, make_client, parse_target
from rtmsflow.settings import Settings
from rtmsflow.stack import Supervisor, free_ports, stack_stages, stage_env, wait_drained

log = get_logger(__name__)

# What the emulator can play (its clips) and ingest can ask RTMS for.
DEMO_RESOLUTIONS = ("360p", "720p", "1080p")


def _say(message: str) -> None:
    click.echo(f"[{time.strftime('%H:%M:%S')}] {message}")


class _Output:
    """Where the sinks write: a directory, or a bucket (`s3://bucket/prefix`, listed with boto3)."""

    def __init__(self, settings: Settings) -> None:
        self.target = parse_target(settings.data_dir)
        self.directory = Path(settings.data_dir)
        self.client = make_client(S3Options.from_settings(settings)) if self.target else None

    def _objects(self) -> list[dict[str, Any]]:
        assert self.target is not None and self.client is not None
        prefix = f"{self.target.prefix}/" if self.target.prefix else ""
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.target.bucket, Prefix=prefix
        )
        objects = [o for page in pages for o in page.get("Contents", [])]
        # <date>/<meeting>/<stream>/<file>; a key ending in "/" is a server's directory marker
        return [
            o for o in objects if len(o["Key"][len(prefix) :].split("/")) == 4 and not o["Key"].endswith("/")
        ]

    def manifests(self, since: float) -> list[tuple[str, str]]:
        """(stream directory, manifest name) of the manifests written since `since` (wall clock)."""
        if self.target is None:
            found = self.directory.glob("*/*/*/*manifest.json")
            return sorted((str(p.parent), p.name) for p in found if p.stat().st_mtime >= since)
        return sorted(
            (f"{S3_SCHEME}{self.target.bucket}/{o['Key'].rsplit('/', 1)[0]}", o["Key"].rsplit("/", 1)[1])
            for o in self._objects()
            if o["Key"].endswith("manifest.json") and o["LastModified"].timestamp() >= int(since)
        )

    def describe(self, since: float) -> dict[str, Any]:
        """Every stream directory written in this run: its files (bytes) and the manifests' facts."""
        report: dict[str, Any] = {}
        sizes: dict[str, dict[str, int]] = {}
        if self.target is not None:
            for o in self._objects():
                where, name = o["Key"].rsplit("/", 1)
                sizes.setdefault(f"{S3_SCHEME}{self.target.bucket}/{where}", {})[name] = int(o["Size"])
        for stream_dir, name in self.manifests(since):
            entry = report.setdefault(stream_dir, {"files": {}, "manifests": {}})
            if self.target is None or self.client is None:
                directory = Path(stream_dir)
                files = {f.name: f.stat().st_size for f in sorted(directory.iterdir()) if f.is_file()}
                entry["files"] = {n: size for n, size in files.items() if not n.startswith(".")}
                entry["manifests"][name] = json.loads((directory / name).read_text())
            else:
                entry["files"] = dict(sorted(sizes.get(stream_dir, {}).items()))
                key = f"{stream_dir[len(S3_SCHEME) + len(self.target.bucket) + 1 :]}/{name}"
                body = self.client.get_object(Bucket=self.target.bucket, Key=key)["Body"].read()
                entry["manifests"][name] = json.loads(body)
        return report


async def _wait_finalized(
    sup: Supervisor, settings: Settings, output: _Output, since: float, timeout_s: float, transcript: bool
) -> None:
    """Until the processors and both sinks have drained and the media manifest (and, when the
    meeting has transcripts, the transcript manifest) are on disk; shows progress every few seconds."""
    deadline = time.monotonic() + timeout_s
    said = 0.0
    while True:
        manifests = await asyncio.to_thread(output.manifests, since)
        names = {name for _, name in manifests}
        if "manifest.json" in names and (not transcript or any(n != "manifest.json" for n in names)):
            break
        if time.monotonic() > deadline:
            raise click.ClickException(
                f"the meeting was not finalized within {timeout_s:.0f}s (manifests: {sorted(names)}); "
                f"logs in {sup.log_dir}"
            )
        if time.monotonic() - said > 5:
            _say(f"waiting for the sinks to finalize ({len(manifests)} manifest(s) so far)")
            said = time.monotonic()
        await asyncio.sleep(0.5)
    for stage in sup.stages:
        if stage.spec.group is not None:
            await wait_drained(
                settings, stage.spec.group, stage.spec.reads, max(5.0, deadline - time.monotonic())
            )


def _holds(manifests: dict[str, Any]) -> list[str]:
    """What the stream's files hold, from its manifests: a line each for media and transcript."""
    lines = []
    media, text = manifests.get("manifest.json"), manifests.get("transcript.manifest.json")
    for manifest, kind in ((media, "media"), (text, "transcript")):
        if not manifest or not manifest.get("streams"):
            continue
        stream = manifest["streams"][0]
        counts = ", ".join(f"{n} {k.lower()}" for k, n in sorted(stream.get("frame_counts", {}).items()))
        gaps = len(stream.get("gaps", []))
        how = stream.get("ended", {}).get("how", "?")
        people = ", ".join(
            p.get("name") or str(p["participant_id"]) for p in manifest.get("participants", [])
        )
        lines.append(
            f"{kind}: {stream.get('duration_ms', 0) / 1000:.1f} s, {counts}; {gaps} gap(s); "
            f"finalized by {how}" + (f"; participants: {people}" if people and kind == "media" else "")
        )
    return lines


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
) -> None:
    """Play one emulated meeting through the whole pipeline and print the files it became."""
    from rtmsflow.admin import ensure_topics
    from rtmsflow.broker import LocalKafka

    settings = load_settings()
    broker: LocalKafka | None = None
    bootstrap = settings.kafka_bootstrap
    if not bootstrap:
        broker = LocalKafka()
        running = broker.status()
        bootstrap = running or broker.start()
        if running:
            broker = None  # not ours to stop
        _say(f"Kafka broker: local KRaft at {bootstrap}")
    else:
        _say(f"Kafka broker: {bootstrap} (RTMSFLOW_KAFKA_BOOTSTRAP)")
    out = Path(out_dir).resolve()
    run_id = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    # the files go to <out>/data, or to the bucket RTMSFLOW_DATA_DIR=s3://bucket/prefix names
    data_dir = settings.data_dir if parse_target(settings.data_dir) else str(out / "data")
    settings = dataclasses.replace(settings, kafka_bootstrap=bootstrap, data_dir=data_dir)
    output = _Output(settings)
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
    stages = stack_stages(settings, free_ports(5))
    sup = Supervisor(settings, stages, env, out / "logs" / run_id)
    meeting_uuid = f"demo-{run_id}=="
    started_wall = time.time()
    started = time.monotonic()

    async def run() -> None:
        _say(f"starting {', '.join(s.name for s in stages)} (logs in {sup.log_dir})")
        await sup.start()
        watcher = asyncio.create_task(sup.watch())
        try:
            webhook = f"http://127.0.0.1:{sup.stage('ingest-http').spec.port}/webhook"
            # the emulator's own log is quiet unless another level than the default is asked for
            emulator_log_level = "WARNING" if settings.log_level == "INFO" else settings.log_level
            shown = f"{video_resolution} at {video_fps} fps" if video else "no video"
            _say(f"playing a {duration:g}s meeting of {participants} participants ({shown}) at {speed:g}x")
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
                check=False,
            )  # fmt: skip
            if emulator.returncode != 0:
                raise click.ClickException(f"the emulator failed (exit {emulator.returncode})")
            _say("meeting played; the stream is stopped")
            await _wait_finalized(sup, settings, output, started_wall, timeout_s, transcript)
            if sup.failed:
                raise click.ClickException(sup.failed)
        finally:
            watcher.cancel()
            _say("stopping the stages in order")
            await sup.stop(drain_timeout_s=30)

    try:
        asyncio.run(run())
    finally:
        if broker is not None and not settings.demo_keep_broker:
            broker.stop()
    report: dict[str, Any] = {"meeting_uuid": meeting_uuid, "elapsed_s": round(time.monotonic() - started, 1)}
    report["streams"] = output.describe(started_wall)
    summary = out / f"summary-{run_id}.json"
    tmp = summary.with_suffix(".json.partial")
    tmp.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    tmp.replace(summary)
    click.echo(f"\nmeeting {meeting_uuid}: played, processed and written in {report['elapsed_s']}s")
    for stream_dir, entry in report["streams"].items():
        click.echo(f"  {stream_dir}/")
        for name, size in entry["files"].items():
            click.echo(f"    {name:<32} {size:>12,} bytes")
        for line in _holds(entry["manifests"]):
            click.echo(f"    {line}")
    click.echo(f"summary: {summary}")
