"""`rtmsflow emulator meeting|serve` as a user runs them (subprocesses), against a webhook
receiver that verifies Zoom's signature and joins each announced stream with a raw RTMS client."""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

import rtms_protocol as rp
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

CLIENT_ID, CLIENT_SECRET, TOKEN = "cli-client", "cli-secret", "cli-webhook-token"


@dataclass
class Joined:
    """What one raw client received on a stream."""

    frames: collections.Counter[int] = field(default_factory=collections.Counter)
    events: list[int] = field(default_factory=list)
    stream_states: list[tuple[int, int | None]] = field(default_factory=list)
    audio_bytes: int = 0


def sends(actions: list[Action]) -> list[Send]:
    return [a for a in actions if isinstance(a, Send)]


async def join(server_urls: str, meeting_uuid: str, stream_id: str) -> Joined:
    """Signaling handshake, one `all` media socket, ready-ack, subscribe; read until TERMINATED."""
    got = Joined()
    hs = ClientSession.signed(CLIENT_ID, CLIENT_SECRET, meeting_uuid, stream_id, subscribe=(2, 3, 4))
    async with connect(server_urls, compression=None, max_size=None) as signaling:
        await signaling.send(hs.hello())
        assert hs.on_message(SIGNALING, json.loads(await signaling.recv())) == [
            Answered(SIGNALING, Verdict.OK)
        ]
        async with connect(hs.media_urls["all"], compression=None, max_size=None) as media:
            await media.send(hs.media_hello("all", 32))
            actions = hs.on_message("all", json.loads(await media.recv()))
            assert actions[0] == Answered("all", Verdict.OK) and hs.phase is ClientPhase.READY
            for send in sends(actions):  # ready-ack and subscription, on signaling
                await signaling.send(send.text)

            async def read_media() -> None:
                with contextlib.suppress(ConnectionClosed):  # a normal close just ends the loop
                    async for raw in media:
                        msg = json.loads(raw)
                        got.frames[msg["msg_type"]] += 1
                        if msg["msg_type"] == 14:
                            got.audio_bytes += len(base64.b64decode(msg["content"]["data"]))
                        for send in sends(hs.on_message("all", msg)):  # keep-alives
                            await media.send(send.text)

            reader = asyncio.create_task(read_media())
            async for raw in signaling:
                msg = json.loads(raw)
                if msg["msg_type"] == 6:
                    got.events.append(msg["event"]["event_type"])
                elif msg["msg_type"] == 8:
                    got.stream_states.append((msg["state"], msg.get("reason")))
                actions = hs.on_message(SIGNALING, msg)
                for send in sends(actions):
                    await signaling.send(send.text)
                if Finish() in actions:
                    break
            await media.close()
            await reader
    return got


@dataclass
class Receiver:
    """A webhook endpoint: checks every signature, answers 200, and joins new streams."""

    url: str = ""
    join_streams: bool = True
    hooks: list[dict[str, Any]] = field(default_factory=list)
    clients: dict[str, asyncio.Task[Joined]] = field(default_factory=dict)

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        ts = request.headers["x-zm-request-timestamp"]
        if request.headers["x-zm-signature"] != rp.webhook_signature(TOKEN, ts, raw):
            return web.Response(status=401)
        body = json.loads(raw)
        self.hooks.append(body)
        p = body["payload"]
        if (
            body["event"].endswith("rtms_started")
            and self.join_streams
            and p["rtms_stream_id"] not in self.clients
        ):
            instance = (
                p.get("meeting_uuid") or p.get("webinar_uuid") or p.get("session_id") or p["engagement_id"]
            )
            self.clients[p["rtms_stream_id"]] = asyncio.create_task(
                join(p["server_urls"], instance, p["rtms_stream_id"])
            )
        return web.Response(status=200)

    def events(self, suffix: str) -> list[dict[str, Any]]:
        return [h["payload"] for h in self.hooks if h["event"].endswith(suffix)]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/webhook", rec.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    rec.url = f"http://127.0.0.1:{runner.addresses[0][1]}/webhook"
    yield rec
    for task in rec.clients.values():
        task.cancel()
    await runner.cleanup()


def env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "ZM_RTMS_CLIENT": CLIENT_ID,
        "ZM_RTMS_SECRET": CLIENT_SECRET,
        "ZOOM_SECRET_TOKEN": TOKEN,
        "RTMSFLOW_CACHE": str(tmp_path / "cache"),
    }


async def run_cli(tmp_path: Path, *args: str) -> tuple[int, list[dict[str, Any]], str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "rtmsflow.cli", "emulator", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env(tmp_path),
    )  # fmt: skip
    # deadlines only catch a hang: a loaded machine makes the subprocess slow, never wrong
    out, err = await asyncio.wait_for(proc.communicate(), 300)
    lines = [json.loads(line) for line in out.decode().splitlines() if line.strip()]
    assert proc.returncode is not None
    return proc.returncode, lines, err.decode()


async def test_meeting_announces_plays_and_stops_every_stream(receiver: Receiver, tmp_path: Path) -> None:
    code, lines, err = await run_cli(
        tmp_path,
        "meeting", "--participants", "2", "--duration", "4", "--video-resolution", "360p", "--speed", "2",
        "--meetings", "2", "--stop-reason", "2", "--webhook", receiver.url, "--started-twice",
    )  # fmt: skip
    assert code == 0, err[-3000:]
    assert lines[0]["rtms_url"].startswith("ws://127.0.0.1:")
    reports = lines[1:]
    assert [r["ok"] for r in reports] == [True, True] and {r["stop_reason"] for r in reports} == {2}
    started, stopped = receiver.events("rtms_started"), receiver.events("rtms_stopped")
    assert len(started) == 4, "each rtms_started delivered twice"
    assert sorted(s["rtms_stream_id"] for s in stopped) == sorted(r["rtms_stream_id"] for r in reports)
    assert {s["stop_reason"] for s in stopped} == {2}
    for report in reports:
        got = await asyncio.wait_for(receiver.clients[report["rtms_stream_id"]], 120)
        assert got.stream_states[-1] == (rp.StreamState.TERMINATED, 2)
        assert got.frames[14] > 100 and got.frames[15] > 50 and got.audio_bytes % 640 == 0
        assert 3 in got.events and 2 in got.events
        assert report["sent"]["audio"] == got.frames[14]


async def test_meeting_without_a_client_stops_with_connection_timeout(
    receiver: Receiver, tmp_path: Path
) -> None:
    receiver.join_streams = False
    code, lines, _ = await run_cli(
        tmp_path, "meeting", "--duration", "2", "--no-video", "--product", "webinar",
        "--connect-timeout", "0.5", "--webhook", receiver.url, "--meeting-uuid", "webinar-uuid==",
    )  # fmt: skip
    assert code == 1
    assert "no client connected" in lines[-1]["problem"]
    assert receiver.events("rtms_started")[0]["webinar_uuid"] == "webinar-uuid=="
    assert [s["stop_reason"] for s in receiver.events("rtms_stopped")] == [rp.StopReason.CONNECTION_TIMEOUT]


async def test_missing_credentials_are_a_usage_error(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "rtmsflow.cli", "emulator", "meeting", "--webhook", "http://127.0.0.1:9/",
        stderr=asyncio.subprocess.PIPE,
        env={k: v for k, v in env(tmp_path).items() if k != "ZOOM_SECRET_TOKEN"},
    )  # fmt: skip
    _, err = await proc.communicate()
    assert proc.returncode == 2 and b"--secret-token (or $ZOOM_SECRET_TOKEN)" in err


async def test_serve_prints_its_url_and_stops_on_sigint(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "rtmsflow.cli", "emulator", "serve",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env(tmp_path),
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 120)
        url = json.loads(line)["rtms_url"]
        with pytest.raises(InvalidStatus, match="404"):
            async with connect(url + "/rtms/unknown/signaling"):
                pass
    finally:
        proc.send_signal(signal.SIGINT)
        await asyncio.wait_for(proc.wait(), 60)
    assert proc.returncode == 0
