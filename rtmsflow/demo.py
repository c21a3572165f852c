"""`rtmsflow demo`: the main job — one emulated meeting through the pipeline, a summary out.

It plays the operator: it makes sure a broker runs (the configured one, else the local KRaft
broker), creates the topics, starts the stages as separate processes through their own CLI
commands (`rtmsflow ingest http`, `rtmsflow ingest worker`), plays a meeting with
`rtmsflow emulator meeting` (signed webhooks + RTMS WebSockets), then reads the raw topics until
the meeting's end-of-stream markers and prints what reached each topic. The stages meet only in
Kafka: this module imports none of them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from rtmsflow.logs import get_logger
from rtmsflow.settings import Settings
from schemas import topics as t

log = get_logger(__name__)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class TopicSummary:
    """What one raw topic holds for the meeting."""

    records: int = 0
    bytes: int = 0
    end_of_stream: int = 0
    participants: Counter[str] = field(default_factory=Counter)
    names: Counter[str] = field(default_factory=Counter)
    first_ts_ms: int | None = None
    last_ts_ms: int | None = None
    eos_last: bool = True

    def add(self, value: dict[str, Any]) -> None:
        if value.get("end_of_stream"):
            self.end_of_stream += 1
            return
        if self.end_of_stream:
            self.eos_last = False  # a frame after the marker would break the contract
        self.records += 1
        payload = value.get("payload") or value.get("text") or b""
        self.bytes += len(payload)
        who = value.get("participant_name") or str(value.get("participant_id", 0))
        self.participants[who] += 1
        if value.get("name"):
            self.names[value["name"]] += 1
        ts = int(value.get("timestamp_ms", 0))
        self.first_ts_ms = ts if self.first_ts_ms is None else min(self.first_ts_ms, ts)
        self.last_ts_ms = ts if self.last_ts_ms is None else max(self.last_ts_ms, ts)

    def media_span_ms(self) -> int:
        if self.first_ts_ms is None or self.last_ts_ms is None:
            return 0
        return self.last_ts_ms - self.first_ts_ms

    def as_dict(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "bytes": self.bytes,
            "end_of_stream_markers": self.end_of_stream,
            "end_of_stream_last": self.eos_last,
            "by_participant": dict(self.participants),
            "by_name": dict(self.names),
            "media_span_ms": self.media_span_ms(),
        }


async def read_meeting(settings: Settings, meeting_uuid: str, timeout_s: float) -> dict[str, TopicSummary]:
    """Read every raw topic from the start until the meeting's end-of-stream marker on each."""
    from rtmsflow.kafka_client import make_consumer
    from schemas.codec import Codec
    from schemas.markers import read_marker

    codec = Codec.from_settings(settings)
    names = {spec.full_name(settings.topic_prefix): spec for spec in (*t.RAW_TOPICS, t.DEADLETTER)}
    await codec.prepare(list(names))
    consumer = make_consumer(*names, group_id=None, settings=settings)
    summaries: dict[str, TopicSummary] = defaultdict(TopicSummary)
    ended: set[str] = set()
    raw_names = {spec.full_name(settings.topic_prefix) for spec in t.RAW_TOPICS}
    key = meeting_uuid.encode()
    deadline = time.monotonic() + timeout_s
    await consumer.start()
    try:
        while ended != raw_names and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for rec in records:
                    if rec.key != key:
                        continue
                    if rec.value is None:  # an end-of-stream marker: null value, StreamEnd header
                        if read_marker(rec.headers) is None:
                            continue
                        value: dict[str, Any] = {"end_of_stream": True}
                    else:
                        value = await codec.decode_async(rec.topic, rec.value)
                    summaries[rec.topic].add(value)
                    if value.get("end_of_stream"):
                        ended.add(rec.topic)
    finally:
        await consumer.stop()
    if ended != raw_names:
        raise click.ClickException(f"no end-of-stream marker within {timeout_s:.0f}s on {sorted(raw_names - ended)}")
    return summaries


class Stage:
    """A stage run as a child process through its CLI command; stopped with SIGTERM."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rtmsflow.cli", *args], env=env, stdout=self._log, stderr=subprocess.STDOUT
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def _wait_http(port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise click.ClickException(f"the webhook endpoint did not open port {port} within {timeout_s:.0f}s")


@click.command()
@click.option("--participants", default=3, show_default=True, help="Participants in the emulated meeting.")
@click.option("--duration", default=20.0, show_default=True, help="Meeting length in seconds of media time.")
@click.option("--video", default="720p", show_default=True, help="Video resolution (360p, 720p, 1080p).")
@click.option("--speed", default=1.0, show_default=True, help="Play faster than real time (e.g. 4).")
@click.option("--out", "out_dir", default="out", show_default=True, type=click.Path(file_okay=False))
def demo(participants: int, duration: float, video: str, speed: float, out_dir: str) -> None:
    """Play one emulated meeting through webhook endpoint and ingest worker; summarize the topics."""
    from rtmsflow.admin import ensure_topics
    from rtmsflow.broker import LocalKafka

    settings = Settings.from_env()
    broker: LocalKafka | None = None
    bootstrap = settings.kafka_bootstrap
    if not bootstrap:
        broker = LocalKafka()
        bootstrap = broker.status() or broker.start()
        click.echo(f"Kafka broker: local KRaft at {bootstrap}")
    else:
        click.echo(f"Kafka broker: {bootstrap} (RTMSFLOW_KAFKA_BOOTSTRAP)")
    run_id = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    env = dict(os.environ)
    env.update(
        {
            "RTMSFLOW_KAFKA_BOOTSTRAP": bootstrap,
            "ZM_RTMS_CLIENT": env.get("ZM_RTMS_CLIENT") or "demo-client-id",
            "ZM_RTMS_SECRET": env.get("ZM_RTMS_SECRET") or secrets.token_hex(16),
            "ZOOM_SECRET_TOKEN": env.get("ZOOM_SECRET_TOKEN") or secrets.token_hex(16),
            "RTMSFLOW_ALLOWED_HOSTS": "127.0.0.1",
            "RTMSFLOW_ALLOW_INSECURE_WS": "1",
        }
    )
    settings = dataclasses.replace(settings, kafka_bootstrap=bootstrap)
    asyncio.run(ensure_topics(settings))
    port = _free_port()
    env["RTMSFLOW_HTTP_PORT"] = str(port)
    log_dir = Path(out_dir) / "logs" / run_id
    log_dir.mkdir(parents=True, exist_ok=True)
    stages: list[Stage] = []
    meeting_uuid = f"demo-{run_id}=="
    try:
        stages.append(Stage("ingest-http", ["ingest", "http"], env, log_dir))
        stages.append(Stage("ingest-worker", ["ingest", "worker"], env, log_dir))
        _wait_http(port, 30)
        click.echo(f"ingest: webhook endpoint http://127.0.0.1:{port}/webhook, one worker; logs in {log_dir}")
        started = time.monotonic()
        emulator = subprocess.run(
            [
                sys.executable, "-m", "rtmsflow.cli", "emulator", "meeting",
                "--participants", str(participants), "--duration", str(duration), "--video", video,
                "--speed", str(speed), "--meeting-uuid", meeting_uuid,
                "--webhook", f"http://127.0.0.1:{port}/webhook",
            ],
            env={**env, "RTMSFLOW_LOG_LEVEL": os.environ.get("RTMSFLOW_LOG_LEVEL", "WARNING")},
            check=False,
        )
        if emulator.returncode != 0:
            raise click.ClickException(f"the emulator failed (exit {emulator.returncode})")
        summaries = asyncio.run(read_meeting(settings, meeting_uuid, timeout_s=60))
        elapsed = time.monotonic() - started
    finally:
        for stage in reversed(stages):
            stage.stop()
        if broker is not None and os.environ.get("RTMSFLOW_DEMO_KEEP_BROKER") != "1":
            broker.stop()
    report = {
        "meeting_uuid": meeting_uuid,
        "elapsed_s": round(elapsed, 1),
        "topics": {name: s.as_dict() for name, s in sorted(summaries.items())},
    }
    target = Path(out_dir) / dt.date.today().isoformat() / meeting_uuid.rstrip("=")
    target.mkdir(parents=True, exist_ok=True)
    tmp = target / "raw_summary.json.tmp"
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    tmp.replace(target / "raw_summary.json")
    click.echo(f"\nmeeting {meeting_uuid}: played and ingested in {elapsed:.1f}s")
    for name, s in sorted(summaries.items()):
        who = ", ".join(f"{k}: {v}" for k, v in sorted(s.participants.items()))
        click.echo(f"  {name:<24} {s.records:>6} records {s.bytes:>11,} bytes  eos={s.end_of_stream}  [{who}]")
    click.echo(f"summary: {target / 'raw_summary.json'}")
    click.echo("recordings and transcripts: the processors and sinks are the next wave (not built yet)")
