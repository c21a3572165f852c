"""The emulator's RTMS server without its socket sends: Python CPU per meeting-second, steady and load-proof.

    python -m benchmarks.emulator_core_bench --meetings 200 --distinct 10 --seconds 10

How it measures: BENCHMARKS.md, "How each bench measures", emulator_core_bench.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import sys
import time
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

import rtms_protocol as rp
from rtms_protocol.session import ClientSession

CLIENT_ID, SECRET = "bench-client", "bench-secret"
FPS = 25  # what the ingest worker asks for
MEDIA = (("audio", 1), ("video", 2), ("transcript", 8))


async def _drain(ws: ClientConnection) -> None:
    with contextlib.suppress(ConnectionClosed):
        async for _ in ws:
            pass


async def _join(handle: Any, readers: list[asyncio.Task[None]]) -> None:
    """Join as ingest does: signaling, one socket per media type, ready-ack, subscriptions."""
    session = ClientSession.signed(CLIENT_ID, SECRET, handle.meeting_uuid, handle.stream_id)
    ws = await connect(handle.server_urls, compression=None, max_size=None)
    await ws.send(session.hello())
    session.on_hello_answer(rp.HandshakeResponse.from_dict(json.loads(await ws.recv())))
    params = rp.MediaParams(video=rp.VideoParams(fps=FPS))
    for key, bit in MEDIA:
        media = await connect(session.media_urls[key], compression=None, max_size=None)
        await media.send(session.media_hello(key, bit, params if key == "video" else None))
        session.on_media_answer(key, rp.DataHandshakeResponse.from_dict(json.loads(await media.recv())))
        readers.append(asyncio.create_task(_drain(media)))
    session.subscribe = (2, 3, 4)
    for text in session.ready():
        await ws.send(text)
    readers.append(asyncio.create_task(_drain(ws)))


async def run(args: argparse.Namespace) -> dict[str, Any]:
    import emulator.peer
    from emulator.media import MeetingSpec, SyntheticMeeting
    from emulator.server import RTMSServer

    n, distinct = args.meetings, args.distinct or args.meetings
    meetings = [
        SyntheticMeeting(
            MeetingSpec(
                seed=1 + i % distinct, participants=3, duration_s=args.seconds + 60, video="720p", fps=FPS
            )
        )
        for i in range(n)
    ]
    for m in meetings:
        m.prepare()
    # equal meetings share their timeline, as in ingest_bench (left out when each is its own, so the
    # same command runs on code from before the share window)
    share: dict[str, Any] = {"timeline_share_s": 120.0} if distinct < n else {}
    async with RTMSServer(client_id=CLIENT_ID, client_secret=SECRET, **share) as server:
        handles = [server.add_stream(f"core{i}==", f"core-stream-{i}", m) for i, m in enumerate(meetings)]
        readers: list[asyncio.Task[None]] = []
        gate = asyncio.Semaphore(20)

        async def join(handle: Any) -> None:
            async with gate:
                await _join(handle, readers)

        await asyncio.gather(*(join(h) for h in handles))
        await asyncio.gather(*(h.wait_active() for h in handles))
        await asyncio.sleep(1.0)
        # From here on nothing runs but the pacer, stepped by hand on a fake clock, 1 ms a step;
        # every socket write is counted, not made.
        writes = [0, 0]

        def write(self: Any, data: bytes) -> bool:
            writes[0] += 1
            writes[1] += len(data)
            return True

        real_write = emulator.peer.Peer.write
        emulator.peer.Peer.write = write  # type: ignore[method-assign]
        loop = asyncio.get_running_loop()
        clock = [loop.time()]
        loop.time = lambda: clock[0]  # type: ignore[method-assign]
        pacer = server.pacer
        frames0 = sum(sum(h.stats.sent.values()) for h in handles)
        gc.collect()
        gc.freeze()
        cpu0 = time.process_time()
        for _ in range(int(args.seconds * 1000)):
            clock[0] += 0.001
            pacer._run()
        cpu = time.process_time() - cpu0
        frames = sum(sum(h.stats.sent.values()) for h in handles) - frames0
        del loop.time  # the loop's own clock again, and real writes, for the shutdown
        emulator.peer.Peer.write = real_write  # type: ignore[method-assign]
        for task in readers:
            task.cancel()
        return {
            "meetings": n,
            "distinct": distinct,
            "seconds": args.seconds,
            "cpu_ms_per_meeting_s": round(1000 * cpu / (n * args.seconds), 4),
            "us_per_frame": round(1e6 * cpu / max(frames, 1), 2),
            "frames": frames,
            "writes": writes[0],
            "mbytes": round(writes[1] / 1e6, 1),
        }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.emulator_core_bench", description=__doc__.splitlines()[0]
    )
    p.add_argument("--meetings", type=int, default=200)
    p.add_argument("--distinct", type=int, default=10, help="distinct meetings round robin (0: each its own)")
    p.add_argument("--seconds", type=float, default=10.0, help="media seconds stepped")
    args = p.parse_args(argv)
    result = asyncio.run(run(args))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
