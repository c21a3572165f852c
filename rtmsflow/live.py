"""The live view's I/O for `rtmsflow demo` and `rtmsflow up`: scrapes the stages' /metrics and
/health, follows `rtms.sessions`, `rtms.events` and the utterance topics (without a consumer group),
the manifests the sinks publish (`rtmsflow.output`: a directory or a bucket) and the stages' logs,
feeds `rtmsflow.view.LiveView` and draws it (`rich` on a terminal, else plain lines); the end summary.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import click
from aiokafka import TopicPartition
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from rtmsflow.admin import admin_client, partition_counts
from rtmsflow.clock import now_ms
from rtmsflow.kafka_client import make_consumer
from rtmsflow.logs import get_logger
from rtmsflow.output import ManifestRef, Output
from rtmsflow.settings import Settings
from rtmsflow.stack import Supervisor
from rtmsflow.view import (
    LEFTOVER_NOTE,
    LiveView,
    Snapshot,
    meeting_time,
    people_text,
    rate_text,
    short_uuid,
    split_by_run,
)
from schemas.codec import Codec, CodecError
from schemas.topics import EVENTS, SESSIONS, TRANSCRIPT, TRANSCRIPT_PARTIAL

log = get_logger(__name__)

# The topics whose utterances become captions: the open utterance at once, then its final.
CAPTION_TOPICS: tuple[str, ...] = (TRANSCRIPT_PARTIAL.name, TRANSCRIPT.name)
SCRAPE_EVERY_S = 1.0
DRAW_EVERY_S = 0.5
PLAIN_STATUS_EVERY_S = 10.0


def wants_live(plain: bool) -> bool:
    """A live display when stdout is a terminal that can draw one and `--plain` was not given."""
    if plain or not sys.stdout.isatty():
        return False
    console = Console()
    return console.is_terminal and not console.is_dumb_terminal


# --- drawing ---------------------------------------------------------------------------------------


def render(snap: Snapshot, title: str) -> RenderableType:
    """The live display of one snapshot."""
    parts: list[RenderableType] = []
    meetings = Table(title="meetings", title_justify="left", box=None, padding=(0, 2, 0, 0))
    for col in ("meeting", "time", "participants", "files"):
        meetings.add_column(col)
    for m in snap.meetings:
        when = meeting_time(m, snap.now_ms)
        if m.ended_ms is not None:
            when += " stopped"
        name = escape(m.meeting_uuid) + ("" if m.this_run else " [yellow](leftover)[/]")
        meetings.add_row(name, when, escape(people_text(m)), f"{m.finalized} finalized")
    if not snap.meetings:
        meetings.add_row("[dim]waiting for a meeting[/]", "", "", "")
    parts.append(meetings)

    stages = Table(title="stages", title_justify="left", box=None, padding=(0, 2, 0, 0))
    for col, justify in (("stage", "left"), ("health", "left"), ("in", "right"), ("out", "right"),
                         ("lag", "right"), ("dead letters", "right"), ("finalized", "right"),
                         ("restarts", "right")):  # fmt: skip
        stages.add_column(col, justify=justify)  # type: ignore[arg-type]
    for s in snap.stages:
        colour = {"ok": "green", "stopped": "dim", "down": "red", "restarting": "red"}.get(s.health, "yellow")
        stages.add_row(
            s.name,
            f"[{colour}]{escape(s.health)}[/]",
            rate_text(s.in_per_s),
            rate_text(s.out_per_s),
            "-" if s.lag is None else f"{s.lag:,}",
            f"[red]{s.dead_letters}[/]" if s.dead_letters else "0",
            "-" if s.finalized is None else str(s.finalized),
            str(s.restarts),
        )
    parts.append(stages)

    captions = Text()
    for c in snap.captions:
        if captions:
            captions.append("\n")
        captions.append(f"{c.speaker}: ", style="bold")
        captions.append(c.text, style="" if c.final else "dim italic")
    parts.append(
        Panel(captions or Text("no utterance yet", style="dim"), title="captions", title_align="left")
    )

    if snap.finalized:
        done = Text()
        for f in snap.finalized:
            if done:
                done.append("\n")
            done.append(f"{f.kind:<10}  ", style="bold")
            done.append(f"{f.stream_dir}/")
            done.append(f"  {', '.join(f.files)}", style="dim")
            if not f.this_run:
                done.append(" (leftover)", style="yellow")
        parts.append(Panel(done, title="finalized", title_align="left"))
    if snap.notes:
        notes = Text()
        for n in snap.notes:
            if notes:
                notes.append("\n")
            notes.append(n.line(), style="red" if n.level != "WARNING" else "yellow")
        parts.append(Panel(notes, title="warnings and errors", title_align="left"))
    return Panel(Group(*parts), title=escape(title), title_align="left")


class Screen:
    """Where a person sees the run: `say` prints a human line (above the live display, if any),
    `verbose` a raw log line, `draw` redraws the view or, in plain mode, prints its new lines and,
    every `status_every_s`, its status lines."""

    def __init__(
        self, view: LiveView, title: str, *, live: bool, status_every_s: float = PLAIN_STATUS_EVERY_S
    ) -> None:
        self.view = view
        self.title = title
        self.console = Console(highlight=False)
        self.live: Live | None = (
            Live(console=self.console, auto_refresh=False, redirect_stdout=False, redirect_stderr=False)
            if live
            else None
        )
        self.status_every_s = status_every_s
        self._status_at = time.monotonic()

    def __enter__(self) -> Screen:
        if self.live is not None:
            self.live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.draw()
            self.live.stop()
        else:
            self._print_lines()
            for line in self.view.status_lines(now_ms()):
                self.say(line)

    def say(self, message: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {message}"
        if self.live is not None:
            self.console.print(escape(line))
        else:
            click.echo(line)

    def echo(self, line: str) -> None:
        """A line as it is (no time), above the live display if any."""
        if self.live is not None:
            self.console.print(escape(line), soft_wrap=True)
        else:
            click.echo(line)

    def verbose(self, line: str) -> None:
        if self.live is not None:
            self.console.print(escape(line), soft_wrap=True)
        else:
            click.echo(line, err=True)

    def draw(self) -> None:
        at_ms = now_ms()
        if self.live is not None:
            self.view.take_lines()  # the display shows them
            self.live.update(render(self.view.snapshot(at_ms), self.title), refresh=True)
            return
        self._print_lines()
        if time.monotonic() - self._status_at >= self.status_every_s:
            self._status_at = time.monotonic()
            for line in self.view.status_lines(at_ms):
                self.say(line)

    def _print_lines(self) -> None:
        for line in self.view.take_lines():
            self.say(line)


# --- following ------------------------------------------------------------------------------------


class LogFollower:
    """New complete lines of the `*.log` files in a directory (a file there before `start()` is
    read from its end then: `rtmsflow up` appends to the logs of earlier runs)."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.offsets: dict[Path, int] = {}

    def start(self) -> None:
        for path in self.log_dir.glob("*.log"):
            with contextlib.suppress(OSError):
                self.offsets[path] = path.stat().st_size

    def poll(self, max_bytes: int = 1 << 20) -> list[tuple[str, Path, str]]:
        """(source, path, line) of every line written since the last poll."""
        out: list[tuple[str, Path, str]] = []
        for path in sorted(self.log_dir.glob("*.log")):
            offset = self.offsets.get(path, 0)
            try:
                with path.open("rb") as f:
                    f.seek(offset)
                    chunk = f.read(max_bytes)
            except OSError:
                continue
            end = chunk.rfind(b"\n") + 1
            self.offsets[path] = offset + end
            for raw in chunk[:end].splitlines():
                out.append((path.stem, path, raw.decode("utf-8", errors="replace")))
        return out


class ManifestFollower:
    """Manifests the sinks publish in the data dir (a directory or a bucket) since `since_wall_s`.
    One that cannot be listed or read now is tried again at the next poll."""

    def __init__(self, output: Output, since_wall_s: float) -> None:
        self.output = output
        self.since_wall_s = since_wall_s
        self.seen: set[ManifestRef] = set()
        self.failing = False

    def poll(self) -> list[tuple[ManifestRef, dict[str, Any]]]:
        try:
            refs = self.output.manifests(self.since_wall_s)
        except OSError as exc:
            if not self.failing:  # once per outage: the log's warnings are shown
                log.warning("live view: cannot list the manifests", extra={"error": str(exc)})
            self.failing = True
            return []
        self.failing = False
        out = []
        for ref in refs:
            if ref in self.seen:
                continue
            try:
                manifest = self.output.read(ref)
            except (OSError, ValueError):
                continue  # read next time
            self.seen.add(ref)
            out.append((ref, manifest))
        return out


class LiveWatch:
    """Feeds `view` from the stages of `sup`, the topics, the data dir (`output`) and the log directory,
    and redraws `screen`. `start()` notes where the topics and logs end (call it before the
    stages start, so nothing of this run is missed); `run()` follows until cancelled."""

    def __init__(
        self,
        settings: Settings,
        view: LiveView,
        screen: Screen,
        sup: Supervisor,
        output: Output,
        since_wall_s: float,
        *,
        caption_topics: Sequence[str] = CAPTION_TOPICS,
        verbose: bool = False,
    ) -> None:
        self.settings = settings
        self.view = view
        self.screen = screen
        self.sup = sup
        self.verbose = verbose
        prefix = settings.topic_prefix
        self.sessions_topic = SESSIONS.full_name(prefix)
        self.events_topic = EVENTS.full_name(prefix)
        self.caption_topics = [f"{prefix}{name}" for name in caption_topics]
        self.logs = LogFollower(sup.log_dir)
        self.manifests = ManifestFollower(output, since_wall_s)
        self.codec = Codec(settings.schema_registry_url, settings.topic_prefix)
        self.starts: dict[TopicPartition, int] = {}

    async def start(self) -> None:
        self.sup.log_dir.mkdir(parents=True, exist_ok=True)
        self.logs.start()
        topics = [self.sessions_topic, self.events_topic, *self.caption_topics]
        async with admin_client(self.settings) as admin:
            counts = await partition_counts(admin, topics)
        tps = [TopicPartition(topic, p) for topic in topics for p in range(counts.get(topic, 0))]
        consumer = make_consumer(group_id=None, settings=self.settings)
        await consumer.start()
        try:
            self.starts = await consumer.end_offsets(tps)
        finally:
            await consumer.stop()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._scrape())
            tasks.create_task(self._topics())
            tasks.create_task(self._files())

    async def scrape_once(self) -> None:
        """One scrape of every stage (after `sup.stop()`: the view then shows them stopped)."""
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
            await asyncio.gather(*(self._scrape_stage(http, stage) for stage in self.sup.stages))

    async def _scrape(self) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
            while True:
                await asyncio.gather(*(self._scrape_stage(http, stage) for stage in self.sup.stages))
                await asyncio.sleep(SCRAPE_EVERY_S)

    async def _scrape_stage(self, http: aiohttp.ClientSession, stage: Any) -> None:
        if stage.proc is None:
            return  # not started yet: "starting"
        base = f"http://127.0.0.1:{stage.spec.port}"
        metrics_text = status = body = None
        with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
            async with http.get(f"{base}/health") as resp:
                status = resp.status
                body = await resp.json(content_type=None)
        with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
            async with http.get(f"{base}/metrics") as resp:
                if resp.status == 200:
                    metrics_text = await resp.text()
        self.view.stage_sample(
            stage.spec.name,
            time.monotonic(),
            metrics_text=metrics_text,
            health_status=status,
            health_body=body if isinstance(body, dict) else None,
            restarts=stage.restarts_total,
            running=stage.exited() is None,
            stopping=stage.stopping,
        )

    async def _topics(self) -> None:
        consumer = make_consumer(group_id=None, settings=self.settings)
        await consumer.start()
        try:
            consumer.assign(list(self.starts))
            for tp, offset in self.starts.items():
                consumer.seek(tp, offset)
            while True:
                batch = await consumer.getmany(timeout_ms=500, max_records=2000)
                # sessions first: a meeting's STARTED record says it is this run's before its events
                for tp in sorted(batch, key=lambda tp: tp.topic != self.sessions_topic):
                    for rec in batch[tp]:
                        if rec.value is not None:  # None: an end-of-stream marker
                            await self._record(tp.topic, rec.value)
        finally:
            await consumer.stop()

    async def _record(self, topic: str, data: bytes) -> None:
        try:
            value = await self.codec.decode_async(topic, data)
        except CodecError as exc:
            log.warning("live view: unreadable record", extra={"topic": topic, "error": str(exc)})
            return
        if topic == self.sessions_topic:
            self.view.session(value)
        elif topic == self.events_topic:
            self.view.event(value)
        else:
            self.view.utterance(value)

    async def _files(self) -> None:
        while True:
            for ref, manifest in await asyncio.to_thread(self.manifests.poll):
                self.view.manifest(ref.stream_dir, ref.name, manifest)
            for source, path, line in self.logs.poll():
                if self.verbose:
                    self.screen.verbose(f"{source} | {line}")
                self.view.log_line(source, str(path), line)
            self.screen.draw()
            await asyncio.sleep(DRAW_EVERY_S)


# --- the end summary -------------------------------------------------------------------------------


def holds(manifests: dict[str, Any]) -> list[str]:
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


def split_streams(streams: dict[str, Any], this_run: Iterable[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """`Output.describe` output -> (this run's meetings' streams, leftovers' streams)."""
    mine, leftovers = split_by_run({d: e["meeting_uuid"] for d, e in streams.items()}, this_run)
    return {d: streams[d] for d in mine}, {d: streams[d] for d in leftovers}


def summary_lines(mine: dict[str, Any], leftovers: dict[str, Any]) -> list[str]:
    """The end summary's lines: this run's stream directories with their files and what they hold,
    then the leftovers', named as such."""
    lines = []
    for stream_dir, entry in mine.items():
        lines.append(f"  {stream_dir}/")
        for name, size in entry["files"].items():
            lines.append(f"    {name:<32} {size:>12,} bytes")
        lines.extend(f"    {line}" for line in holds(entry["manifests"]))
    if leftovers:
        meetings = sorted({e["meeting_uuid"] for e in leftovers.values()})
        lines.append(
            f"also written: {len(leftovers)} stream(s) of {len(meetings)} leftover meeting(s), "
            f"{LEFTOVER_NOTE}:"
        )
        for stream_dir, entry in leftovers.items():
            lines.append(f"  {stream_dir}/  (meeting {short_uuid(entry['meeting_uuid'], 48)})")
    return lines
