"""The whole stack under N concurrent real-time meetings, every stage a process, on this machine.

    python -m benchmarks.stack_bench --meetings 1,6,24 --duration 40
    python -m benchmarks.stack_bench --meetings 24,36,48,60 --duration 30 --find-limit

What it measures and how a step is judged: BENCHMARKS.md, "How the whole-stack bench measures".
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import math
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from rtmsflow.admin import delete_topics, ensure_topics
from rtmsflow.broker import LocalKafka
from rtmsflow.kafka_client import bootstrap_servers
from rtmsflow.settings import Settings
from rtmsflow.stack import Supervisor, free_ports, stack_stages, stage_env
from schemas import topics as t
from schemas.codec import Codec

TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
STAGGER_S = 0.2  # between the emulator's meeting starts
PLAY_TOLERANCE = (2.0, 0.05)  # played within max(2 s, 5 %) of the nominal time: real time kept
LATE_SHARE_MAX = 0.02  # at most this share of the frames sent > 20 ms behind schedule
INGEST_DELAY_MAX_MS = 1000  # ingest's receive -> raw record, p99 over the last third of the records
TRANSCRIPT_P99_MAX_MS = 1000  # a piece's receive -> its first appearance, p99 (issue 19's aim: 500)


class StepFailed(RuntimeError):
    """A step that produced no figures (the emulator failed, the streams did not finalize)."""


def proc_cpu_rss(pid: int) -> tuple[float, int] | None:
    """(CPU seconds, RSS bytes) of a process, from /proc; None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        statm = Path(f"/proc/{pid}/statm").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / TICK, int(statm.split()[1]) * PAGE


async def read_all(
    settings: Settings, codec: Codec, base: str, markers: list[int] | None = None
) -> list[tuple[int, dict[str, Any]]]:
    """Every value record of a topic with its Kafka timestamp (ms); the timestamps of the
    end-of-stream markers (null values) go to `markers`."""
    topic = settings.topic_prefix + base
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers(settings), enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(settings.partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        out = []
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                out += [(r.timestamp, codec.decode(topic, r.value)) for r in records if r.value is not None]
                if markers is not None:  # end-of-stream markers (not progress marks)
                    markers += [r.timestamp for r in records if r.value is None and _is_end(r.headers)]
        return out
    finally:
        await consumer.stop()


def _is_end(headers: Any) -> bool:
    return any(k == t.CONTROL_HEADER and v == t.END_OF_STREAM for k, v in headers or ())


def first_appearances(
    raw: list[tuple[int, dict[str, Any]]],
    partials: list[tuple[int, dict[str, Any]]],
    utts: list[tuple[int, dict[str, Any]]],
) -> list[int]:
    """Per raw piece, ms from its receive to its first appearance on the output: its partial (a
    stream's k-th partial is its k-th piece in topic order, repeats left out), or, without
    partials, the final utterance that holds it."""
    pieces: dict[str, list[dict[str, Any]]] = {}
    seen: set[tuple[Any, ...]] = set()
    for _, v in raw:
        identity = (
            v["rtms_stream_id"],
            v["participant_id"],
            v["timestamp_ms"],
            v["start_time_ms"],
            v["text"],
        )
        if identity not in seen:
            seen.add(identity)
            pieces.setdefault(v["rtms_stream_id"], []).append(v)
    out = []
    if partials:
        shown: dict[str, list[int]] = {}
        for written_ms, u in partials:
            shown.setdefault(u["rtms_stream_id"], []).append(written_ms)
        for stream, mine in pieces.items():
            out += [w - v["received_at_ms"] for v, w in zip(mine, shown.get(stream, []), strict=False)]
        return out
    for stream, mine in pieces.items():
        finals = [(w, u) for w, u in utts if u["rtms_stream_id"] == stream]
        for v in mine:
            start = v.get("start_time_ms") or v["timestamp_ms"]
            holding = [w for w, u in finals if u["participant_id"] == v["participant_id"]
                       and u["start_ms"] <= start <= u["end_ms"]]  # fmt: skip
            if holding:
                out.append(min(holding) - v["received_at_ms"])
    return out


def transcript_latencies(
    raw: list[tuple[int, dict[str, Any]]], utts: list[tuple[int, dict[str, Any]]]
) -> tuple[list[int], list[int]]:
    """Per utterance on rtms.transcript (see the module docstring), ms from the receive of
    (1) its last piece and (2) the piece that closed it (the stream's next piece) to its write."""
    by_stream: dict[str, list[tuple[int, int, int]]] = {}  # stream -> (received, participant, start)
    for _, v in raw:
        start = v.get("start_time_ms") or v["timestamp_ms"]
        by_stream.setdefault(v["rtms_stream_id"], []).append(
            (v["received_at_ms"], v["participant_id"], start)
        )
    for pieces in by_stream.values():
        pieces.sort()
    from_last, from_close = [], []
    for written_ms, u in utts:
        pieces = by_stream.get(u["rtms_stream_id"], [])
        own = [rx for rx, who, start in pieces
               if who == u["participant_id"] and u["start_ms"] <= start <= u["end_ms"]]  # fmt: skip
        if not own:
            continue
        last = max(own)
        from_last.append(written_ms - last)
        closing = [rx for rx, who, start in pieces if rx > last and rx not in own]
        if closing and written_ms >= closing[0]:
            from_close.append(written_ms - closing[0])
    return from_last, from_close


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs, for the machine's utilisation over a window."""
    with open("/proc/stat") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    idle = parts[3] + parts[4]
    return sum(parts) - idle, sum(parts)


def listener_pid(bootstrap: str) -> int | None:
    """The pid of the process listening on a local bootstrap's (first) port, from /proc; None for
    a remote broker or one this user cannot see."""
    host, _, port_s = bootstrap.split(",")[0].rpartition(":")
    if host.strip("[]") not in ("127.0.0.1", "localhost", "::1", "0.0.0.0", "") or not port_s.isdigit():
        return None
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if f[3] == "0A" and int(f[1].rsplit(":", 1)[1], 16) == int(port_s):  # LISTEN
                inodes.add(f"socket:[{f[9]}]")
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if any(os.readlink(fd) in inodes for fd in (proc / "fd").iterdir()):
                return int(proc.name)
        except OSError:
            continue
    return None


@dataclasses.dataclass
class EmulatorRun:
    """What the emulator subprocess printed and used: its server's start (the first JSON line,
    after its clips are prepared), its per-meeting reports, its CPU (by wait4, children included)."""

    ready_at: float | None = None  # monotonic
    setup_cpu_s: float = 0.0
    reports: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    exited_at: float = 0.0
    cpu_s: float = 0.0
    returncode: int | None = None


def follow_emulator(proc: subprocess.Popen[bytes], run: EmulatorRun) -> None:
    """Read the emulator's JSON lines as they come, then reap it with its resource usage (the
    only wait on it: nothing else polls the Popen, so the rusage is not lost to another reaper)."""
    assert proc.stdout is not None
    for line in proc.stdout:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if "rtms_url" in record and run.ready_at is None:
            run.ready_at = time.monotonic()
            run.setup_cpu_s = (proc_cpu_rss(proc.pid) or (0.0, 0))[0]
        elif "meeting" in record:
            run.reports.append(record)
    proc.stdout.close()
    _, status, usage = os.wait4(proc.pid, 0)
    run.exited_at = time.monotonic()
    run.cpu_s = usage.ru_utime + usage.ru_stime
    run.returncode = proc.returncode = os.waitstatus_to_exitcode(status)


def last_manifest_at(data: Path) -> float:
    return max(p.stat().st_mtime for p in data.glob("*/*/*/*manifest.json"))


def scraped_lag(port: int) -> int:
    """Records behind the partitions' ends by the stage's consumer position (its /metrics:
    rtmsflow_processors_lag, rtmsflow_sink_lag), not by commits: a sink commits a stream only
    once it is finalized, so its committed lag grows through every meeting by design."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return 0
    return int(sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith(("rtmsflow_processors_lag ", "rtmsflow_sink_lag{"))))  # fmt: skip


def finalized(data: Path) -> int:
    """Streams whose media and transcript manifests are both on disk."""
    return min(
        len(list(data.glob("*/*/*/manifest.json"))), len(list(data.glob("*/*/*/transcript.manifest.json")))
    )


def pct(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run_once(
    base: Settings, n: int, args: argparse.Namespace, work: Path, broker_pid: int | None
) -> dict[str, Any]:
    settings = dataclasses.replace(
        base, topic_prefix=f"bench{secrets.token_hex(3)}.", data_dir=str(work / f"data-{n}")
    )
    codec = Codec(settings.schema_registry_url, settings.topic_prefix)
    await ensure_topics(settings)
    try:
        return await _run_once(settings, codec, n, args, work, broker_pid)
    finally:
        await delete_topics(settings, [spec.full_name(settings.topic_prefix) for spec in t.ALL_TOPICS])


async def _run_once(
    settings: Settings, codec: Codec, n: int, args: argparse.Namespace, work: Path, broker_pid: int | None
) -> dict[str, Any]:
    env = stage_env(settings, {
        "ZM_RTMS_CLIENT": "bench-client", "ZM_RTMS_SECRET": secrets.token_hex(16),
        "ZOOM_SECRET_TOKEN": secrets.token_hex(16), "RTMSFLOW_ALLOWED_HOSTS": "127.0.0.1",
        "RTMSFLOW_ALLOW_INSECURE_WS": "1", "RTMSFLOW_DATA_DIR": settings.data_dir,
        "RTMSFLOW_TOPIC_PREFIX": settings.topic_prefix,
        "RTMSFLOW_RTMS_VIDEO_RESOLUTION": args.video_resolution, "RTMSFLOW_LOG_LEVEL": "WARNING",
    })  # fmt: skip
    stages = stack_stages(settings, free_ports(5))
    sup = Supervisor(settings, stages, env, work / f"logs-{n}")
    samples: list[dict[str, Any]] = []
    emu = EmulatorRun()
    watcher: asyncio.Task[None] | None = None
    try:
        await sup.start()
        watcher = asyncio.create_task(sup.watch())
        webhook = f"http://127.0.0.1:{sup.stage('ingest-http').spec.port}/webhook"
        pids = {s.spec.name: s.proc.pid for s in sup.stages if s.proc is not None}
        if broker_pid is not None:
            pids["broker"] = broker_pid
        first = {name: proc_cpu_rss(pid) for name, pid in pids.items()}
        busy0 = machine_busy()
        t0 = time.monotonic()
        emulator = subprocess.Popen(  # noqa: ASYNC220 (reaped by follow_emulator, in a thread)
            [sys.executable, "-m", "rtmsflow.cli", "emulator", "meeting", "--meetings", str(n),
             "--participants", str(args.participants), "--duration", str(args.duration),
             "--video-resolution", args.video_resolution, "--webhook", webhook, "--stagger", str(STAGGER_S)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        exited = asyncio.create_task(asyncio.to_thread(follow_emulator, emulator, emu))
        groups = {s.name: (s.group, s.reads) for s in stages if s.group is not None}
        ports = {s.name: s.port for s in stages if s.group is not None}
        while not exited.done():
            sample: dict[str, Any] = {"t": time.monotonic() - t0}
            for name, pid in pids.items():
                sample[name] = proc_cpu_rss(pid)
            for name, port in ports.items():
                sample[f"lag:{name}"] = await asyncio.to_thread(scraped_lag, port)
            samples.append(sample)
            await asyncio.wait([exited], timeout=1.0)
        await exited
        if emu.returncode != 0:
            problems = sorted({r.get("problem", "") for r in emu.reports if not r.get("ok", True)})
            raise StepFailed(
                f"the emulator failed (exit {emu.returncode}): {'; '.join(problems) or 'no report'}"
            )
        data = Path(settings.data_dir)
        deadline = time.monotonic() + 600
        while await asyncio.to_thread(finalized, data) < n:
            if time.monotonic() > deadline or sup.failed:
                raise StepFailed(f"not finalized: {sup.failed or 'timeout'}; logs in {sup.log_dir}")
            await asyncio.sleep(0.2)
        finalized_at = await asyncio.to_thread(last_manifest_at, data)
        last = {name: proc_cpu_rss(pid) for name, pid in pids.items()}
        busy1 = machine_busy()
        window_s = time.monotonic() - t0
    finally:
        if watcher is not None:
            watcher.cancel()
        await sup.stop(drain_timeout_s=30)
    markers: list[int] = []
    delays: list[tuple[int, int]] = []  # (received_at_ms, ms from it to the raw record's timestamp)
    for spec in t.RAW_TOPICS:
        if spec is not t.RAW_TRANSCRIPT:
            got = await read_all(settings, codec, spec.name, markers)
            delays += [
                (v["received_at_ms"], ts - v["received_at_ms"]) for ts, v in got if "received_at_ms" in v
            ]
            del got
    raw = await read_all(settings, codec, t.RAW_TRANSCRIPT.name, markers)
    delays += [(v["received_at_ms"], ts - v["received_at_ms"]) for ts, v in raw]
    delays.sort()
    tail = [d for _, d in delays[2 * len(delays) // 3 :]]  # the last third, by receive time
    finalize_s = finalized_at - max(markers) / 1000
    utts = await read_all(settings, codec, t.TRANSCRIPT.name)
    partial = getattr(t, "TRANSCRIPT_PARTIAL", None)  # None: code from before partial utterances
    partials = await read_all(settings, codec, partial.name) if partial is not None else []
    from_last, from_close = transcript_latencies(raw, utts)
    appear = first_appearances(raw, partials, utts)
    thirds = len(samples) // 3
    lag = {}
    for name in groups:
        series = [s[f"lag:{name}"] for s in samples]
        middle, end = series[thirds : 2 * thirds] or [0], series[2 * thirds :] or [0]
        lag[name] = {"max": max(series, default=0), "middle_mean": statistics.mean(middle),
                     "last_mean": statistics.mean(end)}  # fmt: skip
    meeting_s = n * args.duration
    per_stage = {}
    for name in pids:
        a, b = first.get(name), last.get(name)
        peak = max((s[name][1] for s in samples if s.get(name)), default=0)
        if a and b:
            cpu = b[0] - a[0]
            per_stage[name] = {"cpu_s": cpu, "window_s": window_s, "cpu_pct": 100 * cpu / window_s,
                               "cpu_ms_per_meeting_s": 1000 * cpu / meeting_s, "peak_rss_mb": peak / 2**20}  # fmt: skip
    # the emulator: its set-up (imports, clips) before its server started, then its playing
    ready = emu.ready_at if emu.ready_at is not None else t0
    play_window = emu.exited_at - ready
    play_cpu = emu.cpu_s - emu.setup_cpu_s
    per_stage["emulator"] = {"cpu_s": play_cpu, "window_s": play_window, "cpu_pct": 100 * play_cpu / play_window,
                             "cpu_ms_per_meeting_s": 1000 * play_cpu / meeting_s, "peak_rss_mb": float("nan")}  # fmt: skip
    # real time kept: the last meeting starts (n - 1) staggers after the server, then plays `duration`
    nominal_s = STAGGER_S * (n - 1) + args.duration
    sent = sum(sum(r.get("sent", {}).values()) for r in emu.reports)
    late = sum(r.get("late_frames", 0) for r in emu.reports)
    return {"meetings": n, "played_s": play_window, "nominal_s": nominal_s, "setup_s": ready - t0,
            "setup_cpu_s": emu.setup_cpu_s, "sent": sent, "late": late,
            "machine_busy": (busy1[0] - busy0[0]) / max(1.0, busy1[1] - busy0[1]),
            "finalize_s": finalize_s, "utterances": len(utts),
            "first_ms": appear, "partials": len(partials), "from_last_ms": from_last, "from_close_ms": from_close,
            "lag": lag, "stages": per_stage, "meeting_s": meeting_s,
            "ingest_ms": {"p50": pct([d for _, d in delays], 0.5), "p99": pct([d for _, d in delays], 0.99),
                          "last_third_p99": pct(tail, 0.99)}}  # fmt: skip


def verdict(r: dict[str, Any]) -> str:
    """A step's verdict: held, offered less than nominal (the emulator fell behind real time, see
    the module docstring), or lag grew."""
    slack = max(PLAY_TOLERANCE[0], PLAY_TOLERANCE[1] * r["nominal_s"])
    late_share = r["late"] / r["sent"] if r["sent"] else 1.0
    if r["played_s"] > r["nominal_s"] + slack or late_share > LATE_SHARE_MAX:
        return "offered less than nominal"
    grew = [k for k, v in r["lag"].items() if v["last_mean"] > 2 * v["middle_mean"] + 500]
    if grew:
        return f"lag grew ({', '.join(grew)})"
    if r["ingest_ms"]["last_third_p99"] > INGEST_DELAY_MAX_MS:  # a backlog in ingest, before Kafka
        return "lag grew (ingest)"
    if pct(r["first_ms"], 0.99) > TRANSCRIPT_P99_MAX_MS:  # a backlog inside a stage: no position shows it
        return "lag grew (transcripts)"
    return "held"


def report(r: dict[str, Any]) -> None:
    last, close = r["from_last_ms"], r["from_close_ms"]
    late_share = r["late"] / r["sent"] if r["sent"] else float("nan")
    print(f"\n== {r['meetings']} meetings: {verdict(r)}")
    print(f"emulator: played in {r['played_s']:.1f} s from its server's start (nominal {r['nominal_s']:.1f} s: "
          f"{STAGGER_S} s stagger x {r['meetings'] - 1} + the duration), after {r['setup_s']:.1f} s of set-up; "
          f"{r['late']:,} of {r['sent']:,} frames > 20 ms late ({100 * late_share:.2f} %); "
          f"machine {100 * r['machine_busy']:.0f} % busy")  # fmt: skip
    ing = r["ingest_ms"]
    print(f"ingest's delay, a frame's receive to its raw record: p50 {ing['p50']:,.0f} ms  p99 {ing['p99']:,.0f} ms  "
          f"(last third p99 {ing['last_third_p99']:,.0f} ms; held below {INGEST_DELAY_MAX_MS:,} ms)")  # fmt: skip
    print("lag (last third vs middle third):")
    for name, v in r["lag"].items():
        print(f"  {name:<18} lag max {v['max']:>7,}  middle mean {v['middle_mean']:>9,.0f}  "
              f"last mean {v['last_mean']:>9,.0f}")  # fmt: skip
    first = r["first_ms"]
    where = "its partial" if r["partials"] else "the final holding it"
    print(f"transcript piece to its first appearance ({where}), {len(first)} pieces: "
          f"p50 {pct(first, 0.5):,.0f} ms  p99 {pct(first, 0.99):,.0f} ms")  # fmt: skip
    print(f"transcript latency to rtms.transcript, {r['utterances']} utterances:")
    print(
        f"  from its last piece's receive ({len(last)}): p50 {pct(last, 0.5):,.0f} ms  p99 {pct(last, 0.99):,.0f} ms"
        "  (includes the pause rule, or the wait for the next piece in code before progress marks)"
    )
    print(f"  from the closing piece's receive ({len(close)}): p50 {pct(close, 0.5):,.0f} ms  "
          f"p99 {pct(close, 0.99):,.0f} ms  (the pipeline's own latency)")  # fmt: skip
    print(
        f"finalize: {r['finalize_s']:.2f} s from the last end-of-stream marker on the raw topics to the last manifest"
    )
    print(f"  {'process':<18} {'% of a core':>11} {'CPU ms/meeting-s':>17} {'peak RSS MB':>12}")
    for name, v in r["stages"].items():
        print(
            f"  {name:<18} {v['cpu_pct']:>11.1f} {v['cpu_ms_per_meeting_s']:>17.2f} {v['peak_rss_mb']:>12.1f}"
        )
    stages = [v for k, v in r["stages"].items() if k not in ("broker", "emulator")]
    print(f"  {'(the stages)':<18} {sum(v['cpu_pct'] for v in stages):>11.1f} "
          f"{sum(v['cpu_ms_per_meeting_s'] for v in stages):>17.2f}")  # fmt: skip
    if "broker" not in r["stages"]:
        print("  (the broker's CPU: not measured, its process was not found)")
    print(
        f"  (emulator: its playing; its set-up took {r['setup_cpu_s']:.1f} CPU s before its server started)"
    )


def fit(points: list[tuple[float, float, float]]) -> tuple[float, float] | None:
    """Least squares cpu_s = fixed * window_s + marginal * meeting_s over (window_s, meeting_s,
    cpu_s) points: (fixed ms per second, marginal ms per meeting-second), None if undetermined."""
    sww = sum(w * w for w, _, _ in points)
    swm = sum(w * m for w, m, _ in points)
    smm = sum(m * m for _, m, _ in points)
    swc = sum(w * c for w, _, c in points)
    smc = sum(m * c for _, m, c in points)
    det = sww * smm - swm * swm
    if len(points) < 2 or abs(det) < 1e-9 * sww * smm:
        return None
    return 1000 * (swc * smm - smc * swm) / det, 1000 * (smc * sww - swc * swm) / det


def summary(results: list[dict[str, Any]], failed: dict[int, str]) -> None:
    print("\n== steps")
    print(f"  {'meetings':>8}  {'verdict':<32} {'played/nominal s':>16} {'late %':>7} {'busy %':>6} "
          f"{'stages %':>8} {'broker %':>8} {'emulator %':>10} {'ingest p99 ms':>13}")  # fmt: skip
    for r in results:
        st = r["stages"]
        stages = sum(v["cpu_pct"] for k, v in st.items() if k not in ("broker", "emulator"))
        late = 100 * r["late"] / r["sent"] if r["sent"] else float("nan")
        broker = st["broker"]["cpu_pct"] if "broker" in st else float("nan")
        print(f"  {r['meetings']:>8}  {verdict(r):<32} {r['played_s']:>7.1f} / {r['nominal_s']:<6.1f} "
              f"{late:>7.2f} {100 * r['machine_busy']:>6.0f} {stages:>8.1f} {broker:>8.1f} "
              f"{st['emulator']['cpu_pct']:>10.1f} {r['ingest_ms']['p99']:>13,.0f}")  # fmt: skip
    for n, why in failed.items():
        print(f"  {n:>8}  not held: {why}")
    held = [r for r in results if verdict(r) == "held"]
    print(f"limit: {max(r['meetings'] for r in held) if held else 'none'} meetings held (the last held step)")
    basis = held if len({r["meetings"] for r in held}) >= 2 else results
    names = list(dict.fromkeys(k for r in basis for k in r["stages"]))
    which = "held steps" if basis is held else "all steps (fewer than two held)"
    print(
        f"\n== CPU fit over the {which} ({', '.join(str(r['meetings']) for r in basis)} meetings): "
        "CPU s = fixed x step s + marginal x meeting-s"
    )
    print(f"  {'process':<18} {'fixed ms/s':>10} {'marginal ms/meeting-s':>22} {'worst residual %':>17}")
    totals: list[tuple[float, float, float]] = [(0.0, 0.0, 0.0)] * len(basis)
    for name in [*names, "(the stages)"]:
        if name == "(the stages)":
            points = totals
        else:
            points = [(r["stages"][name]["window_s"], r["meeting_s"], r["stages"][name]["cpu_s"])
                      for r in basis if name in r["stages"]]  # fmt: skip
            if name not in ("broker", "emulator") and len(points) == len(basis):
                totals = [(w, m, tc + c) for (w, m, c), (_, _, tc) in zip(points, totals, strict=True)]
        got = fit(points)
        if got is None:
            print(f"  {name:<18} (needs two steps with different meeting counts)")
            continue
        fixed, marginal = got
        worst = max((abs(fixed * w + marginal * m - 1000 * c) / (1000 * c) for w, m, c in points if c > 0),
                    default=math.nan)  # fmt: skip
        print(f"  {name:<18} {fixed:>10.1f} {marginal:>22.2f} {100 * worst:>17.1f}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--meetings", default="1,4,8", help="Comma-separated meeting counts, one run each.")
    parser.add_argument("--duration", type=float, default=60.0, help="Seconds of each meeting.")
    parser.add_argument("--participants", type=int, default=3)
    parser.add_argument("--video-resolution", default="720p", choices=("360p", "720p", "1080p"))
    parser.add_argument(
        "--find-limit", action="store_true",
        help="Stop at the first step not held; if all listed steps held, grow the count x--growth until one is not.",
    )  # fmt: skip
    parser.add_argument(
        "--growth", type=float, default=1.25, help="With --find-limit: the next count's factor."
    )
    args = parser.parse_args()
    settings = Settings.from_env()
    broker = None
    local = LocalKafka()
    if not settings.kafka_bootstrap:
        running = local.status()
        settings = dataclasses.replace(settings, kafka_bootstrap=running or local.start())
        broker = None if running else local
        broker_pid = local.pid()
    else:
        broker_pid = listener_pid(settings.kafka_bootstrap)
    print(
        f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f} at start; broker {settings.kafka_bootstrap}"
        f" (pid {broker_pid or 'not found: its CPU is not measured'})"
    )
    results: list[dict[str, Any]] = []
    failed: dict[int, str] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="stack-bench-") as work:
            queue = [int(x) for x in args.meetings.split(",")]
            if broker is not None:  # a fresh JVM: its JIT would weigh on the first step's figures
                print(f"broker warm-up: {queue[0]} meetings of 10 s, not reported")
                warm = argparse.Namespace(**{**vars(args), "duration": min(10.0, args.duration)})
                await run_once(settings, queue[0], warm, Path(work), broker_pid)
            while queue:
                n = queue.pop(0)
                try:
                    r = await run_once(settings, n, args, Path(work), broker_pid)
                except StepFailed as exc:
                    print(f"\n== {n} meetings: not held: {exc}")
                    failed[n] = str(exc)
                    if args.find_limit:
                        break
                    continue
                results.append(r)
                report(r)
                print(f"load {os.getloadavg()[0]:.2f}")
                if args.find_limit and verdict(r) != "held":
                    break
                if args.find_limit and not queue:
                    queue.append(max(n + 1, round(n * args.growth)))
    finally:
        if broker is not None:
            broker.stop()
        if results or failed:
            summary(results, failed)


if __name__ == "__main__":
    asyncio.run(main())
