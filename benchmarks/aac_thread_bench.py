"""AAC encoding on a thread, alone and beside a busy Python thread: why the recorder's PyAV calls run inline.

    python -m benchmarks.aac_thread_bench [--seconds 120] [--switch 0.005,0.0005]

How it measures: BENCHMARKS.md, "How each bench measures", aac_thread_bench.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from fractions import Fraction

import av
import numpy as np

from sinks.mp4_muxer import DEFAULT_AAC_QUALITY

RATE = 16_000
FRAME = 1024


def encode(frames: list[np.ndarray]) -> float:
    """Encode `frames` on the calling thread; seconds of wall clock."""
    ctx = av.CodecContext.create("aac", "w")
    ctx.sample_rate, ctx.layout, ctx.format = RATE, "mono", "fltp"
    ctx.time_base = Fraction(1, RATE)
    ctx.qscale = True
    ctx.options = {"aac_coder": "fast", "global_quality": str(DEFAULT_AAC_QUALITY)}
    ctx.open()
    started = time.perf_counter()
    for i, samples in enumerate(frames):
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="fltp", layout="mono")
        frame.sample_rate, frame.pts = RATE, i * FRAME
        ctx.encode(frame)
    ctx.encode(None)
    return time.perf_counter() - started


def on_thread(frames: list[np.ndarray], busy: bool) -> float:
    """`encode` on a thread of its own, with a spinning Python thread beside it if `busy`."""
    stop = threading.Event()

    def spin() -> None:
        n = 0
        while not stop.is_set():
            n += 1

    spinner = threading.Thread(target=spin) if busy else None
    result: list[float] = []
    worker = threading.Thread(target=lambda: result.append(encode(frames)))
    if spinner:
        spinner.start()
    worker.start()
    worker.join()
    stop.set()
    if spinner:
        spinner.join()
    return result[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=120)
    ap.add_argument("--switch", default="0.005,0.0005", help="switch intervals to try, s (0.005 = Python's)")
    args = ap.parse_args()
    t = np.arange(int(args.seconds * RATE)) / RATE
    audio = (0.3 * np.sin(2 * np.pi * 440 * t) + np.random.default_rng(1).normal(0, 0.05, t.size)).astype(
        np.float32
    )
    frames = [audio[i : i + FRAME] for i in range(0, audio.size - FRAME + 1, FRAME)]
    before = sys.getswitchinterval()
    try:
        for switch in (float(s) for s in args.switch.split(",")):
            sys.setswitchinterval(switch)
            alone, busy = on_thread(frames, False), on_thread(frames, True)
            print(f"switch interval {switch * 1000:g} ms: encoder thread alone {args.seconds / alone:.0f}x real "
                  f"time, next to a busy Python thread {args.seconds / busy:.0f}x")  # fmt: skip
    finally:
        sys.setswitchinterval(before)


if __name__ == "__main__":
    main()
