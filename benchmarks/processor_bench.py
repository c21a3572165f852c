"""Processors: events/s of one worker on one core, added latency raw -> ordered, RSS by stream length.

    python -m benchmarks.processor_bench [--streams 200] [--lengths 30,120] [--latency-seconds 30]

How it measures: BENCHMARKS.md, "How each bench measures", processor_bench.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import dataclasses
import gc
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rtmsflow.kafka_client import bootstrap_servers

ROOT = Path(__file__).resolve().parents[1]
T0 = 1_747_316_541_000
RAW = ("rtms.raw.audio", "rtms.raw.video", "rtms.raw.transcript", "rtms.raw.events", "rtms.raw.chat")
ORDERED = ("rtms.audio", "rtms.video", "rtms.transcript", "rtms.events", "rtms.chat")
AUDIO_MEDIA = {"codec": "L16", "sample_rate": 16000, "channels": 1, "send_rate_ms": 20, "mixed": True}
WORDS = ("so", "the", "numbers", "for", "this", "quarter", "look", "fine")
TICK = os.sysconf("SC_CLK_TCK")
# --help's epilog: the usage examples besides the head's, then the head's pointer to the method
EXAMPLES = """\
    python -m benchmarks.processor_bench --faust-baseline      # the decision's measurement
    python -m benchmarks.processor_bench --lengths 20 --latency-seconds 0 --profile /tmp/p.prof
"""


@dataclass(frozen=True)
class Mix:
    """What each synthetic stream carries."""

    streams: int
    seconds: float
    video_fps: int = 25
    video_bytes: int = 2_500  # a 360p P-frame; sink_bench's default resolution
    text: bool = True  # transcript pieces (2/s) and events (4 per stream)
    names: tuple[str, ...] = ()  # the meetings' names, when not the default ones

    def meeting(self, i: int) -> str:
        if self.names:
            return self.names[i]
        return f"bench{i:05d}-{uuid.UUID(int=i * 7919 + 1).hex[:16]}=="


WARM_PREFIX = "warm"


def warm_up_mix(partitions: int) -> Mix:
    """One short stream on every partition: the first records a topic partition ever gets wait
    for the broker (0.2-0.6 s, once in the partition's life), which a running deployment has long
    paid; the latency run writes these first and leaves them out of its figures."""
    from schemas.topics import partition_for

    names: dict[int, str] = {}
    i = 0
    while len(names) < partitions:
        name = f"{WARM_PREFIX}{i:05d}-{uuid.UUID(int=i * 104729 + 3).hex[:16]}=="
        names.setdefault(partition_for(name, partitions), name)
        i += 1
    return Mix(partitions, 2.0, names=tuple(names[p] for p in sorted(names)))


def stream_frames(mix: Mix, i: int, frame: int) -> Iterator[tuple[str, dict[str, Any]]]:
    """Stream `i`'s raw records of 20 ms step `frame` (raw topic, value)."""
    ts = T0 + frame * 20
    stamp = {"meeting_uuid": mix.meeting(i), "rtms_stream_id": "s1", "stream_started_ms": T0,
             "ingest_epoch": 1, "timestamp_ms": ts, "received_at_ms": ts + 5}  # fmt: skip
    yield "rtms.raw.audio", {**stamp, "stream_kind": "AUDIO", "participant_id": 0, "ingest_seq": frame,
                             "payload": bytes([i % 251]) * 640, "media": AUDIO_MEDIA}  # fmt: skip
    if mix.video_fps and (frame * 20 * mix.video_fps) // 1000 != ((frame - 1) * 20 * mix.video_fps) // 1000:
        n = (frame * 20 * mix.video_fps) // 1000
        key = n % (2 * mix.video_fps) == 0
        yield "rtms.raw.video", {**stamp, "stream_kind": "VIDEO", "participant_id": 1, "ingest_seq": n,
            "payload": b"\x00\x00\x00\x01" + (b"\x65" if key else b"\x41") + bytes([n % 251]) * (mix.video_bytes - 5),
            "keyframe": key, "has_parameter_sets": key,
            "media": {"codec": "H264", "width": 640, "height": 360, "fps": mix.video_fps, "mode": "ACTIVE_SPEAKER"}}  # fmt: skip
    if mix.text and frame % 25 == 0:
        n = frame // 25
        yield "rtms.raw.transcript", {**stamp, "stream_kind": "TRANSCRIPT", "participant_id": 1 + n // 8 % 2,
            "participant_name": "Speaker", "ingest_seq": n, "text": WORDS[n % len(WORDS)], "language": 9,
            "start_time_ms": ts, "end_time_ms": ts + 400}  # fmt: skip
    last = int(mix.seconds * 50) - 1
    if mix.text and frame in (0, last // 3, 2 * last // 3, last):
        n = (0, last // 3, 2 * last // 3, last).index(frame)
        yield "rtms.raw.events", {**stamp, "stream_kind": "EVENT", "ingest_seq": n, "msg_type": 6 if n else 0,
            "name": ("rtms_started", "participant_join", "active_speaker", "participant_leave")[n],
            "participants": [{"user_id": 1, "user_name": "Speaker"}], "body": "{}"}  # fmt: skip


class Writer:
    """Produces raw records (encoded, each meeting in its partition) and the markers at the end."""

    def __init__(self, settings: Any, mix: Mix) -> None:
        from schemas.codec import Codec
        from schemas.topics import partition_for

        self.settings, self.mix = settings, mix
        self.codec = Codec(settings.schema_registry_url, settings.topic_prefix)
        self.parts = [partition_for(mix.meeting(i), settings.partitions) for i in range(mix.streams)]
        self.counts: list[dict[str, dict[str, int]]] = [{} for _ in range(mix.streams)]
        self.sent = 0
        self.producer: Any = None
        self.futures: list[tuple[tuple[str, str, int], asyncio.Future[Any]]] = []

    async def __aenter__(self) -> Writer:
        from aiokafka import AIOKafkaProducer

        self.producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers(self.settings), linger_ms=5,
                                         max_batch_size=1 << 20, max_request_size=8 << 20)  # fmt: skip
        await self.producer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.producer.flush()
        await self.producer.stop()

    async def step(self, i: int, frame: int, keep_times: bool = False) -> None:
        """Send stream `i`'s records of 20 ms step `frame`."""
        prefix, meeting = self.settings.topic_prefix, self.mix.meeting(i)
        for base, value in stream_frames(self.mix, i, frame):
            topic = prefix + base
            fut = await self.producer.send(topic, self.codec.encode(topic, value), key=meeting.encode(),
                                           partition=self.parts[i])  # fmt: skip
            c = self.counts[i].setdefault(base, {})
            c[value["stream_kind"]] = c.get(value["stream_kind"], 0) + 1
            self.sent += 1
            if keep_times and base in ("rtms.raw.audio", "rtms.raw.video"):
                self.futures.append(((meeting, value["stream_kind"], value["timestamp_ms"]), fut))

    async def markers(self) -> None:
        """One end-of-stream marker per stream and raw topic, with the stream's counts."""
        from schemas.markers import marker_headers

        last = T0 + (int(self.mix.seconds * 50) - 1) * 20
        for i in range(self.mix.streams):
            for base in RAW:
                end = {"meeting_uuid": self.mix.meeting(i), "rtms_stream_id": "s1", "topic": base,
                       "ended": "STOPPED", "stop_reason": 6, "stream_started_ms": T0, "last_timestamp_ms": last,
                       "ingest_epoch": 1, "counts": self.counts[i].get(base, {}), "complete": True}  # fmt: skip
                await self.producer.send(self.settings.topic_prefix + base, None, key=self.mix.meeting(i).encode(),
                                         partition=self.parts[i], headers=marker_headers(end))  # fmt: skip

    async def raw_times(self) -> dict[tuple[str, str, int], int]:
        """(meeting, kind, timestamp_ms) -> the raw record's LogAppendTime."""
        return {k: (await f).timestamp for k, f in self.futures}


async def prewrite(settings: Any, mix: Mix) -> int:
    """All streams, interleaved in media time, then the markers; returns the raw record count."""
    async with Writer(settings, mix) as w:
        for frame in range(int(mix.seconds * 50)):
            for i in range(mix.streams):
                await w.step(i, frame)
        await w.markers()
        return w.sent


async def produce_real_time(w: Writer, mix: Mix) -> dict[str, float]:
    """Each stream's 20 ms steps at their real-time instants (phases spread over 20 ms)."""
    buckets = [[i for i in range(mix.streams) if i % 10 == b] for b in range(10)]
    start = time.monotonic() + 0.2
    start_wall_ms = time.time() * 1000 + 200
    behind = 0.0
    for k in range(int(mix.seconds * 50) * 10):
        due = start + k * 0.002
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            behind = max(behind, -delay)
        for i in buckets[k % 10]:
            await w.step(i, k // 10, keep_times=True)
    wall = time.monotonic() - start
    await w.markers()
    return {"rate_per_s": round(w.sent / wall), "max_behind_ms": round(behind * 1000, 1),
            "start_wall_ms": start_wall_ms, "wall_s": wall}  # fmt: skip


class Watcher:
    """Reads the ordered topics from their start: counts, first and last append times, markers,
    and (with `decode`) each audio/video record's (meeting, kind, timestamp) and append time."""

    def __init__(
        self, settings: Any, expect_markers: int, decode: bool = False, topics: tuple[str, ...] = ORDERED
    ):
        self.settings, self.expect, self.decode, self.bases = settings, expect_markers, decode, topics
        self.count = self.markers = 0
        self.first_ms: int | None = None
        self.last_marker_ms = 0
        self.appended: list[tuple[tuple[str, str, int], int]] = []
        self.done = asyncio.Event()
        self.marker_seen = asyncio.Event()

    async def run(self, deadline_s: float) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        from schemas.codec import Codec

        codec = Codec(self.settings.schema_registry_url, self.settings.topic_prefix)
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers(self.settings), enable_auto_commit=False,
                                    auto_offset_reset="earliest", fetch_max_bytes=64 << 20)  # fmt: skip
        await consumer.start()
        try:
            consumer.assign([TopicPartition(self.settings.topic_prefix + b, p)
                             for b in self.bases for p in range(self.settings.partitions)])  # fmt: skip
            async with asyncio.timeout(deadline_s):
                while self.markers < self.expect:
                    batch = await consumer.getmany(timeout_ms=200, max_records=20_000)
                    for tp, records in batch.items():
                        media = self.decode and tp.topic.endswith(("rtms.audio", "rtms.video"))
                        for r in records:
                            assert r.timestamp_type == 1, "bench topics use LogAppendTime"
                            self.count += 1
                            if self.first_ms is None or r.timestamp < self.first_ms:
                                self.first_ms = r.timestamp
                            if r.value is None:
                                self.markers += 1
                                self.marker_seen.set()
                                self.last_marker_ms = max(self.last_marker_ms, r.timestamp)
                            elif media:
                                v = codec.decode(tp.topic, r.value)
                                if v["gap"] is None:
                                    key = (v["meeting_uuid"], v["stream_kind"], v["timestamp_ms"])
                                    self.appended.append((key, r.timestamp))
        finally:
            await consumer.stop()
            self.done.set()


class Probe:
    """Samples a process's CPU seconds and RSS every 20 ms (for figures between two wall times)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[tuple[float, float, int]] = []  # (wall ms, cpu s, rss kB)
        self.hwm_kb = 0

    def sample(self) -> None:
        try:
            stat = Path(f"/proc/{self.pid}/stat").read_text()
            status = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return
        fields = stat[stat.rindex(")") + 2 :].split()
        cpu = (int(fields[11]) + int(fields[12])) / TICK
        rss = hwm = 0
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
        self.hwm_kb = max(self.hwm_kb, hwm)
        self.samples.append((time.time() * 1000, cpu, rss))

    async def run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(0.02)

    def rss_by_quarter(self, start_ms: float, end_ms: float) -> list[float]:
        """RSS (MB) at the start, 1/4, 1/2, 3/4 and end of [start_ms, end_ms]: a steady climb is
        memory growing with the stream length, a plateau buffers filling once."""
        marks = [start_ms + (end_ms - start_ms) * q / 4 for q in range(5)]
        return [round(min(self.samples, key=lambda s: abs(s[0] - m))[2] / 1024, 1) for m in marks]

    def cpu_at(self, wall_ms: float) -> float:
        """CPU seconds at a wall time, interpolated between samples."""
        before = [s for s in self.samples if s[0] <= wall_ms] or self.samples[:1]
        after = [s for s in self.samples if s[0] >= wall_ms] or self.samples[-1:]
        a, b = before[-1], after[0]
        if b[0] == a[0]:
            return a[1]
        return a[1] + (b[1] - a[1]) * (wall_ms - a[0]) / (b[0] - a[0])


class MachineLoad:
    """Load average and how busy all cores were (from /proc/stat) over a run."""

    def __init__(self) -> None:
        self.start = self._busy()

    @staticmethod
    def _busy() -> tuple[int, int]:
        cpu = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = cpu[3] + cpu[4]
        return sum(cpu) - idle, sum(cpu)

    def figures(self) -> dict[str, Any]:
        busy, total = self._busy()
        frac = (busy - self.start[0]) / max(1, total - self.start[1])
        return {"machine_busy": round(frac, 2), "loadavg_1m": round(os.getloadavg()[0], 2)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_worker(
    settings: Any, workdir: Path, cpu: str, faust_baseline: bool = False, profile: str | None = None
) -> tuple[subprocess.Popen[bytes], int]:
    """`rtmsflow process` (or the Faust baseline) pinned to `cpu`, its cwd (Faust's data dir) in
    `workdir`, under cProfile writing to `profile` if given; returns the process and its web port."""
    port = free_port()
    env = {**os.environ, "RTMSFLOW_TOPIC_PREFIX": settings.topic_prefix, "RTMSFLOW_KAFKA_BOOTSTRAP": bootstrap_servers(settings),
           "RTMSFLOW_PARTITIONS": str(settings.partitions), "PYTHONPATH": str(ROOT)}  # fmt: skip
    group = f"bench-{uuid.uuid4().hex[:8]}"
    if faust_baseline:
        cmd = [
            sys.executable,
            "-m",
            "benchmarks.processor_bench",
            "--faust-worker",
            group,
            "--port",
            str(port),
        ]
    else:
        cmd = [sys.executable, "-m", "rtmsflow.cli", "process", "--group", group, "--metrics-port", str(port)]
    if profile:  # the stats are written when the worker exits on stop_worker's SIGTERM
        cmd[1:1] = ["-m", "cProfile", "-o", str(Path(profile).resolve())]
    log = (workdir / "worker.log").open("ab")
    proc = subprocess.Popen(
        ["taskset", "-c", cpu, *cmd], cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    return proc, port


def stop_worker(proc: subprocess.Popen[bytes], workdir: Path) -> None:
    """Stop it; if the run failed (an exception is being handled), show the end of its log."""
    if sys.exc_info()[0] is not None:
        lines = (workdir / "worker.log").read_text(errors="replace").splitlines()
        print("worker log (end):", *lines[-40:], sep="\n", file=sys.stderr)
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def bench_topics(settings: Any) -> Any:
    """Fresh prefix; every topic created, raw and ordered ones with LogAppendTime."""
    from rtmsflow.admin import ensure_topics
    from schemas.topics import ALL_TOPICS

    settings = dataclasses.replace(settings, topic_prefix=f"pbench{uuid.uuid4().hex[:8]}.")
    timed = set(RAW) | set(ORDERED)
    specs = [dataclasses.replace(s, configs={**s.configs, "message.timestamp.type": "LogAppendTime"})
             if s.name in timed else s for s in ALL_TOPICS]  # fmt: skip
    await ensure_topics(settings, specs)
    return settings


async def drop_topics(settings: Any) -> None:
    from rtmsflow.admin import delete_topics
    from schemas.topics import ALL_TOPICS

    await delete_topics(settings, [s.full_name(settings.topic_prefix) for s in ALL_TOPICS])


async def throughput(
    base: Any, mix: Mix, cpu: str, faust_baseline: bool = False, profile: str | None = None
) -> dict[str, Any]:
    """Pre-write, then one worker on `cpu`: events/s, per CPU-second, RSS."""
    settings = await bench_topics(base)
    try:
        t0 = time.perf_counter()
        n = await prewrite(settings, mix)
        print(f"  {n:,} raw records written in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        topics = ("rtms.audio", "rtms.video") if faust_baseline else ORDERED
        watcher = Watcher(settings, mix.streams * len(topics), topics=topics)
        load = MachineLoad()
        with tempfile.TemporaryDirectory(prefix="pbench-") as work:
            proc, _ = start_worker(settings, Path(work), cpu, faust_baseline, profile)
            probe = Probe(proc.pid)
            sampler = asyncio.create_task(probe.run())
            try:
                await watcher.run(deadline_s=120 + n / 200)  # only a hang: a loaded machine is slow
                probe.sample()
            finally:
                sampler.cancel()
                stop_worker(proc, Path(work))
        assert watcher.first_ms is not None
        span_s = (watcher.last_marker_ms - watcher.first_ms) / 1000
        cpu_s = probe.cpu_at(watcher.last_marker_ms) - probe.cpu_at(watcher.first_ms)
        return {
            "shell": "faust agent" if faust_baseline else "batch loop (rtmsflow process)",
            "streams": mix.streams, "seconds": mix.seconds, "raw_records": n, "out_records": watcher.count,
            "events_per_s": round(n / span_s), "cpu_s": round(cpu_s, 1), "events_per_cpu_s": round(n / max(cpu_s, 1e-3)),
            "cpu_ms_per_1000": round(cpu_s * 1e6 / n, 1),
            "peak_rss_mb": round(probe.hwm_kb / 1024, 1), "rss_mb_by_quarter": probe.rss_by_quarter(watcher.first_ms, watcher.last_marker_ms),
            **load.figures(),
        }  # fmt: skip
    finally:
        await drop_topics(settings)


async def wait_healthy(port: int, partitions: int, deadline_s: float = 120) -> None:
    """Until the worker's /health says it holds every partition."""
    import aiohttp

    async with asyncio.timeout(deadline_s), aiohttp.ClientSession() as http:
        while True:
            try:
                async with http.get(f"http://127.0.0.1:{port}/health") as r:
                    if r.status == 200 and len((await r.json())["partitions"]) == partitions:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.25)


async def latency(base: Any, mix: Mix, cpu: str, warm_up: bool = True) -> dict[str, Any]:
    """Real-time streams through a running worker: added latency raw -> ordered, p50/p99 (after
    a warm-up stream on every partition unless `warm_up` is False: see `warm_up_mix`)."""
    settings = await bench_topics(base)
    try:
        with tempfile.TemporaryDirectory(prefix="pbench-") as work:
            proc, port = start_worker(settings, Path(work), cpu)
            probe = Probe(proc.pid)
            sampler = asyncio.create_task(probe.run())
            try:
                await wait_healthy(port, settings.partitions)
                warm = warm_up_mix(settings.partitions) if warm_up else None
                expect = (mix.streams + (warm.streams if warm else 0)) * len(ORDERED)
                watcher = Watcher(settings, expect, decode=True)
                watching = asyncio.create_task(watcher.run(deadline_s=mix.seconds + 120))
                if warm is not None:
                    async with Writer(settings, warm) as w:
                        await produce_real_time(w, warm)
                    async with asyncio.timeout(60):  # its end of stream is written, its cycle done
                        while watcher.markers < warm.streams * len(ORDERED):
                            watcher.marker_seen.clear()
                            await watcher.marker_seen.wait()
                    await asyncio.sleep(settings.process_commit_interval_ms / 1000)
                load = MachineLoad()
                cpu0 = probe.samples[-1][1]
                # the bench's own collector off while it paces the input: its full collections
                # (the appended times it keeps grow) took 40-240 ms every ~6 s, a stall of the
                # producer that reads as latency of the frames whose window it was to close
                gc.disable()
                try:
                    async with Writer(settings, mix) as w:
                        pace = await produce_real_time(w, mix)
                        end_wall_ms = time.time() * 1000
                finally:
                    gc.enable()
                await watching
                probe.sample()
                start_wall_ms, wall_s = pace.pop("start_wall_ms"), pace.pop("wall_s")
                # the worker's CPU while the streams played (from /proc, interpolated at both ends)
                live_cpu_s = probe.cpu_at(start_wall_ms + wall_s * 1000) - probe.cpu_at(start_wall_ms)
                cycles = await cycle_figures(port)
                raw = await w.raw_times()
            finally:
                sampler.cancel()
                stop_worker(proc, Path(work))
        watcher.appended = [(k, t) for k, t in watcher.appended if not k[0].startswith(WARM_PREFIX)]
        # records appended in the last second had their window closed by the markers, not by media
        timed = sorted((raw[k], t - raw[k]) for k, t in watcher.appended if raw[k] < end_wall_ms - 1000)
        lat = sorted(d for _, d in timed)
        pick = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]  # noqa: E731
        # the run's first third apart from the rest: with `--cold`, the first sends to every fresh
        # output partition make a start-up backlog that is not the steady state
        third = len(timed) // 3
        rest = sorted(d for _, d in timed[third:])
        first = sorted(d for _, d in timed[:third])
        at = lambda xs, q: xs[min(len(xs) - 1, int(q * len(xs)))] if xs else None  # noqa: E731
        own = own_latency(raw, watcher.appended, settings.reorder_window_ms, end_wall_ms)
        own_rest = sorted(own[len(own) // 3 :])
        # by kind: a frame leaves when its lane's media time is `window` past it, so a 25 fps frame
        # waits for the frame 320 ms later (audio: 300 ms), 20 ms the window itself adds
        by_kind = {kind: sorted(t - raw[k] for k, t in watcher.appended
                                if k[1] == kind and raw[k] < end_wall_ms - 1000) for kind in ("AUDIO", "VIDEO")}  # fmt: skip
        return {
            "streams": mix.streams, "seconds": mix.seconds, **pace, "window_ms": settings.reorder_window_ms,
            "records_measured": len(lat), "p50_ms": pick(0.5), "p99_ms": pick(0.99), "max_ms": lat[-1],
            "first_third_p50_ms": at(first, 0.5), "rest_p50_ms": at(rest, 0.5), "rest_p99_ms": at(rest, 0.99),
            "own_p50_ms": at(sorted(own), 0.5), "own_p99_ms": at(sorted(own), 0.99), "own_max_ms": max(own, default=None),
            "rest_own_p99_ms": at(own_rest, 0.99), **cycles,
            **{f"{kind.lower()}_p{q}_ms": at(xs, q / 100) for kind, xs in by_kind.items() for q in (50, 99)},
            "worker_cpu_util": round((probe.samples[-1][1] - cpu0) / mix.seconds, 2),
            "worker_cpu_ms_per_s": round(1000 * live_cpu_s / wall_s, 1),
            "worker_cpu_ms_per_stream_s": round(1000 * live_cpu_s / (wall_s * mix.streams), 3),
            "peak_rss_mb": round(probe.hwm_kb / 1024, 1), **load.figures(),
        }  # fmt: skip
    finally:
        await drop_topics(settings)


def own_latency(
    raw: dict[tuple[str, str, int], int],
    appended: list[tuple[tuple[str, str, int], int]],
    window_ms: int,
    end_wall_ms: float,
) -> list[int]:
    """The worker's own share of each frame's added latency, in the order of the frames' raw append
    times: its ordered append minus the later of its raw append and the append of the first raw
    frame of its lane at least `window_ms` later in media time (what releases it: the worker cannot
    write it before that arrives). The rest of the added latency is the window and the input's own
    pace (a producer that falls behind delays the frame that closes the window)."""
    lanes: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for (meeting, kind, ts), t in raw.items():
        lanes.setdefault((meeting, kind), []).append((ts, t))
    closing: dict[tuple[str, str], tuple[list[int], list[int]]] = {}
    for lane, frames in lanes.items():
        frames.sort()
        mins, low = [0] * len(frames), None
        for i in range(len(frames) - 1, -1, -1):  # earliest append among the frames from i on
            low = frames[i][1] if low is None else min(low, frames[i][1])
            mins[i] = low
        closing[lane] = ([ts for ts, _ in frames], mins)
    out = []
    for (meeting, kind, ts), t in appended:
        stamps, mins = closing[(meeting, kind)]
        i = bisect.bisect_left(stamps, ts + window_ms)
        if i == len(stamps) or raw[(meeting, kind, ts)] >= end_wall_ms - 1000:
            continue  # released by the marker
        out.append((raw[(meeting, kind, ts)], t - max(raw[(meeting, kind, ts)], mins[i])))
    return [d for _, d in sorted(out)]


async def cycle_figures(port: int) -> dict[str, Any]:
    """The worker's commit cycles (acks awaited, state written, offsets committed; in the background
    since the loop stopped waiting for them) from its /metrics: how many, mean and how many took
    over 0.5 s."""
    import aiohttp

    values: dict[str, float] = {}
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/metrics") as r:
        for line in (await r.text()).splitlines():
            name, _, value = line.rpartition(" ")
            if name.startswith("rtmsflow_processors_cycle_seconds"):
                values[name] = float(value)
    count = values.get("rtmsflow_processors_cycle_seconds_count", 0.0)
    total = values.get("rtmsflow_processors_cycle_seconds_sum", 0.0)
    under = values.get('rtmsflow_processors_cycle_seconds_bucket{le="0.5"}', count)
    return {
        "cycles": int(count),
        "cycle_mean_ms": round(1000 * total / max(count, 1)),
        "cycles_over_500ms": int(count - under),
    }


def faust_worker(group: str, port: int) -> None:
    """The baseline: raw audio/video -> ordered, one tuned Faust agent (no gaps, no restart state)."""
    import faust

    from processors.app import logging_config
    from processors.reorder import Fate, ReorderBuffer
    from rtmsflow.settings import Settings
    from schemas.codec import Codec
    from schemas.identity import identity_digest
    from schemas.markers import read_marker

    settings = Settings.from_env()
    prefix = settings.topic_prefix
    app = faust.App(f"{prefix}{group}", broker=f"kafka://{bootstrap_servers(settings)}", store="memory://", web_port=port,
                    topic_disable_leader=True, topic_allow_declare=False, consumer_auto_offset_reset="earliest",
                    producer_linger_ms=5, producer_max_batch_size=1 << 20, stream_buffer_maxsize=32_768,
                    broker_max_poll_records=5_000)  # fmt: skip
    raw = app.topic(*(prefix + t for t in RAW[:2]), key_type=bytes, value_type=bytes,
                    key_serializer="raw", value_serializer="raw")  # fmt: skip
    out = {prefix + r: app.topic(prefix + o, key_type=bytes, value_type=bytes, key_serializer="raw",
                                 value_serializer="raw") for r, o in zip(RAW, ORDERED, strict=True)}  # fmt: skip
    codec = Codec(settings.schema_registry_url, settings.topic_prefix)

    @dataclass(slots=True)
    class Item:
        timestamp_ms: int
        digest: bytes
        value: dict[str, Any]
        event: Any

    lanes: dict[tuple[str, str, str], ReorderBuffer[Item]] = {}
    seqs: dict[tuple[str, str, str], int] = {}

    def acker(event: Any) -> Any:
        return lambda _fut: event.ack()

    @app.agent(raw)
    async def reorder(stream: Any) -> None:
        async for event in stream.noack().events():
            msg = event.message
            target = out[msg.topic]
            if event.value is None:  # a marker: flush its lanes, forward it
                end = read_marker(msg.headers or [])
                assert end is not None
                lane_key = (end["meeting_uuid"], end["rtms_stream_id"], msg.topic)
                released = lanes.pop(lane_key).flush() if lane_key in lanes else []
                for it in released:
                    await send(target, lane_key, it, msg.partition)
                await target.send(key=event.key, value=None, partition=msg.partition, headers=msg.headers,
                                  callback=acker(event), force=True)  # fmt: skip
                continue
            v = codec.decode(msg.topic, event.value)
            lane_key = (v["meeting_uuid"], v["rtms_stream_id"], msg.topic)
            lane = lanes.get(lane_key)
            if lane is None:
                lane = lanes[lane_key] = ReorderBuffer(settings.reorder_window_ms, settings.dedupe_horizon_ms)
            outcome = lane.push(Item(v["timestamp_ms"], identity_digest(v), v, event))
            if outcome.fate is not Fate.ACCEPTED:
                event.ack()
            for it in outcome.released:
                await send(target, lane_key, it, msg.partition)

    async def send(target: Any, lane_key: tuple[str, str, str], it: Item, partition: int) -> None:
        v = it.value
        seq = seqs.get(lane_key, 0)
        seqs[lane_key] = seq + 1
        frame = {**v, "seq": seq, "offset_ms": v["timestamp_ms"] - v["stream_started_ms"], "gap": None}
        await target.send(key=it.event.key, value=codec.encode(target.get_topic_name(), frame), partition=partition,
                          callback=acker(it.event), force=True)  # fmt: skip

    @app.task
    async def prepare() -> None:
        await codec.prepare([prefix + t for t in (*RAW[:2], *ORDERED[:2])])

    worker = faust.Worker(app, loglevel="WARNING", logging_config=logging_config("WARNING"), quiet=True,
                          redirect_stdouts=False, override_logging=True)  # fmt: skip
    worker.execute_from_commandline()


def summary(kind: str, r: dict[str, Any]) -> str:
    if kind == "latency":
        return (f"latency, {r['streams']} streams x {r['seconds']:g} s real time ({r['rate_per_s']:,} raw/s): "
                f"added p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, max {r['max_ms']} ms (window {r['window_ms']} ms; "
                f"first third p50 {r['first_third_p50_ms']} ms, the rest p50 {r['rest_p50_ms']} ms, p99 {r['rest_p99_ms']} ms; "
                f"audio p50/p99 {r['audio_p50_ms']}/{r['audio_p99_ms']} ms, video {r['video_p50_ms']}/{r['video_p99_ms']} ms); "
                f"the worker's own share (after the frame closing the window arrived): p50 {r['own_p50_ms']} ms, "
                f"p99 {r['own_p99_ms']} ms (the rest {r['rest_own_p99_ms']} ms), max {r['own_max_ms']} ms; "
                f"{r['cycles']} commit cycles, mean {r['cycle_mean_ms']} ms, {r['cycles_over_500ms']} over 0.5 s; "
                f"worker CPU {r['worker_cpu_util']}, {r['worker_cpu_ms_per_stream_s']} ms per stream-second "
                f"({r['worker_cpu_ms_per_s']} ms/s while the streams played), RSS peak {r['peak_rss_mb']} MB; "
                f"machine busy {r['machine_busy']}, load {r['loadavg_1m']}")  # fmt: skip
    return (f"{r['shell']}, {r['streams']} streams x {r['seconds']:g} s: {r['raw_records']:,} raw -> "
            f"{r['out_records']:,} out, {r['events_per_s']:,} events/s, {r['events_per_cpu_s']:,} per CPU-s "
            f"({r['cpu_ms_per_1000']} CPU ms per 1000), "
            f"RSS peak {r['peak_rss_mb']} MB (by quarter of the run: {r['rss_mb_by_quarter']}); "
            f"machine busy {r['machine_busy']}, load {r['loadavg_1m']}")  # fmt: skip


async def main(args: argparse.Namespace) -> list[dict[str, Any]]:
    from rtmsflow.settings import Settings

    base = Settings.from_env()
    results: list[dict[str, Any]] = []

    def report(kind: str, r: dict[str, Any]) -> None:
        print(summary(kind, r), file=sys.stderr)
        results.append({"run": kind, **r})

    if args.faust_baseline:
        mix = Mix(args.streams, args.faust_seconds, args.video_fps, args.video_bytes, text=False)
        for faust_shell in (True, False, True, False)[: 2 * args.repeat]:
            report("faust-baseline", await throughput(base, mix, args.cpu, faust_baseline=faust_shell))
        return results
    for seconds in [float(s) for s in args.lengths.split(",") if s]:
        mix = Mix(args.streams, seconds, args.video_fps, args.video_bytes)
        report("throughput", await throughput(base, mix, args.cpu, profile=args.profile))
    if args.latency_seconds:
        mix = Mix(args.latency_streams, args.latency_seconds, args.latency_video_fps, args.video_bytes)
        report("latency", await latency(base, mix, args.cpu, warm_up=not args.cold))
    return results


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=EXAMPLES + "\n" + __doc__.split("\n\n")[2])  # fmt: skip
    parser.add_argument("--streams", type=int, default=200, help="concurrent streams (throughput, RSS)")
    parser.add_argument(
        "--lengths", default="30,120", help="stream lengths in s, comma-separated ('' = none)"
    )
    parser.add_argument("--video-fps", type=int, default=25)
    parser.add_argument("--video-bytes", type=int, default=2_500)
    parser.add_argument(
        "--latency-streams",
        type=int,
        default=20,
        help="live streams (~77 raw records/s each: keep under what one worker moves, or it only falls behind)",
    )
    parser.add_argument("--latency-seconds", type=float, default=30, help="0 = no latency run")
    parser.add_argument("--latency-video-fps", type=int, default=25)
    parser.add_argument(
        "--cold", action="store_true", help="no warm-up stream before the latency run (fresh partitions)"
    )
    parser.add_argument("--faust-baseline", action="store_true", help="only: Faust agent vs batch loop")
    parser.add_argument(
        "--faust-seconds", type=float, default=20, help="stream length of the baseline's data"
    )
    parser.add_argument("--repeat", type=int, default=1, choices=(1, 2), help="baseline pairs to run")
    parser.add_argument("--cpu", default="1", help="the worker's CPU (taskset -c)")
    parser.add_argument(
        "--profile", default=None, help="cProfile the throughput worker into this file (slower)"
    )
    parser.add_argument("--faust-worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    # a fresh topic's first produce requests can meet NotLeaderForPartition: retried, not news
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    if args.faust_worker:
        faust_worker(args.faust_worker, args.port)
        return
    others = {c for c in os.sched_getaffinity(0) if str(c) != args.cpu}
    if others:  # the bench, its producer and a broker it starts keep off the worker's core
        os.sched_setaffinity(0, others)
    broker = None
    if not os.environ.get("RTMSFLOW_KAFKA_BOOTSTRAP"):
        from rtmsflow.broker import LocalKafka

        broker_dir = Path(tempfile.mkdtemp(prefix="processor-bench-kafka-"))
        broker = LocalKafka(broker_dir)
        os.environ["RTMSFLOW_KAFKA_BOOTSTRAP"] = broker.start(timeout=120, die_with_caller=True)
    try:
        print(json.dumps(asyncio.run(main(args)), indent=2))
    finally:
        if broker is not None:
            broker.stop()
            shutil.rmtree(broker_dir, ignore_errors=True)  # its log holds every record written (GBs)


if __name__ == "__main__":
    run()
