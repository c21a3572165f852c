"""Ingest's per-record path without sockets or a broker: CPU µs per received RTMS message, by kind.

    python -m benchmarks.ingest_core_bench   # 10 meetings x 10 s, best of 5

How it measures: BENCHMARKS.md, "How each bench measures", ingest_core_bench.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import random
import time
from dataclasses import dataclass
from typing import Any

from emulator.media import MeetingSpec, SyntheticMeeting
from emulator.wire import AUDIO, TRANSCRIPT, VIDEO, FrameEncoder
from ingest.backend import StreamSession
from ingest.producer import FrameProducer
from ingest.record_batch import RecordBatch
from ingest.rtms_client import SIGNALING, ClientConfig, Connect, RtmsClient
from ingest.ws_client import WebSocketBackend
from rtmsflow.settings import Settings

PARTICIPANTS = 3
FPS = 25
T0_MS = 1_765_000_000_000
_CHANNEL = {"audio": AUDIO, "video": VIDEO, "transcript": TRANSCRIPT}
YIELD_EVERY = 200  # messages between event-loop turns (the shipper, acks, linger timers run then)


@dataclass
class Message:
    """One received message: the meeting it belongs to, its media socket and its text."""

    meeting: int
    kind: str
    text: str


def messages(meetings: int, seconds: float, seed: int = 1) -> list[Message]:
    """Every meeting's audio, video and transcript messages as the emulator sends them, interleaved
    in media time (the order the worker receives them in)."""
    encoder = FrameEncoder()
    timed: list[tuple[int, int, Message]] = []
    for m in range(meetings):
        spec = MeetingSpec(
            seed=seed + m, participants=PARTICIPANTS, duration_s=seconds, video="720p", fps=FPS
        )
        meeting = SyntheticMeeting(spec)
        for item in meeting.timeline(events=False):
            channel = _CHANNEL[item.kind]
            base_ms = T0_MS + m * 7
            pieces = encoder.pieces(channel, item)
            parts = [p if isinstance(p, bytes) else b"%d" % (base_ms + p) for p in pieces]
            if len(pieces) == 4:  # audio / video: head, base64, tail, timestamp, then the closing braces
                parts.append(b"}}")
            timed.append((item.offset_ms, m, Message(m, item.kind, b"".join(parts).decode())))
    timed.sort(key=lambda t: (t[0], t[1]))
    return [msg for _, _, msg in timed]


class AckingProducer:
    """What `FrameProducer` needs of aiokafka's producer for its batch path: its batches built into
    their bytes as aiokafka's sender builds them, and acknowledged at once."""

    def __init__(self) -> None:
        self.records = 0
        self.batches = 0

    async def send_batch(self, batch: RecordBatch, topic: str, *, partition: int) -> asyncio.Future[Any]:
        self.batches += 1
        self.records += batch.record_count()
        batch._build()
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut

    async def partitions_for(self, topic: str) -> set[int]:
        return set(range(8))

    async def send(self, topic: str, value: Any = None, key: Any = None, **kw: Any) -> asyncio.Future[Any]:
        self.records += 1  # a marker or a record too large for a batch
        return _acked()

    async def flush(self) -> None:
        pass


def _acked() -> asyncio.Future[Any]:
    fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    fut.set_result(None)
    return fut


def ready_backend(
    frames: FrameProducer, settings: Settings, meeting: int, config: ClientConfig | None = None
) -> tuple[WebSocketBackend, dict[str, int]]:
    """A `WebSocketBackend` whose machine went through the signaling and data handshakes (READY),
    with no socket: messages are posted to its inbox by hand; and its sockets' connection numbers."""
    session = StreamSession(
        f"bench-meeting-{meeting:04d}==", f"stream-{meeting}", "ws://127.0.0.1:9/signaling",
        started_ms=T0_MS, fresh=True, media_origin_ms=T0_MS,
    )  # fmt: skip
    config = config or ClientConfig("cid", "csecret", video_fps=FPS)
    backend = WebSocketBackend(settings, frames, config=config, rng=random.Random(meeting))
    client = RtmsClient(session, config, random.Random(meeting))
    backend.session, backend.machine = session, client
    conns: dict[str, int] = {}

    def run(actions: list[Any]) -> list[Any]:
        conns.update({a.channel: a.conn for a in actions if isinstance(a, Connect)})
        return actions

    now = time.monotonic()
    run(client.start(now))
    run(client.on_open(SIGNALING, conns[SIGNALING], now))
    urls = {key: f"ws://127.0.0.1:9/media/{key}" for key in ("audio", "video", "transcript")}
    answer = json.dumps({"msg_type": 2, "status_code": 0, "media_server": {"server_urls": urls}})
    for connect in [a for a in run(client.on_message(SIGNALING, conns[SIGNALING], answer, now, 0))
                    if isinstance(a, Connect)]:  # fmt: skip
        run(client.on_open(connect.channel, connect.conn, now))
        reply = json.dumps({"msg_type": 4, "status_code": 0, "payload_encrypted": False})
        run(client.on_message(connect.channel, connect.conn, reply, now, 0))
    assert client.ready_count == 1, "the client did not reach READY"
    return backend, conns


async def one_pass(msgs: list[Message], meetings: int) -> tuple[float, int]:
    """Feed every message through a fresh worker's per-message path; (CPU seconds of the feeding
    and the final flush, set-up excluded; records acked)."""
    settings = Settings(kafka_bootstrap="unused:9092")
    fake = AckingProducer()
    frames = FrameProducer(settings, producer=fake)  # type: ignore[arg-type]
    await frames.start()
    backends = [ready_backend(frames, settings, m) for m in range(meetings)]
    loop = asyncio.get_running_loop()
    started = time.process_time()
    for i, msg in enumerate(msgs):
        backend, conns = backends[msg.meeting]
        client = backend.machine
        assert client is not None
        # what the socket's callback does per message, then one turn of the session loop (`_run`)
        backend._received(msg.kind, conns[msg.kind], msg.text)
        notice = await backend._next_notice(client, loop)
        assert notice is not None
        await backend._turn(client, notice)
        if i % YIELD_EVERY == YIELD_EVERY - 1:
            await asyncio.sleep(0)
    await frames.flush()
    cpu_s = time.process_time() - started
    await frames.stop()
    for backend, _ in backends:
        if backend._timer is not None:
            backend._timer.cancel()
    return cpu_s, fake.records


def timed(msgs: list[Message], meetings: int, repeat: int) -> tuple[list[float], int]:
    """CPU seconds of `repeat` passes (each in a fresh event loop), and the records of the last."""
    times = []
    records = 0
    for _ in range(repeat):
        cpu_s, records = asyncio.run(one_pass(msgs, meetings))
        times.append(cpu_s)
    return times, records


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--meetings", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--kinds", default="audio,video,transcript,mixed")
    ap.add_argument("--profile", metavar="FILE", help="write a cProfile of one more mixed pass to FILE")
    args = ap.parse_args()
    msgs = messages(args.meetings, args.seconds)
    by_kind = {kind: [m for m in msgs if m.kind == kind] for kind in ("audio", "video", "transcript")}
    by_kind["mixed"] = msgs
    result: dict[str, Any] = {"meetings": args.meetings, "seconds": args.seconds, "messages": len(msgs)}
    for kind in args.kinds.split(","):
        part = by_kind[kind]
        times, records = timed(part, args.meetings, args.repeat)
        best, median = min(times), sorted(times)[len(times) // 2]
        assert records >= len(part), f"{kind}: {records} records acked of {len(part)} messages"
        size = sum(len(m.text) for m in part) / len(part)
        line = {
            "messages": len(part),
            "avg_bytes": round(size),
            "us_per_msg_best": round(best * 1e6 / len(part), 2),
            "us_per_msg_median": round(median * 1e6 / len(part), 2),
            "us_per_msg_max": round(max(times) * 1e6 / len(part), 2),
        }
        if kind == "mixed":
            meeting_s = args.meetings * args.seconds
            line["ms_per_meeting_s_best"] = round(best * 1e3 / meeting_s, 3)
            line["meetings_per_core_on_this_path"] = round(meeting_s / best)
        result[kind] = line
        print(f"{kind:>10}: {line}", flush=True)
    result["load"] = open("/proc/loadavg").read().split()[0]
    print(json.dumps(result))
    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        asyncio.run(one_pass(msgs, args.meetings))
        prof.disable()
        prof.dump_stats(args.profile)
        print(f"profile written to {args.profile}")


if __name__ == "__main__":
    main()
