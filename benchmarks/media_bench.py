"""Synthetic meetings' timelines: microseconds per media item, one long meeting and many at once.

    python -m benchmarks.media_bench [--meetings 300] [--budget-us 20]

How it measures: BENCHMARKS.md, "How each bench measures", media_bench.
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import time
from collections.abc import Iterator
from typing import Any

from emulator.media import MediaItem, MeetingSpec, SyntheticMeeting
from emulator.voices import VOICE_POOL


def spec(seed: int, participants: int = 3, beep_every_ms: int = 1000) -> MeetingSpec:
    """An hour-long 360p meeting (the shape of tests/emulator/test_media.py's, made long)."""
    return MeetingSpec(
        seed=seed, participants=participants, duration_s=3600.0, video="360p", beep_every_ms=beep_every_ms
    )


def hour_us_per_item(warmup: int = 20_000) -> tuple[float, int]:
    """CPU µs per item of one hour-long meeting after `warmup` items, and how many were timed."""
    meeting = SyntheticMeeting(spec(3, participants=5, beep_every_ms=5000))
    meeting.prepare()
    timeline = meeting.timeline(audio_mode="multi")
    for _ in itertools.islice(timeline, warmup):  # caches, first turns
        pass
    start = time.process_time()
    count = sum(1 for _ in timeline)
    return (time.process_time() - start) / count * 1e6, count


def round_robin_us_per_item(meetings: int, rounds: int = 10, per_turn: int = 80) -> tuple[float, int]:
    """CPU µs per item of `meetings` timelines played `per_turn` items each, `rounds` times round."""
    SyntheticMeeting(spec(0)).prepare()  # the shared clip and voices, outside the timing
    timelines: list[Iterator[MediaItem]] = [
        SyntheticMeeting(spec(k * VOICE_POOL)).timeline(audio_mode="multi") for k in range(meetings)
    ]
    for timeline in timelines:  # everyone one second in
        for _ in itertools.islice(timeline, 100):
            pass
    start = time.process_time()
    count = 0
    for _ in range(rounds):
        for timeline in timelines:
            for _ in itertools.islice(timeline, per_turn):
                count += 1
    return (time.process_time() - start) / count * 1e6, count


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meetings", type=int, default=300, help="meetings played round robin")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each; the best is reported")
    parser.add_argument("--budget-us", type=float, default=20.0, help="µs per item the server can afford")
    args = parser.parse_args(argv)
    hour = [hour_us_per_item() for _ in range(args.repeat)]
    rr = [round_robin_us_per_item(args.meetings) for _ in range(args.repeat)]
    hour_us, hour_items = min(hour)
    rr_us, rr_items = min(rr)
    result = {
        "python": platform.python_version(),
        "hour_us_per_item": round(hour_us, 2),
        "hour_items": hour_items,
        "round_robin_meetings": args.meetings,
        "round_robin_us_per_item": round(rr_us, 2),
        "round_robin_items": rr_items,
        "runs_us": {"hour": [round(us, 2) for us, _ in hour], "round_robin": [round(us, 2) for us, _ in rr]},
        "budget_us": args.budget_us,
        "within_budget": hour_us < args.budget_us and rr_us < args.budget_us,
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
