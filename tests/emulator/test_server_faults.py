"""The emulator's RTMS server against a plain `websockets` client: keep-alives, drops, reconnection
and failover, the frame faults, TLS and the speed factor."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

import rtms_protocol as rp
from emulator.faults import Malformed
from emulator.server import RTMSServer
from emulator.streams import Lifecycle
from tests.emulator.client import (
    CLIENT_ID,
    MEETING,
    SECRET,
    Client,
    fast,
    make_items,
    state_updates,
)
from tests.support.tls import make_test_cert


@pytest.fixture
async def server() -> AsyncIterator[RTMSServer]:
    async with RTMSServer(client_id=CLIENT_ID, client_secret=SECRET) as srv:
        yield srv


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
