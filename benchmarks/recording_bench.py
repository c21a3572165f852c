"""Rebuild speed and peak memory of the MP4 recorder: synthetic meetings of 10 and 60 minutes.

    python -m benchmarks.recording_bench [--minutes 10,60] [--plain] [--process] [--out DIR] [--keep]

How it measures: BENCHMARKS.md, "How each bench measures", recording_bench.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ORIGIN_MS = 1_747_316_541_000
FPS = 25
FRAME_MS = 1000 // FPS
PACKET_MS = 20
LOOP_MS = 10_000


def _rss_mb() -> float:
    """Current resident set size (Linux /proc), MB."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KB


def record_meeting(
    minutes: float, out: Path, fragmented: bool = True, process: bool = False
) -> dict[str, Any]:
    """Record one synthetic meeting of `minutes` to `out`; runs in the child process."""
    from emulator.clips import ClipParams, get_clip
    from emulator.media import MeetingSpec, SyntheticMeeting
    from sinks.mp4_recorder import Mp4Recorder

    frames_per_loop = LOOP_MS // FRAME_MS
    clips = [
        get_clip(ClipParams(kind, "720p", FPS, frames_per_loop, gop=FPS, flash_index=None))  # type: ignore[arg-type]
        for kind in ("camera", "screen")
    ]
    meeting = SyntheticMeeting(MeetingSpec(seed=11, duration_s=LOOP_MS / 1000, video=None, transcripts=False))
    pcm_loop = [
        item.data for item in meeting.timeline(events=False, transcripts=False) if item.kind == "audio"
    ]
    assert len(pcm_loop) == LOOP_MS // PACKET_MS
    duration_ms = round(minutes * 60_000)
    rss_before = _rss_mb()

    rec = Mp4Recorder(out, ORIGIN_MS, fragmented=fragmented, process=process)
    started = time.perf_counter()
    cpu_started = time.process_time()
    rec.start()
    video_at = audio_at = 0
    video_bytes = 0
    while video_at < duration_ms or audio_at < duration_ms:
        # interleave by timestamp, as the ordered topics deliver them
        if video_at <= audio_at and video_at < duration_ms:
            j = video_at // FRAME_MS
            clip = clips[(j // frames_per_loop) % 2]
            data = clip.frames[j % frames_per_loop]
            key = clip.keyframes[j % frames_per_loop]
            rec.video_frame(ORIGIN_MS + video_at, data, keyframe=key, has_parameter_sets=key)
            video_bytes += len(data)
            video_at += FRAME_MS
        else:
            k = audio_at // PACKET_MS
            rec.audio_frame(ORIGIN_MS + audio_at, pcm_loop[k % len(pcm_loop)])  # type: ignore[arg-type]
            audio_at += PACKET_MS
    closing = time.perf_counter()
    stats = rec.close(ORIGIN_MS + duration_ms)
    done = time.perf_counter()
    main_cpu = time.process_time() - cpu_started
    children = resource.getrusage(resource.RUSAGE_CHILDREN)  # the encoder process, waited for
    cpu = main_cpu + children.ru_utime + children.ru_stime
    elapsed = done - started
    return {
        "minutes": minutes,
        "fragmented": fragmented,
        "process": process,
        "seconds": round(elapsed, 2),
        "x_realtime": round(duration_ms / 1000 / elapsed, 1),
        "cpu_s": round(cpu, 2),
        "recorder_cpu_s": round(main_cpu, 2),
        "x_realtime_per_cpu": round(duration_ms / 1000 / cpu, 1),  # what a quiet core would give
        "close_s": round(done - closing, 3),
        "rss_before_mb": round(rss_before, 1),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "file_mb": round(out.stat().st_size / 2**20, 1),
        "h264_mb": round(video_bytes / 2**20, 1),
        "video_frames": stats.video.samples_out if stats.video else 0,
        "aac_packets": stats.aac_packets,
    }


def run_child(minutes: float, out_dir: Path, plain: bool, process: bool = False) -> dict[str, Any]:
    """Run one meeting in a fresh interpreter and return what it measured."""
    out = out_dir / f"recording-{minutes:g}min.mp4"
    cmd = [sys.executable, "-m", "benchmarks.recording_bench", "--child", str(minutes), "--out", str(out)]
    if plain:
        cmd.append("--plain")
    if process:
        cmd.append("--process")
    result = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", default="10,60", help="meeting lengths, comma-separated")
    parser.add_argument("--out", type=Path, help="where the MP4s go (default: a temporary directory)")
    parser.add_argument("--keep", action="store_true", help="keep the MP4s")
    parser.add_argument("--plain", action="store_true", help="plain MP4 instead of fragmented")
    parser.add_argument("--process", action="store_true", help="the recorder's muxer in a process of its own")
    parser.add_argument("--child", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child is not None:
        result = record_meeting(args.child, args.out, fragmented=not args.plain, process=args.process)
        print(json.dumps(result))
        return 0

    lengths = [float(m) for m in args.minutes.split(",") if m]
    with tempfile.TemporaryDirectory(prefix="recording-bench-") as tmp:
        out_dir = args.out or Path(tmp)
        out_dir.mkdir(parents=True, exist_ok=True)
        results = []
        for minutes in lengths:
            print(f"recording a {minutes:g}-minute meeting ...", file=sys.stderr, flush=True)
            r = run_child(minutes, out_dir, args.plain, args.process)
            results.append(r)
            print(
                f"{r['minutes']:>5g} min: {r['seconds']:>7.2f} s = {r['x_realtime']:>6.1f}x real time "
                f"({r['x_realtime_per_cpu']:.1f}x per CPU second, {r['cpu_s']:.2f} CPU-s of which "
                f"{r['recorder_cpu_s']:.2f} in the recording process), "
                f"close {r['close_s']:.3f} s, peak RSS {r['peak_rss_mb']:.1f} MB "
                f"(before recording {r['rss_before_mb']:.1f} MB), file {r['file_mb']:.1f} MB",
                flush=True,
            )
            if not args.keep:
                for f in out_dir.glob(f"recording-{minutes:g}min.mp4"):
                    f.unlink()
    summary = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_avg": os.getloadavg()},
        "results": results,
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
