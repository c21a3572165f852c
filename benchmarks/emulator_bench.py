"""How many real-time meetings the emulator's RTMS server serves on one core with pacing kept.

    python -m benchmarks.emulator_bench --meetings 300,400,450,500 --duration 20   # step up

How it measures: BENCHMARKS.md, "How each bench measures", emulator_bench.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import gc
import json
import multiprocessing as mp
import os
import resource
import sys
import time
import traceback
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any
from urllib.parse import urlsplit

from rtms_protocol.session import (
    SIGNALING,
    Action,
    Answered,
    ClientPhase,
    ClientSession,
    Finish,
    Send,
    Verdict,
)

LATE_MS = 20.0
KEPT_FRACTION = 0.001
CLIENT_ID, SECRET = "bench-client", "bench-secret"


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _runqueue_wait_s() -> float:
    """Seconds this process was runnable but waiting for a CPU (others' load on a shared box)."""
    try:
        with open("/proc/self/schedstat") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return float("nan")


def _run(main: Any, loop: str) -> Any:
    """asyncio.run, or uvloop's loop when asked for (`pip install uvloop`)."""
    if loop == "uvloop":
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)


def _pin(cpu: int | None) -> None:
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})


# --- server process ---------------------------------------------------------------------------------


def server_main(conn: Connection, args: dict[str, Any]) -> None:
    _pin(args["server_cpu"])
    try:
        _run(_serve(conn, args), args["loop"])
    except BaseException:
        conn.send({"error": traceback.format_exc()})
        raise


async def _serve(conn: Connection, args: dict[str, Any]) -> None:
    from emulator.media import MeetingSpec, SyntheticMeeting
    from emulator.server import RTMSServer

    n = args["meetings"]
    specs = [
        MeetingSpec(
            seed=i % args["distinct"],
            participants=3,
            duration_s=args["duration"],
            video="720p",
            fps=args["fps"],
            transcripts=True,
        )
        for i in range(n)
    ]
    meetings = [SyntheticMeeting(spec) for spec in specs]
    for m in meetings:  # encode / load clips and voices before the clock starts
        m.prepare()
    gc.collect()
    gc.freeze()  # long-lived set-up objects leave the collector's scans (shorter gen-2 pauses)
    # equal meetings joining over the ramp read one serialized timeline (as ingest_bench's do)
    share_s = args["ramp"] + 10 if args["distinct"] < n else 0.0
    async with RTMSServer(client_id=CLIENT_ID, client_secret=SECRET, timeline_share_s=share_s) as server:
        handles = [
            server.add_stream(f"bench{i}==", f"bench-stream-{i}", m, speed=args["speed"])
            for i, m in enumerate(meetings)
        ]
        conn.send([(h.server_urls, h.meeting_uuid, h.stream_id) for h in handles])
        conn.recv()  # the client is about to connect
        cpu0, wall0, wait0 = _cpu_s(), time.monotonic(), _runqueue_wait_s()
        async with asyncio.timeout(args["duration"] / args["speed"] + args["ramp"] + 60):
            await asyncio.gather(*(h.wait_active() for h in handles))
            gc.freeze()  # the connections too
            cpu_a, wall_a = _cpu_s(), time.monotonic()  # steady state: every meeting streams ...
            done = [asyncio.ensure_future(h.wait_done()) for h in handles]
            await asyncio.wait(done, return_when=asyncio.FIRST_COMPLETED)
            cpu_b, wall_b = _cpu_s(), time.monotonic()  # ... until the first one ends
            reasons = await asyncio.gather(*done)
        cpu1, wall1, wait1 = _cpu_s(), time.monotonic(), _runqueue_wait_s()
        stats = [h.stats for h in handles]
        conn.send(
            {
                "cpu_s": cpu1 - cpu0,
                "wall_s": wall1 - wall0,
                "runqueue_wait_s": wait1 - wait0,
                "steady_cpu_s": cpu_b - cpu_a,
                "steady_meeting_s": n * (wall_b - wall_a) * args["speed"],
                "ended_normally": sum(r == 6 for r in reasons),
                "frames": sum(sum(s.sent.values()) for s in stats),
                "bytes": sum(s.bytes_sent for s in stats),
                "late": sum(s.late for s in stats),
                "max_late_ms": max(s.max_late_ms for s in stats),
                "pacer_wakeups": server.pacer.wakeups,
            }
        )


# --- client process ---------------------------------------------------------------------------------


@dataclass
class Totals:
    frames: int = 0
    bytes: int = 0
    late: int = 0
    lateness_ms: array.array = field(default_factory=lambda: array.array("d"))
    connected: int = 0
    ended: int = 0
    errors: list[str] = field(default_factory=list)


class WSClient(asyncio.Protocol):
    """A minimal WebSocket client: upgrade, unmasked server frames in, masked client frames out."""

    def __init__(self, path: str, host: str, on_message: Any, on_open: Any) -> None:
        self.path, self.host = path, host
        self.on_message, self.on_open = on_message, on_open
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.upgraded = False
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        key = "dGhlIHNhbXBsZSBub25jZQ=="
        self.transport.write(  # type: ignore[union-attr]
            f"GET {self.path} HTTP/1.1\r\nHost: {self.host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )

    def send_text(self, text: str) -> None:
        data = text.encode()
        mask = os.urandom(4)
        n = len(data)
        header = bytes((0x81, 0x80 | n)) if n < 126 else bytes((0x81, 0xFE)) + n.to_bytes(2, "big")
        key = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
        masked = (int.from_bytes(data, "big") ^ key).to_bytes(n, "big") if n else b""
        assert self.transport is not None
        self.transport.write(header + mask + masked)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                raise RuntimeError(bytes(buf[:80]).decode(errors="replace"))
            del buf[: end + 4]
            self.upgraded = True
            self.on_open(self)
        pos, n = 0, len(buf)
        while n - pos >= 2:
            b1 = buf[pos + 1] & 0x7F
            hdr = 2
            if b1 == 126:
                if n - pos < 4:
                    break
                b1, hdr = int.from_bytes(buf[pos + 2 : pos + 4], "big"), 4
            elif b1 == 127:
                if n - pos < 10:
                    break
                b1, hdr = int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10
            if n - pos < hdr + b1:
                break
            opcode = buf[pos] & 0x0F
            payload = bytes(buf[pos + hdr : pos + hdr + b1])
            pos += hdr + b1
            if opcode in (1, 2):
                self.on_message(self, payload)
            elif opcode == 8 and self.transport is not None:
                self.transport.close()
        del buf[:pos]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


class BenchMeeting:
    """One meeting on the client side: signaling + audio/video/transcript sockets. The handshakes
    are `rtms_protocol.session.ClientSession`'s (the ingest client's machine); frames take a fast
    path that only reads their timestamp."""

    KINDS = (("audio", 1), ("video", 2), ("transcript", 8))

    def __init__(self, url: str, meeting_uuid: str, stream_id: str, totals: Totals, speed: float) -> None:
        self.url = url
        self.hs = ClientSession.signed(CLIENT_ID, SECRET, meeting_uuid, stream_id)
        self.totals = totals
        self.speed = speed
        self.base_ms: int | None = None
        self.sig: WSClient | None = None
        self.done = asyncio.get_running_loop().create_future()

    async def _open(self, url: str, on_message: Any, on_open: Any) -> WSClient:
        parts = urlsplit(url)
        loop = asyncio.get_running_loop()
        _, proto = await loop.create_connection(
            lambda: WSClient(parts.path, "127.0.0.1", on_message, on_open),
            parts.hostname or "127.0.0.1",
            parts.port or 80,
        )
        return proto

    async def start(self) -> None:
        hello = self.hs.hello()
        self.sig = await self._open(self.url, self._on_signaling, lambda ws: ws.send_text(hello))

    def _send(self, ws: WSClient, actions: list[Action]) -> None:
        for a in actions:
            if isinstance(a, Send):
                (self.sig if a.channel == SIGNALING and self.sig is not None else ws).send_text(a.text)

    def _end(self) -> None:
        if not self.done.done():
            self.done.set_result(None)

    def _on_signaling(self, ws: WSClient, payload: bytes) -> None:
        msg = json.loads(payload)
        actions = self.hs.on_message(SIGNALING, msg)
        self._send(ws, actions)
        if Answered(SIGNALING, Verdict.OK) in actions:
            for kind, bit in self.KINDS:
                req = self.hs.media_hello(kind, bit)
                asyncio.ensure_future(
                    self._open(
                        self.hs.media_urls[kind],
                        lambda w, p, k=kind: self._on_media(k, w, p),
                        lambda w, r=req: w.send_text(r),
                    )
                )
        elif actions and isinstance(actions[0], Answered):
            self.totals.errors.append(f"handshake {msg}")
            self._end()
        elif msg["msg_type"] == 6 and msg["event"]["event_type"] == 1:
            self.base_ms = msg["event"]["timestamp"]
        elif Finish() in actions:
            self.totals.ended += 1
            self._end()

    def _on_media(self, kind: str, ws: WSClient, payload: bytes) -> None:
        if payload[12:14] in (b"14", b"15", b"16", b"17"):  # {"msg_type":1x,...
            now_ms = time.time() * 1000.0
            i = payload.rfind(b'"timestamp":') + 12
            ts = int(payload[i : i + 13])
            base = self.base_ms or ts
            late = now_ms - (base + (ts - base) / self.speed)
            totals = self.totals
            totals.frames += 1
            totals.bytes += len(payload)
            totals.lateness_ms.append(late)
            if late > LATE_MS:
                totals.late += 1
            return
        msg = json.loads(payload)
        was_ready = self.hs.phase is ClientPhase.READY
        actions = self.hs.on_message(kind, msg)
        if any(isinstance(a, Answered) and a.verdict is not Verdict.OK for a in actions):
            self.totals.errors.append(f"data handshake {msg}")
        self._send(ws, actions)
        if not was_ready and self.hs.phase is ClientPhase.READY:
            self.totals.connected += 1


def client_main(conn: Connection, args: dict[str, Any]) -> None:
    _pin(args["client_cpu"])
    targets = conn.recv()
    conn.send("go")
    try:
        totals = _run(_run_clients(targets, args), args["loop"])
    except BaseException:
        conn.send({"error": traceback.format_exc()})
        raise
    lat = sorted(totals.lateness_ms)
    conn.send(
        {
            "cpu_s": _cpu_s(),
            "runqueue_wait_s": _runqueue_wait_s(),
            "frames": totals.frames,
            "bytes": totals.bytes,
            "late": totals.late,
            "p99_late_ms": lat[int(len(lat) * 0.99)] if lat else 0.0,
            "max_late_ms": lat[-1] if lat else 0.0,
            "connected": totals.connected,
            "ended": totals.ended,
            "errors": totals.errors[:5],
        }
    )


async def _run_clients(targets: list[tuple[str, str, str]], args: dict[str, Any]) -> Totals:
    totals = Totals()
    meetings = [BenchMeeting(url, uuid, sid, totals, args["speed"]) for url, uuid, sid in targets]
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    step = args["ramp"] / max(len(meetings), 1)

    async def start(i: int, m: BenchMeeting) -> None:
        await asyncio.sleep(max(0.0, t0 + i * step - loop.time()))
        try:
            await m.start()
        except OSError as exc:
            totals.errors.append(f"connect: {exc!r}")
            m.done.set_result(None)

    await asyncio.gather(*(start(i, m) for i, m in enumerate(meetings)))
    gc.freeze()
    deadline = args["duration"] / args["speed"] + args["ramp"] + 90
    progress = asyncio.ensure_future(_progress(totals, len(meetings)))
    try:
        async with asyncio.timeout(deadline):
            await asyncio.gather(*(m.done for m in meetings))
    except TimeoutError:
        totals.errors.append(f"timed out: {sum(not m.done.done() for m in meetings)} meetings never ended")
    finally:
        progress.cancel()
    return totals


async def _progress(totals: Totals, n: int) -> None:
    while True:
        await asyncio.sleep(5)
        print(
            f"  ... {totals.connected}/{n} meetings streaming, {totals.frames} frames, {totals.late} late",
            file=sys.stderr,
        )


# --- one step -----------------------------------------------------------------------------------------


def _recv(conn: Connection, proc: Any, timeout_s: float) -> Any:
    """The next message from a child; fails (instead of hanging) if it died or went silent."""
    deadline = time.monotonic() + timeout_s
    while not conn.poll(1.0):
        if not proc.is_alive():
            raise RuntimeError(f"benchmark process {proc.name} died (exit code {proc.exitcode})")
        if time.monotonic() > deadline:
            raise RuntimeError(f"benchmark process {proc.name} sent nothing for {timeout_s:.0f} s")
    msg = conn.recv()
    if isinstance(msg, dict) and "error" in msg:
        raise RuntimeError(f"benchmark process {proc.name} failed:\n{msg['error']}")
    return msg


def run_step(meetings: int, args: argparse.Namespace) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    config = {
        "meetings": meetings,
        "duration": args.duration,
        "fps": args.fps,
        "speed": args.speed,
        "server_cpu": args.server_cpu,
        "client_cpu": args.client_cpu,
        "ramp": args.ramp,
        "distinct": (args.distinct or meetings),
        "loop": args.loop,
    }
    server_conn, server_child = ctx.Pipe()
    client_conn, client_child = ctx.Pipe()
    server = ctx.Process(target=server_main, args=(server_child, config), daemon=True)
    client = ctx.Process(target=client_main, args=(client_child, config), daemon=True)
    server.start()
    try:
        targets = _recv(server_conn, server, 600)
        client.start()
        client_conn.send(targets)
        _recv(client_conn, client, 60)
        server_conn.send("go")
        limit = args.duration / args.speed + args.ramp + 180
        srv = _recv(server_conn, server, limit)
        cli = _recv(client_conn, client, limit)
    finally:
        for proc in (server, client):
            proc.join(10)
            if proc.is_alive():
                proc.kill()
    meeting_seconds = meetings * args.duration
    frames = max(srv["frames"], 1)
    disturbed = srv["runqueue_wait_s"] > 0.02 * srv["wall_s"] or cli["runqueue_wait_s"] > 0.02 * srv["wall_s"]
    if disturbed:
        print(
            "  warning: other processes took CPU from the benchmark; run it on a quiet machine",
            file=sys.stderr,
        )
    kept = (
        srv["ended_normally"] == meetings
        and cli["frames"] == srv["frames"]
        and srv["late"] <= KEPT_FRACTION * frames
        and cli["late"] <= KEPT_FRACTION * frames
    )
    return {
        "meetings": meetings,
        "distinct": config["distinct"],
        "loop": args.loop,
        "duration_s": args.duration,
        "pacing_kept": kept,
        "disturbed_by_other_load": disturbed,
        "server_cpu_ms_per_meeting_s": round(1000 * srv["cpu_s"] / meeting_seconds, 3),
        "server_steady_cpu_ms_per_meeting_s": round(
            1000 * srv["steady_cpu_s"] / max(srv["steady_meeting_s"], 1e-9), 3
        ),
        "server_cpu_util": round(srv["cpu_s"] / srv["wall_s"], 3),
        "server_runqueue_wait_s": round(srv["runqueue_wait_s"], 2),
        "server_frames": srv["frames"],
        "server_mbit_s": round(8 * srv["bytes"] / srv["wall_s"] / 1e6, 1),
        "server_late": srv["late"],
        "server_max_late_ms": round(srv["max_late_ms"], 1),
        "client_frames": cli["frames"],
        "client_late": cli["late"],
        "client_p99_late_ms": round(cli["p99_late_ms"], 1),
        "client_max_late_ms": round(cli["max_late_ms"], 1),
        "client_cpu_util": round(cli["cpu_s"] / srv["wall_s"], 3),
        "client_runqueue_wait_s": round(cli["runqueue_wait_s"], 2),
        "client_errors": cli["errors"],
        "pacer_wakeups_per_s": round(srv["pacer_wakeups"] / srv["wall_s"]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--meetings", default="400", help="count, or comma-separated counts to step through")
    parser.add_argument("--duration", type=float, default=20.0, help="meeting length, seconds of media")
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--speed", type=float, default=1.0, help="1.0 = real time")
    parser.add_argument(
        "--distinct", type=int, default=0, help="distinct meetings (seeds) to play; 0 = every meeting its own"
    )
    parser.add_argument("--ramp", type=float, default=5.0, help="seconds over which the meetings join")
    parser.add_argument(
        "--loop", choices=("asyncio", "uvloop"), default="asyncio", help="event loop of both processes"
    )
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--client-cpu", type=int, default=1)
    args = parser.parse_args(argv)
    best = 0
    for count in (int(c) for c in args.meetings.split(",")):
        print(f"step: {count} meetings x {args.duration:g} s", file=sys.stderr)
        result = run_step(count, args)
        print(json.dumps(result), flush=True)
        if result["pacing_kept"]:
            best = max(best, count)
    print(f"max concurrent real-time meetings with pacing kept (of those tried): {best}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
