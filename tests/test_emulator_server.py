"""The emulator's RTMS server against a plain `websockets` client: handshakes and their refusals,
media flow and parameters, events, keep-alives, states and every fault knob."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import ssl
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tls_cert import make_test_cert
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

import rtms_protocol as rp
from emulator.faults import Faults, Malformed
from emulator.server import RTMSServer, StreamHandle
from emulator.streams import Lifecycle
from emulator.timeline import TimelineCache
from emulator.wire import FrameEncoder, render
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
        bits = {"audio": 1, "video": 2, "deskshare": 4, "transcript": 8, "all": 32}
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

    def frames(self, key: str) -> list[rp.MediaFrame]:
        frames = [rp.parse(m) for m in self.media[key].msgs if m.get("msg_type") in (14, 15, 16, 17)]
        return [f for f in frames if isinstance(f, rp.MediaFrame)]

    async def close(self) -> None:
        for sock in [self.signaling, *self.media.values()]:
            if sock is not None:
                await sock.close()


@pytest.fixture
async def server() -> AsyncIterator[RTMSServer]:
    async with RTMSServer(client_id=CLIENT_ID, client_secret=SECRET) as srv:
        yield srv


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


# --- happy path ---------------------------------------------------------------------------------------


async def test_every_frame_arrives_with_its_bytes_user_and_timestamp(server: RTMSServer) -> None:
    handle = server.add_stream(
        MEETING, "s-happy", make_items(), speed=2.0, base_ms=1_700_000_000_000, record=True
    )
    client = Client(handle)
    await client.join()
    async with asyncio.timeout(30):
        assert await handle.wait_done() == rp.StopReason.MEETING_ENDED
    await client.sig.wait_for(
        lambda: bool(client.sig and client.sig.of_type(8)[-1:] and client.sig.of_type(8)[-1]["state"] == 4)
    )
    sent = handle.sent
    for key in ("audio", "video", "transcript"):
        got = [(f.user_id, f.user_name, f.timestamp, f.data) for f in client.frames(key)]
        want = [(s.user_id, s.user_name, s.timestamp, s.data) for s in sent if s.channel == key]
        assert got == want and got, key
    audio = client.frames("audio")
    assert [f.timestamp for f in audio] == [1_700_000_000_000 + t for t in range(0, 600, 20)]
    assert all(f.user_id == 0 and f.user_name == "" and f.length == 640 for f in audio)  # mixed audio
    (transcript,) = client.frames("transcript")
    assert (transcript.start_time, transcript.end_time, transcript.language) == (
        1_700_000_000_100,
        1_700_000_000_280,
        9,
    )
    sig = client.sig
    first = sig.msgs[:3]
    assert first[0] == {"msg_type": 6, "event": {"event_type": 1, "timestamp": 1_700_000_000_000}}
    assert (first[1]["msg_type"], first[1]["state"]) == (8, rp.StreamState.ACTIVE)
    assert (first[2]["msg_type"], first[2]["state"], first[2]["rtms_session_id"]) == (
        9,
        rp.SessionState.STARTED,
        handle._stream.session_id,
    )
    events = [m["event"]["event_type"] for m in sig.of_type(6)]
    assert events == [1, 3, 2, 4]  # 8 (video on) was not subscribed
    assert (
        state_updates(sig, 9)[-1] == (rp.SessionState.STOPPED, 6) and sig.of_type(9)[-1]["stop_reason"] == 6
    )
    assert state_updates(sig, 8)[-1] == (rp.StreamState.TERMINATED, 6)
    await client.close()


async def test_media_flows_only_after_ready_ack(server: RTMSServer) -> None:
    handle = server.add_stream(MEETING, "s-ready", make_items(), speed=4.0, faults=fast(keepalive_s=0.1))
    client = Client(handle)
    assert (await client.handshake())["status_code"] == 0
    assert (await client.open_media("audio", 1))["status_code"] == 0
    audio = client.media["audio"]
    # three keep-alive periods of the server's own clock on this socket: a frame it sent would
    # have come before them
    await audio.wait_for(lambda: len(audio.of_type(12)) >= 3)
    assert audio.of_type(14) == [] and handle.state == "connected"
    await client.send(rp.ClientReadyAck(handle.stream_id))
    await client.media["audio"].wait_for(lambda: len(client.media["audio"].of_type(14)) > 3)
    await client.close()


async def test_frames_match_rtms_protocol_encoding() -> None:
    encoder = FrameEncoder()
    out: list[bytes] = []
    audio = Item("audio", 40, ALICE, 'Al"ice', b"\x01\x02" * 320)
    render(encoder.pieces(0, audio), 1000, out)
    text = Item("transcript", 90, BOB, "Bob", "caf\u00e9", start_ms=10, end_ms=80)
    render(encoder.pieces(3, text, language=9), 1000, out)
    wire = b"".join(out)
    texts = []
    while wire:
        assert wire[0] == 0x81  # FIN + text, unmasked
        length, start = wire[1], 2
        if length == 126:
            length, start = int.from_bytes(wire[2:4], "big"), 4
        texts.append(wire[start : start + length].decode())
        wire = wire[start + length :]
    assert texts == [
        rp.encode(rp.MediaFrame(14, 1040, audio.data, ALICE, 'Al"ice')),
        rp.encode(
            rp.MediaFrame(17, 1090, "caf\u00e9", BOB, "Bob", start_time=1010, end_time=1080, language=9)
        ),
    ]


def test_shared_timeline_serializes_once_and_trims_behind_its_slowest_reader() -> None:
    encoder = FrameEncoder()
    made = []

    def make() -> Iterator[Item]:
        made.append(1)
        return iter([Item("audio", t, 0, "", bytes([t % 256]) * 640) for t in range(0, 40_000, 20)])

    cache = TimelineCache()
    first = cache.open("k", make, encoder, None)
    a, b = first.attach(), first.attach()
    assert cache.open("k", make, encoder, None) is first and len(made) == 1
    e0 = first.get(0)
    assert e0 is not None and first.get(0) is e0 and e0.pieces is not None  # serialized once
    first.get(1500)
    first.release(a, 1500)
    assert not first.trimmed  # b still at 0
    first.release(b, 1400)
    assert first.trimmed and first.get(1400) is not None
    assert cache.open("k", make, encoder, None) is not first and len(made) == 2  # a late reader starts anew
    assert first.get(2000) is None  # past the end


# --- handshakes and their refusals -------------------------------------------------------------------


async def test_bad_signature_is_refused_with_status_3(server: RTMSServer) -> None:
    handle = server.add_stream(MEETING, "s-sig", make_items())
    resp = await Client(handle).handshake(signature="0" * 64)
    assert (resp["status_code"], "media_server" in resp) == (rp.StatusCode.INVALID_SIGNATURE, False)
    assert handle.state == "waiting"


async def test_unknown_stream_id_is_refused_with_status_2(server: RTMSServer) -> None:
    handle = server.add_stream(MEETING, "s-known", make_items())
    resp = await Client(handle).handshake(rtms_stream_id="s-unknown")
    assert resp["status_code"] == rp.StatusCode.INVALID_RTMS_STREAM_ID


async def test_second_signaling_connection_is_refused_with_status_8(server: RTMSServer) -> None:
    handle = server.add_stream(MEETING, "s-dup", make_items())
    first = Client(handle)
    assert (await first.handshake())["status_code"] == 0
    assert (await Client(handle).handshake())["status_code"] == rp.StatusCode.DUPLICATE_SIGNAL_REQUEST
    await first.close()


async def test_second_media_connection_is_refused_with_status_16_or_15_for_all(server: RTMSServer) -> None:
    handle = server.add_stream(MEETING, "s-dupmedia", make_items())
    client = Client(handle)
    await client.handshake()
    assert (await client.open_media("audio", 1))["status_code"] == 0
    second = await Client.open_media(client, "audio", 1)
    assert second["status_code"] == rp.StatusCode.DUPLICATE_MEDIA_DATA_CONNECTION
    assert (await client.open_media("all", 32))[
        "status_code"
    ] == rp.StatusCode.MEDIA_DATA_ALL_CONNECTION_EXIST
    await client.close()


async def test_media_handshake_refusals(server: RTMSServer) -> None:
    handle = server.add_stream(MEETING, "s-mref", make_items())
    client = Client(handle)
    await client.handshake()
    assert (await client.open_media("audio", 2))["status_code"] == rp.StatusCode.INVALID_MEDIA_TYPE
    bad_codec = rp.MediaParams(audio=rp.AudioParams(codec=9))
    assert (await client.open_media("audio", 1, bad_codec))[
        "status_code"
    ] == rp.StatusCode.INVALID_MEDIA_AUDIO_CODEC
    bad_lang = rp.MediaParams(transcript=rp.TranscriptParams(src_language=77))
    code = (await client.open_media("transcript", 8, bad_lang))["status_code"]
    assert code == rp.StatusCode.INVALID_MEDIA_TRANSCRIPT_SOURCE_LANGUAGE
    chat = await client.open_media("all", 16)
    assert chat["status_code"] == rp.StatusCode.MEDIA_TYPE_CHAT_NOT_SUPPORT
    await client.close()
    # a data handshake without a signaling connection
    lone = Client(handle)
    lone.session.media_urls = client.urls
    assert (await lone.open_media("audio", 1))["status_code"] == rp.StatusCode.INVALID_RTMS_STREAM_ID


async def test_garbage_handshake_gets_a_status_not_a_crash(server: RTMSServer) -> None:
    handle = server.add_stream(MEETING, "s-garbage", make_items())
    async with connect(handle.server_urls) as ws:
        await ws.send("{not json")
        assert json.loads(await ws.recv())["status_code"] == rp.StatusCode.INVALID_PAYLOAD
    async with connect(handle.server_urls) as ws:
        await ws.send(rp.encode(rp.ClientReadyAck("x")))
        assert json.loads(await ws.recv())["status_code"] == rp.StatusCode.INVALID_MESSAGE_TYPE


async def test_unknown_url_is_404(server: RTMSServer) -> None:
    with pytest.raises(InvalidStatus) as info:
        await connect(f"{server.url}/rtms/nope/signaling")
    assert info.value.response.status_code == 404


async def test_sdk_upgrade_request_is_tolerated(server: RTMSServer) -> None:
    """Host without port, the `websocket` subprotocol offer and X-WebSocket-Token (protocol 5.5.6),
    and JSON in a binary frame."""
    handle = server.add_stream(MEETING, "s-sdkhdr", make_items())
    path = handle.server_urls.split(str(server.port), 1)[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(
        (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Protocol: websocket\r\nUser-Agent: Mozilla/5.0 Zoom.App\r\n"
            "X-WebSocket-Token: QUFB,QkJC,Q0ND\r\n\r\n"
        ).encode()
    )
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101") and b"Sec-WebSocket-Protocol" not in head
    sig = rp.handshake_signature(CLIENT_ID, SECRET, MEETING, "s-sdkhdr")
    payload = json.dumps(
        {"meeting_uuid": MEETING, "msg_type": 1, "protocol_version": 1, "rtms_client_agent": "rtms_sdk_cpp-.0.20260319-python-rtms",
         "rtms_stream_id": "s-sdkhdr", "sequence": 3265786, "signature": sig}
    ).encode()  # fmt: skip
    mask = b"\x01\x02\x03\x04"
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    writer.write(bytes((0x82, 0x80 | 126)) + len(payload).to_bytes(2, "big") + mask + masked)  # binary frame
    header = await reader.readexactly(2)
    length = header[1] & 0x7F
    if length == 126:
        length = int.from_bytes(await reader.readexactly(2), "big")
    resp = json.loads(await reader.readexactly(length))
    assert resp["status_code"] == 0 and set(resp["media_server"]["server_urls"]) >= {
        "audio",
        "video",
        "transcript",
        "deskshare",
        "all",
    }
    writer.close()


# --- media parameters -----------------------------------------------------------------------------------


async def test_media_params_are_validated_clamped_and_echoed(server: RTMSServer) -> None:
    handle = server.add_stream(MEETING, "s-params", make_items())
    client = Client(handle)
    await client.handshake()
    resp = await client.open_media("audio", 1, rp.MediaParams(audio=rp.AudioParams(send_rate=50)))
    assert resp["media_params"]["audio"]["send_rate"] == 60 and resp["payload_encrypted"] is False
    resp = await client.open_media("transcript", 8, None)
    assert resp["media_params"] == {"transcript": {"content_type": 5, "src_language": 9, "enable_lid": True}}
    resp = await client.open_media(
        "video", 2, rp.MediaParams(video=rp.VideoParams(codec=rp.PayloadType.JPG, fps=30))
    )
    assert resp["media_params"]["video"]["fps"] == 5  # JPG is at most 5 fps
    resp = await client.open_media(
        "deskshare", 4, rp.MediaParams(deskshare=rp.VideoParams(data_opt=None, fps=60))
    )
    assert (
        resp["media_params"]["deskshare"]["fps"] == 30 and "data_opt" not in resp["media_params"]["deskshare"]
    )
    assert handle.granted["audio"] == rp.AudioParams(send_rate=60)
    await client.close()


async def test_synthetic_meeting_honours_resolution_fps_and_audio_mode(server: RTMSServer) -> None:
    from emulator.media import MeetingSpec, SyntheticMeeting

    meeting = SyntheticMeeting(
        MeetingSpec(seed=3, participants=2, duration_s=1.2, video="720p", fps=30, beep_every_ms=600)
    )
    handle = server.add_stream(MEETING, "s-synth", meeting, speed=3.0, record=True)
    client = Client(handle)
    await client.join(
        audio=rp.MediaParams(
            audio=rp.AudioParams(codec=rp.PayloadType.OPUS, sample_rate=3, channel=2, data_opt=2)
        ),
        video=rp.MediaParams(video=rp.VideoParams(resolution=rp.Resolution.SD, fps=10)),
    )
    async with asyncio.timeout(30):
        await handle.wait_done()
    audio = handle.granted["audio"]
    video = handle.granted["video"]
    assert isinstance(audio, rp.AudioParams) and (audio.codec, audio.sample_rate, audio.channel) == (1, 1, 1)
    assert isinstance(video, rp.VideoParams) and (video.resolution, video.fps, video.codec) == (1, 10, 7)
    await client.media["video"].wait_for(
        lambda: len(client.frames("video")) == len([s for s in handle.sent if s.channel == "video"])
    )
    frames = client.frames("video")
    assert len(frames) == 12 and frames[1].timestamp - frames[0].timestamp == 100
    assert {f.user_id for f in client.frames("audio")} <= {
        p.user_id for p in meeting.participants
    }  # multi-stream
    await client.close()


async def test_two_streams_of_one_meeting_share_its_timeline(server: RTMSServer) -> None:
    from emulator.media import MeetingSpec, SyntheticMeeting

    spec = MeetingSpec(seed=9, participants=2, duration_s=1.0, video="360p", fps=10, beep_every_ms=500)
    first = server.add_stream(MEETING, "s-share-1", SyntheticMeeting(spec), speed=4.0, record=True)
    second = server.add_stream(MEETING, "s-share-2", SyntheticMeeting(spec), speed=4.0)
    clients = [Client(first), Client(second)]
    for client in clients:
        await client.join(
            kinds=("audio", "video"), video=rp.MediaParams(video=rp.VideoParams(resolution=1, fps=10))
        )
    assert first._stream._timeline is second._stream._timeline  # one serialization for both
    async with asyncio.timeout(30):
        await asyncio.gather(first.wait_done(), second.wait_done())
    for kind in ("audio", "video"):
        want = [(s.user_id, s.data) for s in first.sent if s.channel == kind]
        for client in clients:
            await client.media[kind].wait_for(functools.partial(has_frames, client, kind, len(want)))
            assert [(f.user_id, f.data) for f in client.frames(kind)] == want
    for client in clients:
        await client.close()


# --- events and states ------------------------------------------------------------------------------------


async def test_only_subscribed_events_are_sent_and_late_subscribers_get_the_roster(
    server: RTMSServer,
) -> None:
    handle = server.add_stream(MEETING, "s-events", make_items(duration_ms=800), speed=2.0)
    client = Client(handle)
    await client.join(subscribe=())
    await handle.wait_media(100)
    assert [m["event"]["event_type"] for m in client.sig.of_type(6)] == [1]
    await client.send(rp.EventSubscription.subscribe(3, 4))
    await client.sig.wait_for(lambda: len(client.sig.of_type(6)) >= 2)
    roster = client.sig.of_type(6)[1]["event"]
    assert roster["event_type"] == 3 and {p["user_id"] for p in roster["participants"]} == {ALICE, BOB}
    await client.send(rp.EventSubscription.unsubscribe(4))
    async with asyncio.timeout(30):
        await handle.wait_done()
    assert [m["event"]["event_type"] for m in client.sig.of_type(6)] == [1, 3]
    await client.close()


async def test_pause_and_resume(server: RTMSServer) -> None:
    handle = server.add_stream(MEETING, "s-pause", make_items(duration_ms=1500), speed=1.0)
    client = Client(handle)
    await client.join(kinds=("audio",))
    await handle.wait_media(300)
    handle.pause()
    audio = client.media["audio"]
    await audio.barrier(9001)  # the frames sent before the pause are in
    during = len(audio.of_type(14))
    async with asyncio.timeout(30):
        await handle.wait_media(900)  # the media clock runs on: 600 ms of frames are due meanwhile
    await audio.barrier(9002)
    assert len(audio.of_type(14)) == during
    handle.resume()
    await audio.wait_for(lambda: len(audio.of_type(14)) > during)  # and after the resume they flow
    async with asyncio.timeout(30):
        await handle.wait_done()
    await client.sig.wait_for(lambda: len(client.sig.of_type(8)) >= 4)
    assert [s for s, _ in state_updates(client.sig, 8)] == [1, 5, 6, 4]
    assert [s for s, _ in state_updates(client.sig, 9)] == [2, 3, 4, 5]
    assert handle.stats.dropped["audio"] > 0
    await client.close()


@pytest.mark.parametrize("reason", list(rp.StopReason)[1:])
async def test_stop_with_each_stop_reason(server: RTMSServer, reason: rp.StopReason) -> None:
    handle = server.add_stream(MEETING, f"s-stop-{int(reason)}", make_items(duration_ms=5000), faults=fast())
    client = Client(handle)
    await client.join(kinds=("audio",))
    await handle.wait_active()
    handle.stop(reason)
    assert await handle.wait_done() == reason
    await client.sig.wait_for(lambda: bool(client.sig.of_type(8)) and client.sig.of_type(8)[-1]["state"] == 4)
    assert client.sig.of_type(9)[-1] == {
        "msg_type": 9, "state": 5, "stop_reason": int(reason), "reason": int(reason),
        "timestamp": client.sig.of_type(9)[-1]["timestamp"], "rtms_session_id": handle._stream.session_id,
    }  # fmt: skip
    assert state_updates(client.sig, 8)[-1] == (4, int(reason))
    resp = await Client(handle).handshake()  # a terminated stream is unknown from now on
    assert resp["status_code"] == rp.StatusCode.INVALID_RTMS_STREAM_ID
    await client.close()


async def test_stream_close_request_ends_the_stream_with_reason_20(server: RTMSServer) -> None:
    handle = server.add_stream(MEETING, "s-close", make_items(duration_ms=5000))
    client = Client(handle)
    await client.join(kinds=("audio",))
    await handle.wait_active()
    await client.send(rp.StreamCloseRequest(handle.stream_id))
    assert await handle.wait_done() == rp.StopReason.RECEIVER_REQUEST_CLOSE
    await client.sig.wait_for(lambda: bool(client.sig.of_type(22)))
    resp = client.sig.of_type(22)[0]
    assert (resp["rtms_stream_id"], resp["status_code"]) == (handle.stream_id, 0)
    await client.close()


async def test_video_subscription_only_in_individual_stream_mode(server: RTMSServer) -> None:
    items = make_items(duration_ms=1000)
    items += [
        Item("video", t + 50, BOB, "Bob", b"\x00\x00\x00\x01\x41" + b"b" * 100) for t in range(0, 1000, 100)
    ]
    items.sort(key=lambda i: i.offset_ms)
    handle = server.add_stream(MEETING, "s-vsub", items, speed=2.0)
    client = Client(handle)
    await client.join(kinds=("video",), video=rp.MediaParams(video=rp.VideoParams(data_opt=4)))
    await handle.wait_media(200)
    assert client.frames("video") == []  # nobody subscribed yet
    await client.send(rp.VideoSubscriptionRequest(BOB, True, 1234))
    await client.sig.wait_for(lambda: bool(client.sig.of_type(29)))
    assert client.sig.of_type(29)[0]["status_code"] == 0
    async with asyncio.timeout(30):
        await handle.wait_done()
    frames = client.frames("video")
    assert frames and {f.user_id for f in frames} == {BOB}
    await client.close()
    other = server.add_stream(MEETING, "s-vsub3", make_items())
    client = Client(other)
    await client.join(kinds=("video",))
    await client.send(rp.VideoSubscriptionRequest(BOB, True))
    await client.sig.wait_for(lambda: bool(client.sig.of_type(29)))
    assert client.sig.of_type(29)[0]["status_code"] == rp.StatusCode.INVALID_MEDIA_VIDEO_DATA_OPT
    await client.close()


# --- keep-alives ------------------------------------------------------------------------------------------


async def test_keepalives_carry_timestamp_and_sequence_on_every_socket(server: RTMSServer) -> None:
    handle = server.add_stream(MEETING, "s-ka", make_items(duration_ms=3000), faults=fast(keepalive_s=0.1))
    client = Client(handle)
    await client.join(kinds=("audio",))
    await client.sig.wait_for(lambda: len(client.sig.of_type(12)) >= 3)
    await client.media["audio"].wait_for(lambda: len(client.media["audio"].of_type(12)) >= 3)
    req = client.sig.of_type(12)
    assert [m["sequence"] for m in req[:3]] == [1, 2, 3] and all(isinstance(m["timestamp"], int) for m in req)
    assert handle.stats.keepalives_answered >= 4
    handle.stop()
    await client.close()


async def test_three_missed_media_keepalives_interrupt_that_socket_then_end_with_24(
    server: RTMSServer,
) -> None:
    handle = server.add_stream(
        MEETING,
        "s-kamedia",
        make_items(duration_ms=60_000),
        faults=fast(keepalive_s=0.05, media_reconnect_s=0.5),
    )
    client = Client(handle)
    assert (await client.handshake())["status_code"] == 0
    await client.open_media("audio", 1, answer_keepalives=False)
    await client.send(rp.ClientReadyAck(handle.stream_id))
    async with asyncio.timeout(30):
        await client.media["audio"].closed.wait()
        assert await handle.wait_done() == rp.StopReason.KEEP_ALIVE_TIMEOUT
    assert len(client.media["audio"].of_type(12)) == 3
    assert [m["event"]["event_type"] for m in client.sig.of_type(6)] == [1, 7]
    assert (2, 14) in state_updates(client.sig, 8)
    await client.close()


async def test_three_missed_signaling_keepalives_interrupt_the_stream(server: RTMSServer) -> None:
    handle = server.add_stream(
        MEETING,
        "s-kasig",
        make_items(duration_ms=60_000),
        faults=fast(keepalive_s=0.05, signaling_reconnect_s=0.4),
    )
    seen: list[Lifecycle] = []
    handle.on_lifecycle(seen.append)
    client = Client(handle)
    await client.join(kinds=("audio",))
    client.sig.answer = False
    async with asyncio.timeout(30):
        await client.sig.closed.wait()
        await client.media["audio"].closed.wait()  # media goes down with signaling
        assert await handle.wait_done() == rp.StopReason.KEEP_ALIVE_TIMEOUT
    assert [e.kind for e in seen] == ["interrupted", "stopped"] and seen[-1].stop_reason == 24


async def test_silent_server_sends_no_keepalives(server: RTMSServer) -> None:
    """(`test_keepalives_carry_timestamp_and_sequence_on_every_socket` is the positive control.)"""
    handle = server.add_stream(
        MEETING,
        "s-silent",
        make_items(duration_ms=2000),
        faults=fast(keepalive_s=0.05, send_keepalives=False),
    )
    client = Client(handle)
    await client.join(kinds=("audio",))
    audio = client.media["audio"]
    # 25 frames of 20 ms, paced in real time: ten keep-alive periods of the server's clock, and a
    # keep-alive sent on the audio socket in that time would have come before its 25th frame
    await audio.wait_for(lambda: len(audio.of_type(14)) >= 25)
    assert client.sig.of_type(12) == [] and audio.of_type(12) == []
    handle.stop()
    await client.close()


@pytest.mark.parametrize("answer", [True, False])
async def test_client_keepalives_and_pings_answered_unless_told_not_to(
    server: RTMSServer, answer: bool
) -> None:
    handle = server.add_stream(
        MEETING, f"s-answer-{answer}", make_items(duration_ms=5000), faults=fast(answer_keepalives=answer)
    )
    client = Client(handle)
    await client.join(kinds=("audio",))
    await client.sig.ws.send(rp.encode(rp.KeepAliveRequest(42, 7)))
    pong = await client.sig.ws.ping(b"x")
    # the server always answers a STREAM_STATE_REQ, in order: once that answer is in, a pong and a
    # KEEP_ALIVE_RESP would have come before it
    await client.send(rp.StreamStateRequest(handle.stream_id))
    await client.sig.wait_for(lambda: bool(client.sig.of_type(rp.MsgType.STREAM_STATE_RESP)))
    assert pong.done() is answer
    assert (client.sig.of_type(13) == [{"msg_type": 13, "sequence": 7, "timestamp": 42}]) is answer
    handle.stop()
    await client.close()


# --- drops, reconnection and failover -----------------------------------------------------------------------


@pytest.mark.parametrize("close_frame", [True, False])
async def test_dropped_media_socket_is_reported_and_buffered_audio_follows_reconnect(
    server: RTMSServer, close_frame: bool
) -> None:
    handle = server.add_stream(
        MEETING, f"s-dropm-{close_frame}", make_items(duration_ms=1500), faults=fast(), record=True
    )
    client = Client(handle)
    await client.join(kinds=("audio", "video"))
    await handle.wait_media(300)
    handle.drop_media("audio", close_frame=close_frame, code=1011)
    audio = client.media.pop("audio")
    await audio.closed.wait()
    assert audio.ws.close_code == (1011 if close_frame else 1006)
    await client.sig.wait_for(lambda: [2, 14] in [[m["state"], m["reason"]] for m in client.sig.of_type(8)])
    assert client.sig.of_type(6)[-1]["event"]["event_type"] == 7
    async with asyncio.timeout(30):
        await handle.wait_media(600)  # the gap: 300 ms of audio for the server to buffer
    assert (await client.open_media("audio", 1))["status_code"] == 0
    async with asyncio.timeout(30):
        assert await handle.wait_done() == rp.StopReason.MEETING_ENDED
    await client.media["audio"].wait_for(lambda: len(client.frames("audio")) + len(audio.of_type(14)) >= 75)
    got = [f.timestamp for f in client.frames("audio")] + [
        m["content"]["timestamp"] for m in audio.of_type(14)
    ]
    assert sorted(got) == [s.timestamp for s in handle.sent if s.channel == "audio"]  # nothing lost
    assert len(set(got)) == 75
    await client.close()


async def test_dropped_signaling_interrupts_then_a_reconnection_resumes(server: RTMSServer) -> None:
    handle = server.add_stream(MEETING, "s-drops", make_items(duration_ms=1500), faults=fast(), record=True)
    seen: list[Lifecycle] = []
    handle.on_lifecycle(seen.append)
    client = Client(handle)
    await client.join(kinds=("audio",))
    await handle.wait_media(300)
    handle.drop_signaling(close_frame=False)
    await client.sig.closed.wait()
    await client.media["audio"].closed.wait()
    assert client.sig.ws.close_code == 1006 and handle.state == "interrupted"
    assert [e.kind for e in seen] == ["interrupted"]
    again = Client(handle)
    await again.join(kinds=("audio",))
    async with asyncio.timeout(30):
        assert await handle.wait_done() == rp.StopReason.MEETING_ENDED
    await again.sig.wait_for(lambda: bool(again.sig.of_type(8)) and again.sig.of_type(8)[-1]["state"] == 4)
    assert again.sig.msgs[0]["event"]["event_type"] == 1  # first packet, active, started: again
    first = {f.timestamp for f in client.frames("audio")}
    second = {f.timestamp for f in again.frames("audio")}
    assert (
        first | second == {s.timestamp for s in handle.sent if s.channel == "audio"}
        and len(first | second) == 75
    )
    await client.close()
    await again.close()


async def test_no_reconnection_ends_the_stream_with_reason_19(server: RTMSServer) -> None:
    handle = server.add_stream(
        MEETING, "s-gone", make_items(duration_ms=60_000), faults=fast(signaling_reconnect_s=0.3)
    )
    client = Client(handle)
    await client.join(kinds=("audio",))
    await handle.wait_active()
    await client.close()
    async with asyncio.timeout(30):
        assert await handle.wait_done() == rp.StopReason.AWAIT_RECONNECTION_TIMEOUT


async def test_failover_moves_the_stream_to_a_new_url_with_the_same_stream_id(server: RTMSServer) -> None:
    handle = server.add_stream(MEETING, "s-failover", make_items(duration_ms=1500), faults=fast())
    seen: list[Lifecycle] = []
    handle.on_lifecycle(seen.append)
    client = Client(handle)
    await client.join(kinds=("audio",))
    await handle.wait_media(200)
    old = handle.server_urls
    new = handle.failover()
    assert new != old and seen[0] == Lifecycle("failover", MEETING, "s-failover", new)
    await client.sig.closed.wait()
    assert client.sig.ws.close_code == 1006
    with pytest.raises(InvalidStatus):
        await connect(old)
    again = Client(handle)
    await again.join(kinds=("audio",))
    async with asyncio.timeout(30):
        assert await handle.wait_done() == rp.StopReason.MEETING_ENDED
    assert again.urls["audio"].startswith(new.rsplit("/", 1)[0])
    await again.close()


# --- frame faults ---------------------------------------------------------------------------------------------


async def test_reordered_and_duplicated_frames(server: RTMSServer) -> None:
    faults = fast(reorder=2, duplicate=2)
    handle = server.add_stream(
        MEETING, "s-reorder", make_items(duration_ms=2500), faults=faults, speed=4.0, record=True
    )
    client = Client(handle)
    await client.join(kinds=("audio", "video"))
    async with asyncio.timeout(30):
        await handle.wait_done()
    await client.media["audio"].wait_for(
        lambda: len(client.frames("audio")) + len(client.frames("video")) == len(handle.sent)
    )
    assert len(handle.stats.reordered) == 2 and len(handle.stats.duplicated) == 2
    received = [(k, f.timestamp) for k in ("audio", "video") for f in client.frames(k)]
    for channel, _, ts in handle.stats.duplicated:
        assert received.count((channel, ts)) == 2
    for channel, _, ts in handle.stats.reordered:
        stamps = [f.timestamp for f in client.frames(channel)]
        i = stamps.index(ts)
        assert stamps[i - 1] > ts  # it came after its successor
    await client.close()


async def test_malformed_frames_are_sent_once_each(server: RTMSServer) -> None:
    kinds = tuple(Malformed)
    handle = server.add_stream(
        MEETING, "s-malformed", make_items(duration_ms=400), faults=fast(malformed=kinds)
    )
    client = Client(handle)
    await client.join(kinds=("audio",))
    async with asyncio.timeout(30):
        await handle.wait_done()
    reasons = []
    for raw in client.media["audio"].raw:
        try:
            msg = rp.parse(raw)
        except rp.ProtocolError as exc:
            reasons.append(exc.reason)
        else:
            assert isinstance(msg, (rp.MediaFrame, rp.KeepAliveRequest))
    assert reasons == ["bad_json", "bad_base64", "missing_field", "unknown_msg_type"]
    await client.close()


async def test_inject_sends_a_malformed_message_now(server: RTMSServer) -> None:
    handle = server.add_stream(MEETING, "s-inject", make_items(duration_ms=5000))
    client = Client(handle)
    await client.join(kinds=("audio",))
    await handle.wait_active()
    assert handle.inject("bad_base64")
    await client.media["audio"].wait_for(
        lambda: any("!!not*base64!!" in str(r) for r in client.media["audio"].raw)
    )
    handle.stop()
    await client.close()


# --- TLS and time ---------------------------------------------------------------------------------------------


async def test_wss_with_a_test_certificate(tmp_path: Path) -> None:
    cert, key = make_test_cert(tmp_path)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(cert))
    async with RTMSServer(client_id=CLIENT_ID, client_secret=SECRET, ssl_context=server_ctx) as srv:
        handle = srv.add_stream(MEETING, "s-tls", make_items(duration_ms=400), speed=2.0, record=True)
        assert handle.server_urls.startswith("wss://127.0.0.1:")
        client = Client(handle, ssl_context=client_ctx)
        await client.join(kinds=("audio", "video"))
        assert client.urls["audio"].startswith("wss://")
        async with asyncio.timeout(30):
            await handle.wait_done()
        await client.media["audio"].wait_for(lambda: len(client.frames("audio")) == 20)
        assert [f.data for f in client.frames("video")] == [
            s.data for s in handle.sent if s.channel == "video"
        ]
        await client.close()


async def test_speed_factor_compresses_wall_time_not_timestamps(server: RTMSServer) -> None:
    """Also the unrecorded hot path: every frame as the items say, bytes and all."""
    items = make_items(duration_ms=2000)
    handle = server.add_stream(MEETING, "s-speed", items, speed=8.0, base_ms=5_000_000)
    real_time = server.add_stream(MEETING, "s-real-time", make_items(duration_ms=60_000))
    client = Client(handle)
    control = Client(real_time)
    await control.join(kinds=("audio",))
    await real_time.wait_active()
    await client.join(kinds=("audio", "video", "transcript"))
    async with asyncio.timeout(30):
        await handle.wait_done()
    # 2 s of media at 8x ended while a stream playing in real time, started first, is still on:
    # frames are never sent before their due time, so that one cannot end before 60 s have passed
    assert real_time.state == "active"
    await client.media["audio"].wait_for(lambda: len(client.frames("audio")) == 100)
    await client.media["video"].wait_for(lambda: len(client.frames("video")) == 20)
    assert [f.timestamp for f in client.frames("audio")] == list(range(5_000_000, 5_002_000, 20))
    for kind in ("audio", "video", "transcript"):
        got = [(f.timestamp, f.user_id, f.user_name, f.data) for f in client.frames(kind)]
        assert got == [
            (5_000_000 + i.offset_ms, i.user_id, i.user_name, i.data) for i in items if i.kind == kind
        ]
    await client.close()
    await control.close()


async def test_stopping_the_server_ends_streams_quietly() -> None:
    async with RTMSServer(client_id=CLIENT_ID, client_secret=SECRET) as srv:
        handle = srv.add_stream(MEETING, "s-shutdown", make_items(duration_ms=60_000))
        seen: list[Lifecycle] = []
        handle.on_lifecycle(seen.append)
        client = Client(handle)
        await client.join(kinds=("audio",))
        await handle.wait_active()
    assert seen == [] and handle.state == "terminated"  # no interruption reported for a server going away
    with pytest.raises(RuntimeError, match="emulator stopped"):
        await handle.wait_done()
    await client.close()
