"""Sinks through the broker: rebuild speed, finalize time after the marker, peak RSS by meeting length.

    python -m benchmarks.sink_bench [--minutes 2,10] [--resolution 360p] [--audio meeting|tone] [--bucket]

How it measures: BENCHMARKS.md, "How each bench measures", sink_bench.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from rtmsflow.kafka_client import bootstrap_servers

ORIGIN_MS = 1_747_316_541_000
MEETING = "benchMeeting/Q+=="
STREAM = "bench01"


def audio_loop(kind: str) -> list[bytes]:
    """The mixed audio's 20 ms packets, looped over the meeting."""
    if kind == "tone":
        return [(3000 * np.sin(2 * np.pi * 440 * np.arange(320) / 16000)).astype("<i2").tobytes()]
    from emulator.media import MeetingSpec, SyntheticMeeting

    meeting = SyntheticMeeting(MeetingSpec(seed=11, duration_s=10, video=None, transcripts=False))
    items = meeting.timeline(events=False, transcripts=False)
    return [item.data for item in items if item.kind == "audio" and isinstance(item.data, bytes)]


async def write_meeting(settings: Any, minutes: float, resolution: str, audio: str = "meeting") -> int:
    """Produce the meeting's ordered records in media-time order; returns the record count."""
    from aiokafka import AIOKafkaProducer

    from emulator.clips import ClipParams, get_clip
    from schemas.codec import Codec
    from schemas.markers import marker_headers
    from schemas.topics import AUDIO, CHAT, TRANSCRIPT, VIDEO, partition_for

    fps, loop_frames = 25, 250
    clips = [
        get_clip(ClipParams(k, resolution, fps, loop_frames, gop=fps, flash_index=None))
        for k in ("camera", "screen")
    ]  # type: ignore[arg-type]
    size = (clips[0].width, clips[0].height)
    codec = Codec(settings.schema_registry_url, settings.topic_prefix)
    part = partition_for(MEETING, settings.partitions)
    topic = {b: settings.topic_prefix + b for b in (AUDIO.name, VIDEO.name, TRANSCRIPT.name, CHAT.name)}
    pcm = audio_loop(audio)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers(settings), max_request_size=8 << 20, linger_ms=20,
                                max_batch_size=1 << 20)  # fmt: skip
    await producer.start()
    duration = int(minutes * 60_000)
    counts = {t: 0 for t in topic.values()}
    common = {
        "meeting_uuid": MEETING,
        "rtms_stream_id": STREAM,
        "stream_started_ms": ORIGIN_MS,
        "ingest_epoch": 1,
    }

    async def send(
        base: str, value: dict[str, Any] | None, headers: list[tuple[str, bytes]] | None = None
    ) -> None:
        data = None if value is None else codec.encode(topic[base], value)
        await producer.send(
            topic[base], value=data, key=MEETING.encode(), partition=part, headers=headers or []
        )
        counts[topic[base]] += 1

    try:
        frame = seq_a = 0
        for at in range(0, duration, 20):
            while frame * 40 < at + 20 and frame * 40 < duration:
                clip = clips[(frame // loop_frames) % 2]
                i = frame % loop_frames
                await send(VIDEO.name, {**common, "stream_kind": "VIDEO", "timestamp_ms": ORIGIN_MS + frame * 40,
                    "ingest_seq": frame, "received_at_ms": 0, "seq": frame, "offset_ms": frame * 40,
                    "payload": clip.frames[i], "keyframe": clip.keyframes[i], "has_parameter_sets": clip.keyframes[i],
                    "media": {"width": size[0], "height": size[1], "fps": fps}})  # fmt: skip
                frame += 1
            await send(AUDIO.name, {**common, "stream_kind": "AUDIO", "timestamp_ms": ORIGIN_MS + at, "ingest_seq": seq_a,
                "received_at_ms": 0, "seq": seq_a, "offset_ms": at, "payload": pcm[seq_a % len(pcm)], "media": {}})  # fmt: skip
            seq_a += 1
            if at % 5000 == 0 and at + 4000 <= duration:
                n = at // 5000
                await send(TRANSCRIPT.name, {"meeting_uuid": MEETING, "rtms_stream_id": STREAM, "utterance_id": f"{STREAM}/{n}",
                    "seq": n, "participant_id": 1, "participant_name": "Bench", "start_ms": ORIGIN_MS + at,
                    "end_ms": ORIGIN_MS + at + 4000, "stream_started_ms": ORIGIN_MS, "text": f"utterance {n}"})  # fmt: skip
        kinds = {
            AUDIO.name: {"AUDIO": seq_a},
            VIDEO.name: {"VIDEO": frame},
            TRANSCRIPT.name: {"TRANSCRIPT": counts[topic[TRANSCRIPT.name]]},
            CHAT.name: {},  # no chat: its marker alone (the transcript sink waits for it)
        }
        for base, c in kinds.items():
            end = {**common, "topic": base, "ended": "STOPPED", "counts": c, "complete": True}
            await send(base, None, marker_headers(end))
        await producer.flush()
    finally:
        await producer.stop()
    return sum(counts.values())


def child(minutes: float, out: str) -> None:
    """Rebuild the meeting (in its own process) and print one JSON line of figures."""
    from rtmsflow.settings import Settings
    from sinks.replay import replay_meeting

    settings = Settings.from_env()
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    cpu = time.process_time()
    target: Path | str = out if out.startswith("s3://") else Path(out)
    result = asyncio.run(replay_meeting(settings, MEETING, target, use_index=False))
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu
    muxers = resource.getrusage(resource.RUSAGE_CHILDREN)  # the muxer processes, all waited for
    muxers_cpu = muxers.ru_utime + muxers.ru_stime
    figures = {
        "minutes": minutes,
        "target": "bucket" if isinstance(target, str) else "disk",
        "records": result.records,
        "rebuild_s": round(wall, 2),
        "x_real_time": round(minutes * 60 / wall, 1),
        "x_real_time_per_cpu_s": round(minutes * 60 / (cpu + muxers_cpu), 1),
        "cpu_s": round(cpu, 2),
        "muxer_cpu_s": round(muxers_cpu, 2),
        "finalize_s": round(result.finalize_seconds, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "muxer_peak_rss_mb": round(muxers.ru_maxrss / 1024, 1),
        "bytes": sum(f.bytes_written for f in result.finalized),
        "ended": sorted({f.how for f in result.finalized}),
        "load": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }
    print(json.dumps(figures))


async def main(
    minutes: list[float], resolution: str, audio: str = "meeting", bucket_env: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    from rtmsflow.admin import delete_topics, ensure_topics
    from rtmsflow.settings import Settings
    from schemas.topics import ALL_TOPICS

    base = dataclasses.replace(Settings.from_env(), partitions=1)
    results = []
    for length in minutes:
        settings = dataclasses.replace(base, topic_prefix=f"bench{uuid.uuid4().hex[:8]}.")
        await ensure_topics(settings, ALL_TOPICS)
        try:
            t0 = time.perf_counter()
            records = await write_meeting(settings, length, resolution, audio)
            print(
                f"{length:g} min: {records} records written in {time.perf_counter() - t0:.1f} s",
                file=sys.stderr,
            )
            env = {**os.environ, "RTMSFLOW_TOPIC_PREFIX": settings.topic_prefix, "RTMSFLOW_PARTITIONS": "1",
                   "RTMSFLOW_KAFKA_BOOTSTRAP": bootstrap_servers(settings)}  # fmt: skip
            targets: list[tuple[str | None, dict[str, str]]] = [(None, env)]
            if bucket_env is not None:
                uri = f"{bucket_env['RTMSFLOW_DATA_DIR']}/{length:g}min"
                targets.append((uri, {**env, **bucket_env, "RTMSFLOW_DATA_DIR": uri}))
            for uri, child_env in targets:
                with tempfile.TemporaryDirectory() as out:
                    done = subprocess.run(  # noqa: ASYNC221 - the child is the measurement; nothing else runs
                        [sys.executable, "-m", "benchmarks.sink_bench", "--child", str(length), "--out", uri or out],
                        env={**child_env, "RTMSFLOW_SPOOL_DIR": out}, capture_output=True, text=True, check=True,
                    )  # fmt: skip
                    figures = json.loads(done.stdout.strip().splitlines()[-1])
                print(
                    f"{length:g} min to {figures['target']}: rebuild {figures['rebuild_s']} s = {figures['x_real_time']}x real time "
                    f"({figures['x_real_time_per_cpu_s']}x per CPU s: {figures['cpu_s']} s + the muxer's "
                    f"{figures['muxer_cpu_s']} s), finalize {figures['finalize_s']} s after the marker, "
                    f"peak RSS {figures['peak_rss_mb']} MB (the muxer's {figures['muxer_peak_rss_mb']} MB), {figures['bytes'] / 2**20:.0f} MB written, "
                    f"load {figures['load'][0]} -> {figures['load'][1]} ({audio} audio)",
                    file=sys.stderr,
                )
                results.append(figures)
        finally:
            await delete_topics(settings, [s.full_name(settings.topic_prefix) for s in ALL_TOPICS])
    return results


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", default="2,10", help="comma-separated meeting lengths (e.g. 10,60)")
    parser.add_argument("--resolution", default="360p", choices=["360p", "720p", "1080p"])
    parser.add_argument("--audio", default="meeting", choices=["meeting", "tone"], help="the mixed audio")
    parser.add_argument("--bucket", action="store_true", help="also rebuild into a local S3 bucket (s3proxy)")
    parser.add_argument("--child", type=float, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child, args.out)
        return
    lengths = [float(m) for m in args.minutes.split(",")]
    broker = None
    if not os.environ.get("RTMSFLOW_KAFKA_BOOTSTRAP"):
        from rtmsflow.broker import LocalKafka

        broker_dir = Path(tempfile.mkdtemp(prefix="sink-bench-kafka-"))
        broker = LocalKafka(broker_dir)
        os.environ["RTMSFLOW_KAFKA_BOOTSTRAP"] = broker.start(timeout=120, die_with_caller=True)
    s3 = None
    bucket_env = None
    if args.bucket:
        from rtmsflow.s3_server import LocalS3

        s3_dir = Path(tempfile.mkdtemp(prefix="sink-bench-s3-"))
        s3 = LocalS3(s3_dir / "data")
        s3.start()
        s3.create_bucket("sink-bench")
        bucket_env = s3.env("s3://sink-bench/rebuilt")
    try:
        print(json.dumps(asyncio.run(main(lengths, args.resolution, args.audio, bucket_env)), indent=2))
    finally:
        if s3 is not None:
            s3.stop()
            shutil.rmtree(s3_dir, ignore_errors=True)
        if broker is not None:
            broker.stop()
            shutil.rmtree(broker_dir, ignore_errors=True)  # its log holds every record written (GBs)


if __name__ == "__main__":
    run()
