"""How many real-time A/V meetings one ingest worker holds on one core, and at what latency.

    python -m benchmarks.ingest_bench --meetings 100,200,300 --duration 30   # step up

How it measures: BENCHMARKS.md, "How each bench measures", ingest_bench.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import contextlib
import dataclasses
import gc
import json
import math
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rtmsflow.clock import now_ms
from rtmsflow.kafka_client import bootstrap_servers

CLIENT_ID, CLIENT_SECRET, WEBHOOK_SECRET = "bench-client", "bench-secret", "bench-webhook-secret"
PARTICIPANTS = 3
FPS = 25  # what the worker asks for (ClientConfig.video_fps)
DECODES_PER_S = 3000  # latency samples a second: the reading consumer reads this many records
CLK_TCK = os.sysconf("SC_CLK_TCK")
HELD_BACKLOG_S = 1.0  # "held": the backlog grew by less, and stays below, this many seconds of traffic
STATUS_EVERY_S = 0.2  # the emulator's status lines


def log(msg: str) -> None:
    print(f"[ingest_bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- process accounting ---------------------------------------------------------------------------


def proc_cpu_s(pid: int, children: bool = True) -> float:
    """User + system CPU seconds of a live process and (by default) its live descendants."""
    total = 0.0
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total = (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return 0.0
    if children:
        for kid in child_pids(pid):
            total += proc_cpu_s(kid)
    return total


def child_pids(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out += [int(p) for p in f.read().split()]
    except OSError:
        pass
    return out


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs, for the machine's utilisation over a window."""
    with open("/proc/stat") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    idle = parts[3] + parts[4]
    return sum(parts) - idle, sum(parts)


def pinned(cpu: int) -> Callable[[], None]:
    """A preexec_fn pinning the child (and so every thread and process it starts) to `cpu`."""

    def pin() -> None:
        os.sched_setaffinity(0, {cpu})

    return pin


def pin_all_threads(pid: int, cpu: int) -> None:
    """Pin every thread of a running process (a JVM already has dozens) to `cpu`."""
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(int(task), {cpu})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- the emulator process ----------------------------------------------------------------------------


async def emulator_main(args: argparse.Namespace) -> None:
    """Serve `--meetings` real-time meetings, announce them by webhook, report every second."""
    from emulator.media import MeetingSpec, SyntheticMeeting
    from emulator.server import RTMSServer
    from emulator.webhooks import StreamIdentity, WebhookSender

    n = args.meetings
    distinct = args.distinct or n
    meetings = [
        SyntheticMeeting(
            MeetingSpec(
                seed=args.seed + i % distinct,
                participants=PARTICIPANTS,
                duration_s=args.meeting_s,
                video="720p",
                fps=FPS,
            )
        )
        for i in range(n)
    ]

    def prepare() -> None:
        for m in meetings:
            m.prepare()

    await asyncio.to_thread(prepare)
    gc.collect()
    gc.freeze()  # the clips and voices leave the collector's scans
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with (
        # equal meetings whose media start within the connect time read one serialized timeline
        RTMSServer(
            client_id=CLIENT_ID, client_secret=CLIENT_SECRET, timeline_share_s=args.connect_s
        ) as server,
        WebhookSender(args.webhook, WEBHOOK_SECRET, timeout_s=10.0) as hooks,
    ):
        identities, handles = [], []
        for i, meeting in enumerate(meetings):
            identity = StreamIdentity.generate("meeting", "", seed=args.seed, index=i)
            handle = server.add_stream(identity.instance_id, identity.rtms_stream_id, meeting)
            identities.append(dataclasses.replace(identity, server_urls=handle.server_urls))
            handles.append(handle)
        gate = asyncio.Semaphore(16)

        async def announce(identity: Any) -> bool:
            async with gate:
                return bool((await hooks.rtms_started(identity))[0].delivered)

        delivered = await asyncio.gather(*(announce(i) for i in identities))
        print(json.dumps({"ready": True, "announced": sum(delivered)}), flush=True)

        async def stopped(identity: Any, handle: Any) -> None:
            reason = await handle.wait_done()
            await hooks.rtms_stopped(identity, reason)

        enders = [asyncio.create_task(stopped(i, h)) for i, h in zip(identities, handles, strict=True)]
        while not stop.is_set() and not all(e.done() for e in enders):
            sent = {"audio": 0, "video": 0, "transcript": 0}
            late = bytes_sent = events = 0
            max_late = 0.0
            states: dict[str, int] = {}
            for h in handles:
                st = h.stats
                for k in sent:
                    sent[k] += st.sent.get(k, 0)
                late += st.late
                max_late = max(max_late, st.max_late_ms)
                bytes_sent += st.bytes_sent
                events += st.events_sent
                states[h.state] = states.get(h.state, 0) + 1
            r = resource.getrusage(resource.RUSAGE_SELF)
            status = {
                "t_ms": now_ms(),
                "sent": sent,
                "events": events,
                "bytes": bytes_sent,
                "late": late,
                "max_late_ms": round(max_late, 1),
                "states": states,
                "cpu_s": r.ru_utime + r.ru_stime,
            }
            print(json.dumps(status), flush=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), STATUS_EVERY_S)
        for h in handles:
            h.stop()
        await asyncio.gather(*enders, return_exceptions=True)


# --- the measuring side -------------------------------------------------------------------------------


@dataclass
class Sample:
    """One second of the run, as seen from here."""

    t_ms: int
    sent: int  # media frames the emulator sent (total so far)
    handed: int  # frames the worker handed to Kafka (rtmsflow_ingest_frames)
    acked: int  # records Kafka acknowledged (produce-latency count)
    read: int  # media records readable on the raw topics (their end offsets)
    active: int  # meetings the emulator sees connected
    worker_cpu_s: float
    worker_main_cpu_s: float  # the worker process alone (without its SDK host)
    emulator_cpu_s: float
    broker_cpu_s: float
    self_cpu_s: float
    machine: tuple[float, float]
    late: int
    max_late_ms: float


@dataclass
class Latencies:
    """Latency samples (ms) by second, from received_at_ms and from the RTMS timestamp; `read`:
    media records readable on the raw topics (their end offsets, refreshed by `count_readable`)."""

    ingest: dict[int, array.array] = field(default_factory=dict)
    rtms: dict[int, array.array] = field(default_factory=dict)
    read: int = 0
    count_readable: Callable[[], Awaitable[int]] | None = None

    def add(self, second: int, from_received: int, from_rtms: int) -> None:
        self.ingest.setdefault(second, array.array("l")).append(from_received)
        self.rtms.setdefault(second, array.array("l")).append(from_rtms)

    async def refresh(self) -> int:
        """`read` as of now (unchanged if the broker did not answer)."""
        if self.count_readable is not None:
            with contextlib.suppress(Exception):
                self.read = await self.count_readable()
        return self.read

    @staticmethod
    def between(series: dict[int, array.array], t0: int, t1: int) -> list[int]:
        out: list[int] = []
        for second, values in series.items():
            if t0 <= second < t1:
                out.extend(values)
        return sorted(out)


def sampled_partitions(
    partitions: int, expected_per_s: float, budget_per_s: float = DECODES_PER_S
) -> list[int]:
    """Which partitions of each raw topic the reading consumer reads for latency: enough for about
    `budget_per_s` records a second at `expected_per_s` records a second over all partitions,
    spread evenly (meetings are hashed over partitions, so each partition is a sample of meetings)."""
    if partitions < 1:
        raise ValueError("partitions must be >= 1")
    share = 1.0 if expected_per_s <= 0 else min(1.0, budget_per_s / expected_per_s)
    k = max(1, min(partitions, math.ceil(share * partitions)))
    return sorted({i * partitions // k for i in range(k)})


def pct(values: list[int], q: float) -> float | None:
    if not values:
        return None
    return float(values[min(len(values) - 1, int(q * len(values)))])


def metric_values(text: str) -> dict[str, float]:
    """Prometheus text -> {"name{labels}": value} for the ingest metrics we need."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("rtmsflow_ingest_"):
            name, _, value = line.rpartition(" ")
            with contextlib.suppress(ValueError):
                out[name] = float(value)
    return out


async def scrape(port: int) -> dict[str, float]:
    import aiohttp

    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/metrics") as resp:
        return metric_values(await resp.text())


async def consume(
    settings: Any, meetings: int, lat: Latencies, stop: asyncio.Event, ready: asyncio.Event
) -> None:
    """Sample latency on a few partitions of the raw media topics, read from their ends; count what
    all of them hold from their end offsets (`lat.count_readable`), without reading it."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from schemas.codec import Codec
    from schemas.topics import RAW_AUDIO, RAW_TRANSCRIPT, RAW_VIDEO

    codec = Codec(settings.schema_registry_url, settings.topic_prefix)
    topics = [t.full_name(settings.topic_prefix) for t in (RAW_AUDIO, RAW_VIDEO, RAW_TRANSCRIPT)]
    await codec.prepare(topics)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers(settings),
        enable_auto_commit=False,
        auto_offset_reset="latest",
        fetch_max_wait_ms=50,
        max_partition_fetch_bytes=8 << 20,
        fetch_max_bytes=64 << 20,
        check_crcs=False,  # the broker checked them; the bench only wants the timestamps
    )
    await consumer.start()
    try:
        every_tp = [TopicPartition(t, p) for t in topics for p in range(settings.partitions)]
        sampled = sampled_partitions(settings.partitions, meetings * (50 + FPS))
        tps = [TopicPartition(t, p) for t in topics for p in sampled]
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        for tp in tps:
            await consumer.position(tp)
        start = await consumer.end_offsets(every_tp)
        base = sum(start.values())

        async def count_readable() -> int:
            return sum((await consumer.end_offsets(every_tp)).values()) - base

        lat.count_readable = count_readable
        ready.set()
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=200, max_records=5000)
            t = now_ms()
            for tp, records in batch.items():
                for r in records:
                    if r.value is None:  # an end-of-stream marker
                        continue
                    value = codec.decode(tp.topic, r.value)
                    lat.add(t // 1000, t - value["received_at_ms"], t - value["timestamp_ms"])
    finally:
        lat.count_readable = None
        await consumer.stop()


@dataclass
class StepResult:
    """What one step measured (BENCHMARKS.md, "How each bench measures", ingest_bench)."""

    backend: str
    meetings: int
    held: bool
    verdict: str
    window_s: float
    connected: int
    sent_per_s: float
    handed_per_s: float
    acked_per_s: float
    read_per_s: float
    backlog_start: int
    backlog_end: int
    worker_cores: float
    worker_main_cores: float
    worker_ms_per_meeting_s: float
    meetings_per_core: float
    latency_ms: dict[str, float | None]
    rtms_to_readable_ms: dict[str, float | None]
    emulator_cores: float
    emulator_late_frames: int
    emulator_max_late_ms: float
    broker_cores: float
    bench_cores: float
    machine_busy: float
    series: list[dict[str, Any]]


async def run_step(n: int, args: argparse.Namespace, bootstrap: str, broker_pid: int | None) -> StepResult:
    from ingest.webhook import WebhookServer
    from rtmsflow.admin import delete_topics, ensure_topics
    from rtmsflow.settings import Settings
    from schemas.topics import ALL_TOPICS

    settings = dataclasses.replace(
        Settings(),
        kafka_bootstrap=bootstrap,
        topic_prefix=f"bench{uuid.uuid4().hex[:8]}.",
        zoom_client_id=CLIENT_ID,
        zoom_client_secret=CLIENT_SECRET,
        zoom_webhook_secret=WEBHOOK_SECRET,
        allowed_hosts=("127.0.0.1",),
        allow_insecure_ws=True,
    )
    await ensure_topics(settings, ALL_TOPICS)
    webhook = WebhookServer(settings)
    hook_port = await webhook.start(host="127.0.0.1", port=0)
    metrics_port = free_port()
    env = dict(
        os.environ,
        RTMSFLOW_KAFKA_BOOTSTRAP=bootstrap,
        RTMSFLOW_TOPIC_PREFIX=settings.topic_prefix,
        RTMSFLOW_PARTITIONS=str(settings.partitions),
        ZM_RTMS_CLIENT=CLIENT_ID,
        ZM_RTMS_SECRET=CLIENT_SECRET,
        RTMSFLOW_ALLOWED_HOSTS="127.0.0.1",
        RTMSFLOW_ALLOW_INSECURE_WS="1",
        RTMSFLOW_INGEST_BACKEND=args.backend,
        RTMSFLOW_METRICS_PORT=str(metrics_port),
        RTMSFLOW_HTTP_HOST="127.0.0.1",
        RTMSFLOW_INGEST_GROUP=f"bench-{uuid.uuid4().hex[:8]}",
        RTMSFLOW_LOG_LEVEL="WARNING",
    )
    logs = Path(tempfile.mkdtemp(prefix="ingest-bench-"))
    worker_log = await asyncio.to_thread(open, logs / "worker.log", "wb")
    emulator_err = await asyncio.to_thread(open, logs / "emulator.log", "wb")
    profile = ["-m", "cProfile", "-o", f"{args.profile_worker}.{n}"] if args.profile_worker else []
    worker = await asyncio.create_subprocess_exec(
        sys.executable,
        *profile,
        "-m",
        "rtmsflow.cli",
        "ingest",
        "worker",
        env=env,
        stdout=worker_log,
        stderr=subprocess.STDOUT,
        preexec_fn=pinned(args.worker_cpu),
    )
    emulator: asyncio.subprocess.Process | None = None
    lat = Latencies()
    stop = asyncio.Event()
    consumer_ready = asyncio.Event()
    consumer = asyncio.create_task(consume(settings, n, lat, stop, consumer_ready))
    samples: list[Sample] = []
    status: dict[str, Any] = {}
    keep_logs = True  # until the step succeeded
    try:
        await _wait_health(metrics_port, worker)
        await asyncio.wait_for(consumer_ready.wait(), 60)
        meeting_s = args.duration + args.warmup + args.connect_s + 5
        emulator = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "benchmarks.ingest_bench",
            "--role",
            "emulator",
            "--meetings",
            str(n),
            "--meeting-s",
            str(meeting_s),
            "--webhook",
            f"http://127.0.0.1:{hook_port}/webhook",
            "--seed",
            str(args.seed),
            "--distinct",
            str(args.distinct),
            "--connect-s",
            str(args.connect_s),
            stdout=asyncio.subprocess.PIPE,
            stderr=emulator_err,
            preexec_fn=pinned(args.emulator_cpu),
            limit=1 << 20,
        )
        assert emulator.stdout is not None
        status_task = asyncio.create_task(_follow(emulator.stdout, status))
        log(f"{n} meetings, backend {args.backend}: emulator pid {emulator.pid}, worker pid {worker.pid}")
        started = time.monotonic()
        all_active_at: float | None = None
        while True:
            await asyncio.sleep(1.0)
            samples.append(await _sample(status, metrics_port, worker.pid, emulator.pid, broker_pid, lat))
            active = samples[-1].active
            if all_active_at is None and active >= n:
                all_active_at = time.monotonic()
                log(f"all {n} meetings streaming after {all_active_at - started:.1f} s")
            elif all_active_at is None and time.monotonic() - started > args.connect_s:
                all_active_at = time.monotonic()
                log(f"only {active}/{n} meetings connected after {args.connect_s:.0f} s; measuring what runs")
            if all_active_at is not None and time.monotonic() >= all_active_at + args.warmup + args.duration:
                break
            if worker.returncode is not None:
                raise RuntimeError(f"worker exited with {worker.returncode}; see {logs / 'worker.log'}")
            if emulator.returncode is not None:
                raise RuntimeError(f"emulator exited with {emulator.returncode}; see {logs / 'emulator.log'}")
        result = summarize(n, args, samples, lat)
        status_task.cancel()
        keep_logs = False
        return result
    finally:
        stop.set()
        await asyncio.gather(consumer, return_exceptions=True)
        if emulator is not None and emulator.returncode is None:
            emulator.send_signal(signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(emulator.wait(), 30)
            if emulator.returncode is None:
                emulator.kill()
                await emulator.wait()
        await asyncio.sleep(2)  # let the worker write the end-of-stream markers
        if worker.returncode is None:
            worker.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(worker.wait(), 60)
            except TimeoutError:
                worker.kill()
                await worker.wait()
        worker_log.close()
        emulator_err.close()
        await webhook.stop()
        from schemas.topics import ALL_TOPICS as topics

        await delete_topics(settings, [t.full_name(settings.topic_prefix) for t in topics])
        if keep_logs:
            log(f"logs of this step: {logs}")
        else:
            await asyncio.to_thread(shutil.rmtree, logs, True)


async def _wait_health(port: int, worker: asyncio.subprocess.Process) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as http:
        for _ in range(600):
            if worker.returncode is not None:
                raise RuntimeError(f"worker exited with {worker.returncode} before it was ready")
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(f"http://127.0.0.1:{port}/health") as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.1)
    raise RuntimeError("worker not healthy after 60 s")


async def _follow(stream: asyncio.StreamReader, status: dict[str, Any]) -> None:
    async for line in stream:
        with contextlib.suppress(ValueError):
            new = json.loads(line)
            if "t_ms" in new and "t_ms" in status and new["t_ms"] > status["t_ms"]:
                delta = sum(new["sent"].values()) - sum(status["sent"].values())
                status["_rate"] = 1000 * delta / (new["t_ms"] - status["t_ms"])
            status.update(new)


async def _sample(
    status: dict[str, Any], port: int, worker: int, emulator: int, broker: int | None, lat: Latencies
) -> Sample:
    try:
        m = await scrape(port)
    except Exception:
        m = {}
    read = await lat.refresh()
    handed = sum(v for k, v in m.items() if k.startswith("rtmsflow_ingest_frames_total"))
    acked = sum(
        v
        for k, v in m.items()
        if k.startswith("rtmsflow_ingest_produce_latency_seconds_count") and 'topic="events"' not in k
    )
    # the emulator's count as of its last status line, carried forward to now at its recent rate
    sent = sum(status.get("sent", {}).values())
    rate = status.get("_rate", 0.0)
    sent += int(rate * max(0, now_ms() - status.get("t_ms", now_ms())) / 1000)
    r = resource.getrusage(resource.RUSAGE_SELF)
    return Sample(
        t_ms=now_ms(),
        sent=sent,
        handed=int(handed),
        acked=int(acked),
        read=read,
        active=int(status.get("states", {}).get("active", 0)),
        worker_cpu_s=proc_cpu_s(worker),
        worker_main_cpu_s=proc_cpu_s(worker, children=False),
        emulator_cpu_s=proc_cpu_s(emulator),
        broker_cpu_s=proc_cpu_s(broker) if broker else 0.0,
        self_cpu_s=r.ru_utime + r.ru_stime,
        machine=machine_busy(),
        late=int(status.get("late", 0)),
        max_late_ms=float(status.get("max_late_ms", 0.0)),
    )


def summarize(n: int, args: argparse.Namespace, samples: list[Sample], lat: Latencies) -> StepResult:
    """The measured window is the last `--duration` seconds (after connect and warm-up)."""
    window = samples[-(int(args.duration) + 1) :]
    a, b = window[0], window[-1]
    secs = (b.t_ms - a.t_ms) / 1000
    # media frames only on both sides: the emulator's `sent` counts audio/video/transcript; the
    # worker's `handed` counts those plus events (a handful), which we leave in: they are tiny
    sent_rate = (b.sent - a.sent) / secs
    handed_rate = (b.handed - a.handed) / secs
    acked_rate = (b.acked - a.acked) / secs
    read_rate = (b.read - a.read) / secs
    backlog_start, backlog_end = a.sent - a.acked, b.sent - b.acked
    # flat, and not standing: a full queue that no longer grows is saturation too
    held_backlog = (
        backlog_end - backlog_start < HELD_BACKLOG_S * sent_rate and backlog_end < HELD_BACKLOG_S * sent_rate
    )
    worker_cores = (b.worker_cpu_s - a.worker_cpu_s) / secs
    # per meeting-second of media actually handled: a saturated worker handles fewer than N
    handled_meetings = acked_rate / (sent_rate / n) if sent_rate else 0.0
    per_meeting_ms = 1000 * worker_cores / handled_meetings if handled_meetings else 0.0
    t0, t1 = a.t_ms // 1000, b.t_ms // 1000 + 1
    ingest = Latencies.between(lat.ingest, t0, t1)
    rtms = Latencies.between(lat.rtms, t0, t1)
    emulator_late = b.late - a.late
    # The offered load must be the nominal one (50 audio + FPS video frames per meeting-second,
    # plus a few transcripts); a late emulator frame is only a pacing hiccup, reported, not a verdict.
    offered_ok = sent_rate >= 0.98 * n * (50 + FPS)
    connected_ok = b.active >= n
    held = held_backlog and connected_ok and offered_ok
    verdict = (
        "held"
        if held
        else "not all meetings connected"
        if not connected_ok
        else "emulator offered less than the nominal load"
        if not offered_ok
        else "backlog grew"
        if backlog_end - backlog_start >= HELD_BACKLOG_S * sent_rate
        else "standing backlog (saturated)"
    )
    busy = (b.machine[0] - a.machine[0]) / max(1.0, b.machine[1] - a.machine[1])
    series = [
        {
            "t_s": round((s.t_ms - samples[0].t_ms) / 1000, 1),
            "active": s.active,
            "sent": s.sent,
            "handed": s.handed,
            "acked": s.acked,
            "read": s.read,
            "backlog": s.sent - s.acked,
            "worker_cpu_s": round(s.worker_cpu_s, 2),
        }
        for s in samples
    ]
    return StepResult(
        backend=args.backend,
        meetings=n,
        held=held,
        verdict=verdict,
        window_s=round(secs, 1),
        connected=b.active,
        sent_per_s=round(sent_rate),
        handed_per_s=round(handed_rate),
        acked_per_s=round(acked_rate),
        read_per_s=round(read_rate),
        backlog_start=backlog_start,
        backlog_end=backlog_end,
        worker_cores=round(worker_cores, 3),
        worker_main_cores=round((b.worker_main_cpu_s - a.worker_main_cpu_s) / secs, 3),
        worker_ms_per_meeting_s=round(per_meeting_ms, 3),
        meetings_per_core=round(1000 / per_meeting_ms, 1) if per_meeting_ms else 0.0,
        latency_ms={
            "p50": pct(ingest, 0.50),
            "p99": pct(ingest, 0.99),
            "max": float(ingest[-1]) if ingest else None,
            "samples": len(ingest),
        },
        rtms_to_readable_ms={
            "p50": pct(rtms, 0.50),
            "p99": pct(rtms, 0.99),
            "max": float(rtms[-1]) if rtms else None,
        },
        emulator_cores=round((b.emulator_cpu_s - a.emulator_cpu_s) / secs, 3),
        emulator_late_frames=emulator_late,
        emulator_max_late_ms=b.max_late_ms,
        broker_cores=round((b.broker_cpu_s - a.broker_cpu_s) / secs, 3),
        bench_cores=round((b.self_cpu_s - a.self_cpu_s) / secs, 3),
        machine_busy=round(busy, 3),
        series=series,
    )


def table_row(r: StepResult) -> str:
    lat = r.latency_ms
    return (
        f"{r.backend:9} {r.meetings:5d} {r.connected:5d}  {r.verdict[:24]:24} "
        f"{r.sent_per_s:8.0f} {r.acked_per_s:8.0f} {r.backlog_end - r.backlog_start:7d} "
        f"{r.worker_cores:6.2f} {r.worker_ms_per_meeting_s:7.2f} {r.meetings_per_core:7.0f} "
        f"{lat['p50'] or 0:6.0f} {lat['p99'] or 0:6.0f} {r.emulator_cores:5.2f} {r.broker_cores:5.2f} "
        f"{r.bench_cores:5.2f} {r.machine_busy:5.2f}"
    )


HEADER = (
    "backend   meets  conn  verdict                    sent/s  acked/s  dbacklog "
    "cores  ms/m-s  m/core   p50ms  p99ms  emu  brokr bench  busy"
)


async def orchestrate(args: argparse.Namespace) -> int:
    if args.pin_others is not None:
        pin_all_threads(os.getpid(), args.pin_others)
    broker = None
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP") or os.environ.get("RTMSFLOW_KAFKA_BOOTSTRAP") or ""
    broker_pid: int | None = None
    state = None
    if not bootstrap:
        from rtmsflow.broker import LocalKafka

        state = tempfile.mkdtemp(prefix="ingest-bench-kafka-")
        broker = LocalKafka(state, heap=args.broker_heap)
        broker.fetch()
        bootstrap = await asyncio.to_thread(broker.start, 120, die_with_caller=True)
        broker_pid = broker.pid()
        where = "not pinned: it shares the machine's cores"
        if args.pin_others is not None and broker_pid:
            pin_all_threads(broker_pid, args.pin_others)
            where = f"pinned to CPU {args.pin_others}"
        log(f"local Kafka at {bootstrap} (pid {broker_pid}, {where})")
    else:
        log(f"Kafka at {bootstrap} (KAFKA_BOOTSTRAP; its CPU is not measured)")
    counts = [int(x) for x in str(args.meetings).split(",")]
    results: list[StepResult] = []
    try:
        queue = list(counts)
        while queue:
            n = queue.pop(0)
            result = await run_step(n, args, bootstrap, broker_pid)
            results.append(result)
            print(json.dumps(dataclasses.asdict(result)), flush=True)
            log(HEADER)
            log(table_row(result))
            if args.find_max and not queue:
                if result.held:
                    queue.append(max(n + 1, int(n * 1.25)))
    finally:
        if broker is not None:
            await asyncio.to_thread(broker.stop)
        if state is not None:
            await asyncio.to_thread(shutil.rmtree, state, True)
    held = [r for r in results if r.held]
    best = max(held, key=lambda r: r.meetings) if held else None
    summary = {
        "summary": True,
        "backend": args.backend,
        "max_meetings_held": best.meetings if best else 0,
        "meetings_per_core_at_max": best.meetings_per_core if best else None,
        "p99_ms_at_max": best.latency_ms["p99"] if best else None,
        "steps": [(r.meetings, r.verdict) for r in results],
    }
    print(json.dumps(summary), flush=True)
    log(HEADER)
    for r in results:
        log(table_row(r))
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.ingest_bench", description=__doc__.splitlines()[0])
    p.add_argument("--meetings", default="200", help="meetings per step, comma-separated (default 200)")
    p.add_argument("--duration", type=float, default=30.0, help="measured seconds per step")
    p.add_argument("--warmup", type=float, default=10.0, help="seconds after all meetings connected")
    p.add_argument("--connect-s", type=float, default=60.0, help="max seconds for the meetings to connect")
    p.add_argument("--backend", choices=("websocket", "sdk"), default="websocket")
    p.add_argument("--find-max", action="store_true", help="after the listed steps, x1.25 while held")
    p.add_argument("--emulator-cpu", type=int, default=0)
    p.add_argument("--worker-cpu", type=int, default=1)
    p.add_argument("--broker-heap", default="1g")
    p.add_argument(
        "--pin-others",
        type=int,
        metavar="CPU",
        help="also pin the local broker and this process (webhooks, reading consumer) to CPU, "
        "e.g. the emulator's, so the worker's core is its own (default: they float)",
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--distinct",
        type=int,
        default=10,
        help="distinct meetings (seeds) the emulator plays round robin; equal ones share their wire text "
        "(0: every meeting its own; default 10)",
    )
    p.add_argument("--profile-worker", metavar="PATH", help="run the worker under cProfile (PATH.<meetings>)")
    # the emulator process's own arguments
    p.add_argument("--role", choices=("bench", "emulator"), default="bench", help=argparse.SUPPRESS)
    p.add_argument("--meeting-s", type=float, default=60.0, help=argparse.SUPPRESS)
    p.add_argument("--webhook", default="", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.role == "emulator":
        args.meetings = int(args.meetings)
        asyncio.run(emulator_main(args))
        return 0
    return asyncio.run(orchestrate(args))


if __name__ == "__main__":
    sys.exit(main())
