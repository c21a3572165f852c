"""The whole pipeline as local processes: what `rtmsflow up` supervises and the main job runs.

`Supervisor` starts each stage through its own CLI command in flow order, waits for its /health, restarts
one that dies (within a budget) and stops them in the order that loses nothing (docs/DESIGN.md,
"Guarantees"). It imports no stage: the stages meet only in Kafka."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from aiokafka import TopicPartition

from rtmsflow.admin import admin_client, partition_counts
from rtmsflow.children import die_with_parent
from rtmsflow.kafka_client import bootstrap_servers, make_consumer
from rtmsflow.logs import get_logger
from rtmsflow.settings import Settings
from schemas import topics as t

log = get_logger(__name__)


@dataclass(frozen=True)
class StageSpec:
    """One stage: its name, its `rtmsflow` arguments, its port, and the consumer group (and the
    topics it reads) whose lag says it has drained."""

    name: str
    args: tuple[str, ...]
    port: int
    group: str | None = None
    reads: tuple[str, ...] = ()


def stack_stages(settings: Settings, ports: Iterable[int]) -> list[StageSpec]:
    """The stages of the pipeline in flow order, each on one of `ports` (five of them), in the
    consumer groups of the settings (RTMSFLOW_INGEST_GROUP, RTMSFLOW_PROCESS_GROUP, ...)."""
    http, worker, processor, media, transcripts = ports
    raw = tuple(spec.full_name(settings.topic_prefix) for spec in t.RAW_TOPICS)
    s = settings
    return [
        StageSpec("ingest-http", ("ingest", "http"), http),
        StageSpec("ingest-worker", ("ingest", "worker", "--group", s.ingest_group), worker),
        StageSpec("processor", ("process", "--group", s.process_group), processor, s.process_group, raw),
        StageSpec(
            "sink-media",
            ("sink", "media", "--group", s.sink_media_group),
            media,
            s.sink_media_group,
            (t.AUDIO.full_name(settings.topic_prefix), t.VIDEO.full_name(settings.topic_prefix)),
        ),
        StageSpec(
            "sink-transcripts",
            ("sink", "transcripts", "--group", s.sink_transcripts_group),
            transcripts,
            s.sink_transcripts_group,
            (t.TRANSCRIPT.full_name(settings.topic_prefix), t.CHAT.full_name(settings.topic_prefix)),
        ),
    ]


@dataclass
class StageProcess:
    """A running stage: its child process, log file and restarts."""

    spec: StageSpec
    env: Mapping[str, str]
    log_dir: Path
    proc: subprocess.Popen[bytes] | None = None
    restarts: deque[float] = field(default_factory=deque)  # within the supervisor's restart window
    restarts_total: int = 0
    stopping: bool = False

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"{self.spec.name}.log"

    def start(self) -> None:
        env = dict(self.env)
        port_var = "RTMSFLOW_HTTP_PORT" if self.spec.name == "ingest-http" else "RTMSFLOW_METRICS_PORT"
        env[port_var] = str(self.spec.port)
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "rtmsflow.cli", *self.spec.args],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches the supervisor only; it stops us in order
                preexec_fn=die_with_parent,  # a supervisor killed outright takes its stages along
            )
        log.info(
            "stage started", extra={"stage": self.spec.name, "pid": self.proc.pid, "port": self.spec.port}
        )

    def exited(self) -> int | None:
        """The exit code if the process has ended, else None."""
        return None if self.proc is None else self.proc.poll()

    async def wait_healthy(self, timeout_s: float) -> None:
        """Until GET /health answers 200; raises RuntimeError (with the log's tail) otherwise."""
        url = f"http://127.0.0.1:{self.spec.port}/health"
        deadline = time.monotonic() + timeout_s
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1)) as http:
            while time.monotonic() < deadline:
                if self.exited() is not None:
                    break
                try:
                    async with http.get(url) as resp:
                        if resp.status == 200:
                            return
                except (aiohttp.ClientError, TimeoutError):
                    pass
                await asyncio.sleep(0.2)
        raise RuntimeError(f"stage {self.spec.name} is not healthy ({url}); its log ends:\n{self.log_tail()}")

    async def terminate(self, timeout_s: float = 20.0) -> None:
        """SIGTERM, then SIGKILL after `timeout_s`."""
        self.stopping = True
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.to_thread(proc.wait), timeout_s)
        except TimeoutError:
            pass
        if proc.poll() is None:
            log.warning("stage did not stop in time; killed", extra={"stage": self.spec.name})
            proc.kill()
            proc.wait()
        log.info("stage stopped", extra={"stage": self.spec.name, "exit": proc.returncode})

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


class Supervisor:
    """Starts, watches and stops the stages (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        stages: list[StageSpec],
        env: Mapping[str, str],
        log_dir: Path,
        *,
        max_restarts: int = 5,
        restart_window_s: float = 60.0,
    ) -> None:
        self.settings = settings
        self.log_dir = log_dir
        self.stages = [StageProcess(spec, env, log_dir) for spec in stages]
        self.max_restarts = max_restarts
        self.restart_window_s = restart_window_s
        self.failed: str | None = None

    def stage(self, name: str) -> StageProcess:
        return next(s for s in self.stages if s.spec.name == name)

    async def start(self, timeout_s: float = 90.0) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for stage in self.stages:
            stage.start()
            await stage.wait_healthy(timeout_s)

    async def watch(self) -> None:
        """Restart a stage that died, until cancelled or a stage died too often (then `failed`)."""
        while True:
            for stage in self.stages:
                code = stage.exited()
                if code is None or stage.stopping:
                    continue
                now = time.monotonic()
                while stage.restarts and now - stage.restarts[0] > self.restart_window_s:
                    stage.restarts.popleft()
                if len(stage.restarts) >= self.max_restarts:
                    self.failed = (
                        f"{stage.spec.name} died {len(stage.restarts) + 1} times within "
                        f"{self.restart_window_s:.0f}s (exit {code}); its log ends:\n{stage.log_tail()}"
                    )
                    log.error("stage keeps dying; giving up", extra={"stage": stage.spec.name, "exit": code})
                    return
                stage.restarts.append(now)
                stage.restarts_total += 1
                log.warning("stage died; restarting", extra={"stage": stage.spec.name, "exit": code})
                stage.start()
            await asyncio.sleep(0.5)

    async def stop(self, drain_timeout_s: float = 60.0) -> None:
        """Stop every stage in the order that loses nothing: the webhook endpoint (no new streams); the
        ingest worker (streams closed at Zoom, markers written); the processors once their group has
        caught up with the raw topics; the sinks once caught up with the ordered topics. A drain past
        its timeout is logged and the stage stopped anyway: it commits only what it finished."""
        for stage in self.stages:
            if stage.spec.group is not None:
                try:
                    await wait_drained(self.settings, stage.spec.group, stage.spec.reads, drain_timeout_s)
                except Exception as exc:  # a broker gone, a timeout: stop anyway, nothing is committed twice
                    log.warning(
                        "stage not drained; stopping it anyway",
                        extra={"stage": stage.spec.name, "error": str(exc)},
                    )
            await stage.terminate()


async def group_lag(settings: Settings, group: str, topics: Iterable[str]) -> int:
    """Records of `topics` not yet committed by `group` (a partition it never committed counts whole)."""
    topics = list(topics)
    async with admin_client(settings) as admin:
        committed = await admin.list_consumer_group_offsets(group)
        counts = await partition_counts(admin, topics)
    tps = [TopicPartition(topic, p) for topic in topics for p in range(counts.get(topic, 0))]
    consumer = make_consumer(group_id=None, settings=settings)
    await consumer.start()
    try:
        begins = await consumer.beginning_offsets(tps)
        ends = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
    lag = 0
    for tp in tps:
        meta = committed.get(tp)
        done = meta.offset if meta is not None and meta.offset >= 0 else begins[tp]
        lag += max(0, ends[tp] - done)
    return lag


async def wait_drained(settings: Settings, group: str, topics: Iterable[str], timeout_s: float) -> None:
    """Until `group` has committed everything on `topics`; TimeoutError after `timeout_s`."""
    topics = tuple(topics)
    async with asyncio.timeout(timeout_s):
        while True:
            if not await group_lag(settings, group, topics):
                return
            await asyncio.sleep(0.5)


def free_ports(n: int) -> list[int]:
    """`n` distinct free TCP ports on 127.0.0.1."""
    import socket

    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def stage_env(settings: Settings, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment every stage gets: this process's, the broker, and `extra` on top."""
    env = dict(os.environ)
    env["RTMSFLOW_KAFKA_BOOTSTRAP"] = bootstrap_servers(settings)
    env["RTMSFLOW_INGEST_END_STREAMS_ON_STOP"] = "1"
    env.update(extra or {})
    return env
