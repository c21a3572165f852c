"""The whole stack under N concurrent real-time meetings: `python -m benchmarks.stack_bench`.

For each N of `--meetings` it does what `rtmsflow demo` does, with N meetings at once: a broker (the
configured one, else the local KRaft broker), fresh topics under a run prefix, every stage as its own
process (webhook endpoint, ingest worker, processor, media and transcript sinks), and the emulator
playing N meetings of `--participants` with audio, video and transcripts in real time. While the
meetings play it samples, every second, each stage's CPU and RSS (from /proc) and the processors'
and the sinks' lag behind the partitions' ends (their /metrics, by consumer position). Then it waits until every stream is finalized
and prints:

- whether the meetings were held with no growing lag: the groups' lag in the last third of the
  meeting against the middle third (the commit interval alone keeps a floor of a few hundred);
- end-to-end transcript latency p50/p99, from the ingest receive time of a raw piece
  (`received_at_ms`, taken as the socket read) to a Kafka timestamp on the output: (1) each
  piece's first appearance (its partial on `rtms.transcript.partial`; with code that has no
  partials, the final utterance that holds it); (2) an utterance's last piece to its final on
  `rtms.transcript` (same stream and speaker, piece start within the utterance's span); (3) the
  next piece of the stream after that last one to the final (what closed it, in code that
  closed an utterance only on the next piece);
- finalize time: from the last end-of-stream marker ingest wrote on the raw topics (the streams
  stopped) to the last manifest on disk;
- each stage's CPU (seconds per meeting-second and % of one core) and peak RSS.

The emulator runs on the same 2 cores and takes its share; the figures are for the machine as a
whole, not for one stage on a dedicated core (the per-stage benchmarks are).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from rtmsflow.admin import delete_topics, ensure_topics
from rtmsflow.broker import LocalKafka
from rtmsflow.settings import Settings
from rtmsflow.stack import Supervisor, free_ports, stack_stages, stage_env
from schemas import topics as t
from schemas.codec import Codec

TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


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
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap(), enable_auto_commit=False)
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


def emulator_exit(proc: subprocess.Popen[bytes]) -> int:
    return proc.wait()


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


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def run_once(base: Settings, n: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    settings = dataclasses.replace(
        base, topic_prefix=f"bench{secrets.token_hex(3)}.", data_dir=str(work / f"data-{n}")
    )
    codec = Codec.from_settings(settings)
    await ensure_topics(settings)
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
    try:
        await sup.start()
        watcher = asyncio.create_task(sup.watch())
        webhook = f"http://127.0.0.1:{sup.stage('ingest-http').spec.port}/webhook"
        emulator = subprocess.Popen(  # noqa: ASYNC220 (polled below, never waited on)
            [sys.executable, "-m", "rtmsflow.cli", "emulator", "meeting", "--meetings", str(n),
             "--participants", str(args.participants), "--duration", str(args.duration),
             "--video-resolution", args.video_resolution, "--webhook", webhook, "--stagger", "0.2"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        exited = asyncio.create_task(asyncio.to_thread(emulator_exit, emulator))
        pids = {s.spec.name: s.proc.pid for s in sup.stages if s.proc is not None}
        first = {name: proc_cpu_rss(pid) for name, pid in pids.items()}
        t0 = time.monotonic()
        groups = {s.name: (s.group, s.reads) for s in stages if s.group is not None}
        ports = {s.name: s.port for s in stages if s.group is not None}
        while emulator.poll() is None:
            sample: dict[str, Any] = {"t": time.monotonic() - t0}
            for name, pid in pids.items():
                sample[name] = proc_cpu_rss(pid)
            for name, port in ports.items():
                sample[f"lag:{name}"] = await asyncio.to_thread(scraped_lag, port)
            samples.append(sample)
            await asyncio.sleep(1.0)
        played_s = time.monotonic() - t0
        await exited
        if emulator.returncode != 0:
            raise RuntimeError(f"the emulator failed (exit {emulator.returncode})")
        data = Path(settings.data_dir)
        deadline = time.monotonic() + 600
        while await asyncio.to_thread(finalized, data) < n:
            if time.monotonic() > deadline or sup.failed:
                raise RuntimeError(f"not finalized: {sup.failed or 'timeout'}; logs in {sup.log_dir}")
            await asyncio.sleep(0.2)
        finalized_at = await asyncio.to_thread(last_manifest_at, data)
        last = {name: proc_cpu_rss(pid) for name, pid in pids.items()}
        watcher.cancel()
    finally:
        await sup.stop(drain_timeout_s=30)
    markers: list[int] = []
    for spec in t.RAW_TOPICS:
        if spec is not t.RAW_TRANSCRIPT:
            await read_all(settings, codec, spec.name, markers)
    raw = await read_all(settings, codec, t.RAW_TRANSCRIPT.name, markers)
    finalize_s = finalized_at - max(markers) / 1000
    utts = await read_all(settings, codec, t.TRANSCRIPT.name)
    partial = getattr(t, "TRANSCRIPT_PARTIAL", None)  # None: code from before partial utterances
    partials = await read_all(settings, codec, partial.name) if partial is not None else []
    await delete_topics(settings, [spec.full_name(settings.topic_prefix) for spec in t.ALL_TOPICS])
    from_last, from_close = transcript_latencies(raw, utts)
    appear = first_appearances(raw, partials, utts)
    thirds = len(samples) // 3
    lag = {}
    for name in groups:
        series = [s[f"lag:{name}"] for s in samples]
        middle, end = series[thirds : 2 * thirds] or [0], series[2 * thirds :] or [0]
        lag[name] = {"max": max(series, default=0), "middle_mean": statistics.mean(middle),
                     "last_mean": statistics.mean(end)}  # fmt: skip
    per_stage = {}
    for name in pids:
        a, b = first.get(name), last.get(name)
        peak = max((s[name][1] for s in samples if s.get(name)), default=0)
        if a and b:
            cpu = b[0] - a[0]
            per_stage[name] = {"cpu_s": cpu, "cpu_pct": 100 * cpu / played_s,
                               "cpu_ms_per_meeting_s": 1000 * cpu / (n * args.duration), "peak_rss_mb": peak / 2**20}  # fmt: skip
    return {"meetings": n, "played_s": played_s, "finalize_s": finalize_s, "utterances": len(utts),
            "first_ms": appear, "partials": len(partials), "from_last_ms": from_last, "from_close_ms": from_close, "lag": lag, "stages": per_stage}  # fmt: skip


def report(r: dict[str, Any]) -> None:
    last, close = r["from_last_ms"], r["from_close_ms"]
    growing = {k: v["last_mean"] > 2 * v["middle_mean"] + 500 for k, v in r["lag"].items()}
    print(f"\n== {r['meetings']} meetings, played in {r['played_s']:.1f} s")
    print(f"lag held (no growth, last third vs middle third): {'yes' if not any(growing.values()) else 'NO'}")
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
    print(f"  {'stage':<18} {'% of a core':>11} {'CPU ms/meeting-s':>17} {'peak RSS MB':>12}")
    for name, v in r["stages"].items():
        print(
            f"  {name:<18} {v['cpu_pct']:>11.1f} {v['cpu_ms_per_meeting_s']:>17.2f} {v['peak_rss_mb']:>12.1f}"
        )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--meetings", default="1,4,8", help="Comma-separated meeting counts, one run each.")
    parser.add_argument("--duration", type=float, default=60.0, help="Seconds of each meeting.")
    parser.add_argument("--participants", type=int, default=3)
    parser.add_argument("--video-resolution", default="720p", choices=("360p", "720p", "1080p"))
    args = parser.parse_args()
    settings = Settings.from_env()
    broker = None
    if not settings.kafka_bootstrap:
        broker = LocalKafka()
        running = broker.status()
        settings = dataclasses.replace(settings, kafka_bootstrap=running or broker.start())
        if running:
            broker = None
    print(
        f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f} at start; broker {settings.kafka_bootstrap}"
    )
    try:
        with tempfile.TemporaryDirectory(prefix="stack-bench-") as work:
            for n in [int(x) for x in args.meetings.split(",")]:
                report(await run_once(settings, n, args, Path(work)))
                print(f"load {os.getloadavg()[0]:.2f}")
    finally:
        if broker is not None:
            broker.stop()


if __name__ == "__main__":
    asyncio.run(main())
