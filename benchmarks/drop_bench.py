"""How much video ingest loses when Zoom drops a socket: frames and ms of video per drop.

    python -m benchmarks.drop_bench   # both policies, 8 video drops each

How it measures: BENCHMARKS.md, "How each bench measures", drop_bench.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import statistics
import time
from dataclasses import dataclass
from typing import Any

from emulator.faults import Faults
from emulator.media import MeetingSpec, SyntheticMeeting
from emulator.server import RTMSServer, StreamHandle
from ingest.backend import (
    AudioData,
    ChatData,
    DeadLetterData,
    EventData,
    StreamSession,
    TranscriptData,
    VideoData,
)
from ingest.rtms_client import ClientConfig
from ingest.ws_client import WebSocketBackend
from rtmsflow.settings import Settings

CLIENT_ID, CLIENT_SECRET = "drop-bench-id", "drop-bench-secret"
POLL_S = 0.002
SETTLE_S = 0.3  # after the reconnect, let in-flight frames land before reading the hole
DROP_TIMEOUT_S = 40.0


class Collector:
    """A `FrameHandler` that keeps each video frame's RTMS timestamp and arrival time, and counts
    the rest."""

    def __init__(self) -> None:
        self.frames: list[tuple[int, float]] = []  # video: (timestamp_ms, monotonic s on arrival)
        self.others = 0

    async def audio(self, session: StreamSession, frame: AudioData) -> None:
        self.others += 1

    async def video(self, session: StreamSession, frame: VideoData) -> None:
        self.frames.append((frame.timestamp_ms, time.monotonic()))

    async def transcript(self, session: StreamSession, frame: TranscriptData) -> None:
        self.others += 1

    async def event(self, session: StreamSession, event: EventData) -> None:
        self.others += 1

    async def chat(self, session: StreamSession, message: ChatData) -> None:
        self.others += 1

    async def dead_letter(self, session: StreamSession | None, letter: DeadLetterData) -> None:
        self.others += 1

    async def flush(self, session: StreamSession | None = None) -> None:
        return None

    async def end_of_stream(self, session: StreamSession, stop_reason: int | None, **_: Any) -> None:
        return None


@dataclass(frozen=True)
class Drop:
    """One drop's cost (BENCHMARKS.md, "How each bench measures", drop_bench)."""

    lost_frames: int
    lost_ms: int
    emulator_dropped: int
    reconnect_ms: float


async def _until(predicate: Any, what: str, timeout_s: float = DROP_TIMEOUT_S) -> float:
    """Poll `predicate` until true; returns the monotonic time it was seen true."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting for {what}")
        await asyncio.sleep(POLL_S)
    return time.monotonic()


def _hole(frames: list[tuple[int, float]], first: int, interval_ms: int) -> tuple[int, int]:
    """(frames, ms) of video missing around the drop: the largest timestamp step among the frames
    received from index `first` on, minus one frame interval."""
    stamps = [ts for ts, _ in frames[max(0, first - 1) :]]
    gap = max((b - a for a, b in zip(stamps, stamps[1:], strict=False)), default=interval_ms)
    lost_ms = max(0, gap - interval_ms)
    return round(lost_ms / interval_ms), lost_ms


async def _one_drop(
    handle: StreamHandle, collector: Collector, socket: str, interval_ms: int, media_sockets: int
) -> Drop:
    stats = handle.stats
    first = len(collector.frames)
    dropped0 = stats.dropped["video"]
    media0, signaling0 = stats.media_handshakes, stats.signaling_handshakes
    t0 = time.monotonic()
    if socket == "video":
        handle.drop_media("video", close_frame=False)
        back = await _until(lambda: stats.media_handshakes > media0, "the video socket to come back")
    else:
        handle.drop_signaling(close_frame=False)
        back = await _until(
            lambda: (
                stats.signaling_handshakes > signaling0 and stats.media_handshakes >= media0 + media_sockets
            ),
            "signaling and media to come back",
        )
    resumed = len(collector.frames)
    await _until(lambda: len(collector.frames) > resumed, "video after the reconnect")
    await asyncio.sleep(SETTLE_S)
    lost_frames, lost_ms = _hole(collector.frames, first, interval_ms)
    return Drop(lost_frames, lost_ms, stats.dropped["video"] - dropped0, (back - t0) * 1000)


async def run_policy(policy: str, drops: int, spacing_s: float, socket: str, seed: int) -> list[Drop]:
    """One meeting, `drops` drops of `socket`, under `policy` (old, new or current)."""
    overrides: dict[str, Any] = {}
    if policy != "current":
        overrides["reconnect_at_once"] = policy == "new"
    config = ClientConfig(CLIENT_ID, CLIENT_SECRET, **overrides)
    duration_s = 30 + drops * (spacing_s + 10)
    spec = MeetingSpec(seed=seed, participants=2, duration_s=duration_s, video="720p", fps=config.video_fps)
    meeting = await asyncio.to_thread(SyntheticMeeting, spec)
    collector = Collector()
    async with RTMSServer(client_id=CLIENT_ID, client_secret=CLIENT_SECRET) as server:
        handle = server.add_stream("drop-bench==", f"stream-{policy}", meeting, faults=Faults(), speed=1.0)
        backend = WebSocketBackend(Settings(), collector, config=config, rng=random.Random(seed))
        await backend.start(StreamSession(handle.meeting_uuid, handle.stream_id, handle.server_urls))
        try:
            await asyncio.wait_for(handle.wait_active(), 30)
            await _until(lambda: len(collector.frames) > 10, "video to flow", 60)
            interval_ms = round(1000 / config.video_fps)
            results: list[Drop] = []
            for _ in range(drops):
                await asyncio.sleep(spacing_s)
                results.append(await _one_drop(handle, collector, socket, interval_ms, len(config.wanted())))
            return results
        finally:
            await backend.stop()


def summary(policy: str, socket: str, drops: list[Drop]) -> dict[str, Any]:
    frames = [d.lost_frames for d in drops]
    ms = [d.lost_ms for d in drops]
    return {
        "policy": policy,
        "socket": socket,
        "drops": len(drops),
        "lost_frames_mean": round(statistics.fmean(frames), 2),
        "lost_frames_max": max(frames),
        "lost_ms_mean": round(statistics.fmean(ms), 1),
        "lost_ms_max": max(ms),
        "emulator_dropped_mean": round(statistics.fmean(d.emulator_dropped for d in drops), 2),
        "reconnect_ms_mean": round(statistics.fmean(d.reconnect_ms for d in drops), 1),
        "reconnect_ms_max": round(max(d.reconnect_ms for d in drops), 1),
        "per_drop_lost_frames": frames,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--policy", choices=["old", "new", "both", "current"], default="both")
    parser.add_argument("--socket", choices=["video", "signaling"], default="video")
    parser.add_argument("--drops", type=int, default=8)
    parser.add_argument("--spacing", type=float, default=4.0, help="seconds of streaming between drops")
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args(argv)
    logging.getLogger().setLevel(logging.ERROR)  # the client's reconnect warnings are the point here
    policies = ["old", "new"] if args.policy == "both" else [args.policy]
    rows = []
    for policy in policies:
        drops = asyncio.run(run_policy(policy, args.drops, args.spacing, args.socket, args.seed))
        rows.append(summary(policy, args.socket, drops))
    print(f"{'policy':8} {'socket':9} {'drops':>5} {'frames mean/max':>16} {'ms mean/max':>14} "
          f"{'emu dropped':>11} {'reconnect ms mean/max':>22}")  # fmt: skip
    for r in rows:
        print(
            f"{r['policy']:8} {r['socket']:9} {r['drops']:5d} "
            f"{r['lost_frames_mean']:>9.2f} / {r['lost_frames_max']:<4d} "
            f"{r['lost_ms_mean']:>7.1f} / {r['lost_ms_max']:<5d} {r['emulator_dropped_mean']:>11.2f} "
            f"{r['reconnect_ms_mean']:>13.1f} / {r['reconnect_ms_max']:<7.1f}"
        )
    for r in rows:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
