"""`RtmsSocket` against a hand-written WebSocket server on a real TCP socket (so it can misbehave),
and the WebSocket backend's inbox pausing a socket against the emulator."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from ingest import ws_client, ws_socket
from ingest.backend import AudioData, StreamSession
from ingest.ws_client import WebSocketBackend, client_config
from ingest.ws_socket import RtmsSocket
from rtmsflow.settings import Settings
from tests.ingest.support import CLIENT_ID, CLIENT_SECRET, ingest_settings, small_meeting
from tests.support.tls import make_test_cert

TEXT, BINARY, CONTINUATION, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA
DEADLINE_S = 30  # only catches a hang


def frame(opcode: int, payload: bytes = b"", fin: bool = True) -> bytes:
    """A server frame (unmasked)."""
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        return head + bytes([n]) + payload
    if n < 1 << 16:
        return head + bytes([126]) + struct.pack("!H", n) + payload
    return head + bytes([127]) + struct.pack("!Q", n) + payload


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """A client frame (masked): its opcode and unmasked payload."""
    b0, b1 = await reader.readexactly(2)
    n = b1 & 0x7F
    if n == 126:
        (n,) = struct.unpack("!H", await reader.readexactly(2))
    elif n == 127:
        (n,) = struct.unpack("!Q", await reader.readexactly(8))
    mask = await reader.readexactly(4)
    data = await reader.readexactly(n)
    return b0 & 0x0F, bytes(c ^ mask[i % 4] for i, c in enumerate(data))


Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def raw_server(script: Script) -> AsyncIterator[str]:
    """A WebSocket server that accepts the upgrade, then lets `script` write raw frames."""
    done: list[asyncio.Task[None]] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        key = next(
            line.split(":", 1)[1].strip()
            for line in head.split("\r\n")
            if line.lower().startswith("sec-websocket-key")
        )
        accept = base64.b64encode(
            hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()
        )
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        try:
            await script(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(
        lambda r, w: done.append(asyncio.ensure_future(handle(r, w))), "127.0.0.1", 0
    )
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"ws://127.0.0.1:{port}/rtms"
    finally:
        server.close()
        await asyncio.gather(*done, return_exceptions=True)


class Heard:
    """An `on_message` that keeps every message and tells when the first one came."""

    def __init__(self) -> None:
        self.got: list[str | bytes] = []
        self.first = asyncio.Event()

    def __call__(self, sock: RtmsSocket, data: str | bytes) -> None:
        self.got.append(data)
        self.first.set()


async def collect(url: str, **kw: Any) -> tuple[list[str | bytes], int, RtmsSocket]:
    """Connect, keep every message until the socket ends; the messages and the close code."""
    heard = Heard()
    sock = await RtmsSocket.open(url, heard, max_message_bytes=kw.pop("max_bytes", 1 << 20))
    async with asyncio.timeout(DEADLINE_S):
        code = await sock.closed()
    return heard.got, code, sock


async def test_messages_arrive_whole_and_in_order_with_fragments_and_a_ping_between() -> None:
    heard: list[tuple[int, bytes]] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(frame(TEXT, b"one"))
        writer.write(
            frame(TEXT, b"he", fin=False) + frame(PING, b"p1") + frame(CONTINUATION, "llo é".encode())
        )
        writer.write(frame(BINARY, b"\x00\x01", fin=False) + frame(CONTINUATION, b"", fin=False))
        writer.write(frame(CONTINUATION, b"\x02"))
        writer.write(frame(CLOSE, close_payload(4001, b"bye")))
        heard.append(await read_frame(reader))  # the pong
        heard.append(await read_frame(reader))  # our answer to the close

    async with raw_server(script) as url:
        got, code, _ = await collect(url)
    assert got == ["one", "hello é", b"\x00\x01\x02"]
    assert code == 4001
    assert heard == [(PONG, b"p1"), (CLOSE, close_payload(4001))]


@pytest.mark.parametrize(
    ("frames", "code"),
    [
        ([frame(TEXT, b"\xff\xfeno")], 1007),  # a text message that is not UTF-8
        (
            [frame(TEXT, b"a", fin=False), frame(CONTINUATION, b"\xc3")],
            1007,
        ),  # split mid-character at the end
        ([frame(CONTINUATION, b"x")], 1002),  # continuation with nothing to continue
        ([frame(TEXT, b"a", fin=False), frame(TEXT, b"b")], 1002),  # a new message inside a fragmented one
        (
            [frame(BINARY, b"x" * 10, fin=False), frame(CONTINUATION, b"y" * 10)],
            1009,
        ),  # over max_bytes in parts
    ],
)
async def test_a_bad_message_closes_with_its_code_and_nothing_after_it_is_delivered(
    frames: list[bytes], code: int
) -> None:
    answer: list[tuple[int, bytes]] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(frame(TEXT, b"before"))  # the positive control
        for f in frames:
            writer.write(f)
        writer.write(frame(TEXT, b"after"))
        answer.append(await read_frame(reader))

    async with raw_server(script) as url:
        got, _, _ = await collect(url, max_bytes=16)
    assert got == ["before"]
    opcode, payload = answer[0]
    assert opcode == CLOSE and struct.unpack("!H", payload[:2])[0] == code


@pytest.mark.parametrize(
    ("ending", "code"),
    [(frame(CLOSE), 1005), (b"", 1006), (frame(CLOSE, close_payload(1000)), 1000)],
    ids=["close-frame-without-code", "no-close-frame", "normal"],
)
async def test_the_close_code_is_what_websockets_would_report(ending: bytes, code: int) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(frame(TEXT, b"x") + ending)
        await writer.drain()
        if ending:
            await read_frame(reader)  # our answer, then the server hangs up

    async with raw_server(script) as url:
        got, got_code, _ = await collect(url)
    assert got == ["x"]
    assert got_code == code


async def test_our_close_ends_when_the_server_answers_and_keeps_delivering_until_then() -> None:
    seen: list[tuple[int, bytes]] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(frame(TEXT, b"first"))
        seen.append(await read_frame(reader))  # our close
        writer.write(frame(TEXT, b"sent before the server's close") + frame(CLOSE, close_payload(4000)))
        await writer.drain()
        await reader.read()  # until we hang up

    heard = Heard()
    async with raw_server(script) as url:
        sock = await RtmsSocket.open(url, heard, max_message_bytes=1 << 20)
        async with asyncio.timeout(DEADLINE_S):
            await heard.first.wait()
            sock.close(4000)
            code = await sock.closed()
    assert seen == [(CLOSE, close_payload(4000))]
    assert heard.got == ["first", "sent before the server's close"]
    assert code == 4000


async def test_our_close_hangs_up_when_the_server_never_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ws_socket, "CLOSE_TIMEOUT_S", 0.2)
    seen: list[tuple[int, bytes]] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(frame(TEXT, b"hi"))
        seen.append(await read_frame(reader))
        await reader.read()  # never answers; returns when we hang up

    heard = Heard()
    async with raw_server(script) as url:
        sock = await RtmsSocket.open(url, heard, max_message_bytes=1 << 20)
        async with asyncio.timeout(DEADLINE_S):
            await heard.first.wait()
            sock.close(1000)
            code = await sock.closed()
    assert seen == [(CLOSE, close_payload(1000))]
    assert code == 1006  # no close frame came back


async def test_pause_stops_reading_and_resume_delivers_what_waited() -> None:
    go_on = asyncio.Event()

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(frame(TEXT, b"1"))
        await go_on.wait()
        writer.write(frame(TEXT, b"2") + frame(CLOSE, close_payload(1000)))
        await read_frame(reader)

    heard = Heard()
    async with raw_server(script) as url:
        sock = await RtmsSocket.open(url, heard, max_message_bytes=1 << 20)
        async with asyncio.timeout(DEADLINE_S):
            await heard.first.wait()
            assert sock.transport is not None
            assert sock.transport.underlying_transport.is_reading()
            sock.pause()
            assert not sock.transport.underlying_transport.is_reading()
            go_on.set()
            sock.resume()
            assert sock.transport.underlying_transport.is_reading()
            code = await sock.closed()
    assert heard.got == ["1", "2"] and code == 1000


async def test_a_full_inbox_pauses_the_socket_and_every_frame_still_arrives_in_order(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The frame handler blocks on the first audio frame; the emulator keeps sending at 8x, so the
    backend's inbox fills and the audio socket pauses; once released, every frame arrives."""
    from emulator.server import RTMSServer

    monkeypatch.setattr(ws_client, "INBOX_SLOTS", 8)
    paused = asyncio.Event()
    pause = RtmsSocket.pause

    def pause_and_tell(sock: RtmsSocket) -> None:
        pause(sock)
        paused.set()

    monkeypatch.setattr(RtmsSocket, "pause", pause_and_tell)
    release = asyncio.Event()
    audio: list[int] = []

    class Handler(ws_client._Discard):
        async def audio(self, session: StreamSession, frame: AudioData) -> None:
            audio.append(frame.timestamp_ms)
            await release.wait()

    meeting = await asyncio.to_thread(small_meeting, 5, 2.0)
    server = RTMSServer(client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    await server.start()
    try:
        handle = server.add_stream("inbox==", "inbox-stream", meeting, speed=8.0, record=True)
        s = ingest_settings(settings)  # our credentials, the emulator's host allowed
        backend = WebSocketBackend(s, Handler(), config=client_config(s, video=False))
        await backend.start(StreamSession("inbox==", "inbox-stream", handle.server_urls, fresh=True))
        async with asyncio.timeout(DEADLINE_S):
            await paused.wait()  # the inbox filled while the handler was blocked
            assert backend._paused and len(audio) == 1
            release.set()
            await handle.wait_done()
            outcome = await backend.wait()
    finally:
        await server.stop()
    assert outcome.ended
    assert not backend._paused
    sent = [f.timestamp for f in handle.sent if f.channel == "audio"]
    assert len(sent) > 50 and audio == sent


async def test_the_backend_streams_over_wss_and_refuses_a_server_it_does_not_trust(
    settings: Settings, tmp_path: Path
) -> None:
    """Zoom's media URLs are wss://: every audio frame arrives over TLS with the test CA trusted;
    without it (the system's CAs) the connection is refused and nothing is delivered."""
    from emulator.server import RTMSServer

    cert, key = make_test_cert(tmp_path)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    meeting = await asyncio.to_thread(small_meeting, 6, 1.0)
    s = ingest_settings(settings)

    class Handler(ws_client._Discard):
        def __init__(self) -> None:
            self.heard: list[int] = []

        async def audio(self, session: StreamSession, frame: AudioData) -> None:
            self.heard.append(frame.timestamp_ms)

    async with RTMSServer(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, ssl_context=server_ctx) as server:
        handle = server.add_stream("tls==", "tls-stream", meeting, speed=4.0, record=True)
        assert handle.server_urls.startswith("wss://")
        trusted = Handler()
        backend = WebSocketBackend(
            s,
            trusted,
            config=client_config(s, video=False),
            ssl_context=ssl.create_default_context(cafile=str(cert)),
        )
        await backend.start(StreamSession("tls==", "tls-stream", handle.server_urls, fresh=True))
        async with asyncio.timeout(DEADLINE_S):
            await handle.wait_done()
            outcome = await backend.wait()
        assert outcome.ended
        sent = [f.timestamp for f in handle.sent if f.channel == "audio"]
        assert len(sent) > 10 and trusted.heard == sent

        handle2 = server.add_stream("tls2==", "tls-stream-2", meeting, speed=4.0)
        untrusting = Handler()
        config = client_config(s, video=False, handshake_timeout_s=2.0, max_attempts=1)
        backend2 = WebSocketBackend(s, untrusting, config=config, ssl_context=ssl.create_default_context())
        await backend2.start(StreamSession("tls2==", "tls-stream-2", handle2.server_urls, fresh=True))
        async with asyncio.timeout(DEADLINE_S):
            assert not await backend2.connected()
        await backend2.stop()
        assert untrusting.heard == []
