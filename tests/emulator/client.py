"""A raw RTMS client for the emulator server's tests (`test_emulator_server*.py`): hand-made media
items, a socket that records what it receives and answers keep-alives, and a client that does the
handshakes with `ClientSession` (the ingest client's handshake machine)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

import rtms_protocol as rp
from emulator.faults import Faults
from emulator.server import StreamHandle
from rtms_protocol.session import SIGNALING, ClientSession, Verdict, keep_alive_reply

CLIENT_ID = "test-client-id"
SECRET = "test-client-secret"
MEETING = "emuMeeting=="
ALICE, BOB = 16778240, 16779264


@dataclass(frozen=True)
class Item:
    """A hand-made media item (the server takes anything shaped like emulator.media.MediaItem)."""

    kind: str
    offset_ms: int
    user_id: int = 0
    user_name: str = ""
    data: bytes | str = b""
    start_ms: int | None = None
    end_ms: int | None = None
    event: dict[str, Any] | None = None


def make_items(duration_ms: int = 600, video_every: int = 100) -> list[Item]:
    """Joins at 0, Alice speaking, 20 ms audio packets (mixed: user 0), video, one transcript,
    Bob leaves near the end."""
    items = [
        Item("event", 0, event={"event_type": 3, "participants": [
            {"user_id": ALICE, "user_name": "Alice"}, {"user_id": BOB, "user_name": "Bob"}]}),
        Item("event", 0, ALICE, "Alice", event={"event_type": 2, "user_id": ALICE, "user_name": "Alice"}),
        Item("event", 0, event={"event_type": 8, "participants": [{"user_id": ALICE}]}),
    ]  # fmt: skip
    for t in range(0, duration_ms, 20):
        items.append(Item("audio", t, 0, "", bytes([t // 20 % 256]) * 640))
    for t in range(0, duration_ms, video_every):
        items.append(
            Item("video", t, ALICE, "Alice", b"\x00\x00\x00\x01\x65" + bytes([t // 100 % 256]) * 3000)
        )
    items.append(Item("transcript", 300, BOB, "Bob", "hello \u00e9 world", start_ms=100, end_ms=280))
    items.append(Item("event", duration_ms - 20, event={"event_type": 4, "participants": [{"user_id": BOB}]}))
    return sorted(items, key=lambda i: i.offset_ms)


class Socket:
    """One client socket that records every message and answers keep-alives (unless told not to)."""

    def __init__(self, name: str, ws: ClientConnection, answer_keepalives: bool = True) -> None:
        self.name = name
        self.ws = ws
        self.answer = answer_keepalives
        self.raw: list[str | bytes] = []
        self.msgs: list[dict[str, Any]] = []
        self.closed = asyncio.Event()
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                self.raw.append(raw)
                try:
                    msg = json.loads(raw)
                except ValueError:
                    msg = {"unparsable": raw}
                self.msgs.append(msg)
                if self.answer and isinstance(msg, dict) and msg.get("msg_type") == 12:
                    await self.ws.send(keep_alive_reply(msg))
                self._changed.set()
        except ConnectionClosed:
            pass
        finally:
            self.closed.set()
            self._changed.set()

    def of_type(self, msg_type: int) -> list[dict[str, Any]]:
        return [m for m in self.msgs if m.get("msg_type") == msg_type]

    async def wait_for(self, predicate: Callable[[], bool], within_s: float = 30.0) -> None:
        async with asyncio.timeout(within_s):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    async def barrier(self, sequence: int) -> None:
        """Until everything the server wrote on this socket before now has arrived: it answers a
        KEEP_ALIVE_REQ in order, after what it had already written."""
        await self.ws.send(rp.encode(rp.KeepAliveRequest(0, sequence)))
        await self.wait_for(lambda: any(m.get("sequence") == sequence for m in self.of_type(13)))

    async def close(self) -> None:
        await self.ws.close()
        if self._task is not None:
            await self._task


class Client:
    """A raw RTMS client for the tests: signaling, per-type (or `all`) media sockets, ready-ack.
    What it sends is `ClientSession`'s (the ingest client's handshake machine)."""

    def __init__(self, handle: StreamHandle, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self.handle = handle
        self.ssl = ssl_context
        self.session = ClientSession.signed(CLIENT_ID, SECRET, handle.meeting_uuid, handle.stream_id)
        self.signaling: Socket | None = None
        self.media: dict[str, Socket] = {}

    @property
    def urls(self) -> dict[str, str]:
        return self.session.media_urls

    async def _connect(self, url: str) -> ClientConnection:
        return await connect(url, ssl=self.ssl, compression=None, max_size=None)

    async def handshake(self, url: str | None = None, **overrides: Any) -> dict[str, Any]:
        """Signaling handshake; returns msg 2 (and keeps reading if accepted). `overrides` replace
        the session's meeting_uuid, rtms_stream_id or signature, to probe refusals."""
        ws = await self._connect(url or self.handle.server_urls)
        self.session = dataclasses.replace(self.session, **overrides)
        await ws.send(self.session.hello())
        resp = json.loads(await ws.recv())
        if self.session.on_hello_answer(rp.HandshakeResponse.from_dict(resp)) is Verdict.OK:
            self.signaling = Socket(SIGNALING, ws)
            self.signaling.start()
        else:
            await ws.close()
        return resp

    async def open_media(
        self, key: str, media_type: int, params: rp.MediaParams | None = None, answer_keepalives: bool = True
    ) -> dict[str, Any]:
        """Data handshake on the `key` URL; returns msg 4 (and keeps reading if accepted)."""
        ws = await self._connect(self.urls[key])
        await ws.send(self.session.media_hello(key, media_type, params))
        resp = json.loads(await ws.recv())
        if self.session.on_media_answer(key, rp.DataHandshakeResponse.from_dict(resp)) is Verdict.OK:
            sock = Socket(key, ws, answer_keepalives)
            sock.start()
            self.media[key] = sock
        else:
            await ws.close()
        return resp

    async def join(
        self,
        kinds: tuple[str, ...] = ("audio", "video", "transcript"),
        subscribe: tuple[int, ...] = (2, 3, 4),
        **params: Any,
    ) -> None:
        """Handshake, open media, ready-ack and subscribe."""
        assert (await self.handshake())["status_code"] == 0
        bits = {"audio": 1, "video": 2, "deskshare": 4, "transcript": 8, "chat": 16, "all": 32}
        for kind in kinds:
            resp = await self.open_media(kind, bits[kind], params.get(kind))
            assert resp["status_code"] == 0, resp
        self.session.subscribe = subscribe
        assert self.signaling is not None
        for text in self.session.ready():
            await self.signaling.ws.send(text)

    @property
    def sig(self) -> Socket:
        """The signaling socket (after an accepted handshake)."""
        assert self.signaling is not None, "no signaling connection"
        return self.signaling

    async def send(self, msg: rp.Message) -> None:
        assert self.signaling is not None
        await self.signaling.ws.send(rp.encode(msg))

    def chat(self, key: str = "chat") -> list[rp.ChatFrame]:
        return [rp.ChatFrame.from_dict(m) for m in self.media[key].msgs if m.get("msg_type") == 18]

    def frames(self, key: str) -> list[rp.MediaFrame]:
        frames = [rp.parse(m) for m in self.media[key].msgs if m.get("msg_type") in (14, 15, 16, 17)]
        return [f for f in frames if isinstance(f, rp.MediaFrame)]

    async def close(self) -> None:
        for sock in [self.signaling, *self.media.values()]:
            if sock is not None:
                await sock.close()


def fast(**overrides: Any) -> Faults:
    """Short timers so interruption tests finish quickly."""
    base: dict[str, Any] = {
        "keepalive_s": 5.0,
        "signaling_reconnect_s": 2.0,
        "media_reconnect_s": 2.0,
        "close_grace_s": 0.2,
    }
    return Faults(**(base | overrides))


def has_frames(client: Client, kind: str, n: int) -> bool:
    return len(client.frames(kind)) == n


def state_updates(sock: Socket, msg_type: int) -> list[tuple[int, int | None]]:
    return [(m["state"], m.get("reason")) for m in sock.of_type(msg_type)]
