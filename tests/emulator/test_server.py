"""The emulator's RTMS server against a plain `websockets` client: media flow, handshakes and their
refusals, media parameters, events and states (keep-alives, drops and faults:
`test_server_faults.py`)."""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import AsyncIterator, Iterator

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

import rtms_protocol as rp
from emulator.media import MeetingSpec, SyntheticMeeting
from emulator.negotiate import ChatParams
from emulator.server import RTMSServer
from emulator.timeline import TimelineCache
from emulator.wire import FrameEncoder, render
from tests.emulator.client import (
    ALICE,
    BOB,
    CLIENT_ID,
    MEETING,
    SECRET,
    Client,
    Item,
    fast,
    has_frames,
    make_items,
    state_updates,
)


@pytest.fixture
async def server() -> AsyncIterator[RTMSServer]:
    async with RTMSServer(client_id=CLIENT_ID, client_secret=SECRET) as srv:
        yield srv


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


async def test_a_chat_subscriber_gets_the_chat_script_public_and_private(server: RTMSServer) -> None:
    meeting = SyntheticMeeting(
        MeetingSpec(seed=2, participants=3, duration_s=9.0, video=None, beep_every_ms=None)
    )
    script = list(meeting.chat_messages())
    assert any(m.recipients for m in script) and any(not m.recipients for m in script)
    base = 1_700_000_000_000
    handle = server.add_stream(MEETING, "s-chat", meeting, speed=8.0, base_ms=base, record=True)
    client = Client(handle)
    await client.join(kinds=("audio", "chat"))
    assert handle.granted["chat"] == ChatParams()  # content_type 5, text
    async with asyncio.timeout(30):
        assert await handle.wait_done() == rp.StopReason.MEETING_ENDED
    await client.media["chat"].wait_for(lambda: len(client.chat()) == len(script))
    people = meeting.participants
    assert client.chat() == [
        rp.ChatFrame(
            base + m.offset_ms,
            m.text,
            people[m.sender].user_id,
            people[m.sender].user_name,
            f"chat-2-{m.index}",
            tuple(rp.Participant(people[r].user_id, people[r].user_name) for r in m.recipients),
        )
        for m in script
    ]
    assert [f.data for f in handle.sent if f.channel == "chat"] == [m.text for m in script]
    assert client.frames("audio")  # the other socket carried its own media only
    assert not [m for m in client.media["audio"].msgs if m.get("msg_type") == 18]
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


def test_shared_timeline_keeps_its_head_for_the_share_window() -> None:
    encoder = FrameEncoder()
    made = []
    now = [100.0]

    def make() -> Iterator[Item]:
        made.append(1)
        return iter([Item("audio", t, 0, "", bytes([t % 256]) * 640) for t in range(0, 40_000, 20)])

    cache = TimelineCache(share_s=10.0, clock=lambda: now[0])
    first = cache.open("k", make, encoder, None)
    a = first.attach()
    first.get(1500)
    first.release(a, 1500)
    assert not first.trimmed  # within the window: the head stays
    now[0] = 109.0
    assert cache.open("k", make, encoder, None) is first and len(made) == 1
    b = first.attach()  # a late reader starts at the head
    assert first.get(0) is not None
    now[0] = 111.0
    first.release(a, 1600)  # the window is over: trimmed behind the slowest reader (b)
    assert not first.trimmed
    first.get(300)
    first.release(b, 300)
    assert first.trimmed and first.get(300) is not None
    first.detach(b)  # the slowest reader leaves: trimmed up to the next one
    first.release(a, 1601)
    assert first.get(1601) is not None
    assert cache.open("k", make, encoder, None) is not first and len(made) == 2


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
    bad_chat = rp.MediaParams(chat={"content_type": 2})  # chat is text (5) or nothing
    code = (await client.open_media("chat", 16, bad_chat))["status_code"]
    assert code == rp.StatusCode.INVALID_MEDIA_CHAT_CONTENT_TYPE
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


async def test_multiple_individual_videos_send_up_to_four_cameras_each_from_an_idr(
    server: RTMSServer,
) -> None:
    from emulator.faults import Faults
    from emulator.media import MeetingSpec, SyntheticMeeting

    meeting = SyntheticMeeting(
        MeetingSpec(seed=3, participants=5, duration_s=3, video="360p", fps=10, beep_every_ms=1000)
    )
    ids = [p.user_id for p in meeting.participants]
    capacity = 4  # Zoom's multiple individual streams at 720p
    handle = server.add_stream(MEETING, "s-cams", meeting, Faults(individual_videos=capacity), speed=3.0)
    client = Client(handle)
    await client.join(
        kinds=("video",),
        video=rp.MediaParams(video=rp.VideoParams(resolution=rp.Resolution.SD, data_opt=4, fps=10)),
    )
    for uid in ids:
        await client.send(rp.VideoSubscriptionRequest(uid, True, 1))
    await client.send(rp.VideoSubscriptionRequest(ids[0], True, 2))
    await client.sig.wait_for(lambda: len(client.sig.of_type(29)) == len(ids) + 1)
    answers = [(m["user_id"], m["status_code"]) for m in client.sig.of_type(29)]
    assert answers == [
        *[(uid, 0) for uid in ids[:capacity]],
        (ids[4], rp.StatusCode.INVALID_MEDIA_VIDEO_PARAMS),  # one camera too many
        (ids[0], rp.StatusCode.DUPLICATE_VIDEO_SUBSCRIPTION),
    ]
    async with asyncio.timeout(30):
        await handle.wait_done()
    frames = client.frames("video")
    assert {f.user_id for f in frames} == set(ids[:capacity])
    cameras = [i for i in meeting.timeline(cameras=True, audio=False, transcripts=False) if i.kind == "video"]
    for uid in ids[:capacity]:
        got = [f.data for f in frames if f.user_id == uid]
        played = [i.data for i in cameras if i.user_id == uid]
        assert got[0][4] & 0x1F == 7  # starts with an IDR's SPS: a decoder can start here
        start = played.index(got[0])
        assert got == played[start : start + len(got)]  # from there on, every frame of that camera
        assert len(got) >= len(played) - start - 1  # ... to the end (the last may race the stop)
    await client.close()


async def test_one_individual_video_at_a_time_by_default_a_new_subscription_replaces_the_last(
    server: RTMSServer,
) -> None:
    """Zoom's V1 ("Stream a single participant's video"): subscribing another participant
    unsubscribes the previous one, with no error."""
    items = make_items(duration_ms=1000)
    items += [
        Item("video", t + 50, uid, "x", b"\x00\x00\x00\x01\x41" + bytes([uid % 256]) * 50)
        for t in range(0, 1000, 100)
        for uid in (ALICE, BOB)
    ]
    items.sort(key=lambda i: i.offset_ms)
    handle = server.add_stream(MEETING, "s-v1", items, speed=1.0)
    client = Client(handle)
    await client.join(kinds=("video",), video=rp.MediaParams(video=rp.VideoParams(data_opt=4)))
    await client.send(rp.VideoSubscriptionRequest(ALICE, True))
    await client.send(rp.VideoSubscriptionRequest(BOB, True))
    await client.sig.wait_for(lambda: len(client.sig.of_type(29)) == 2)
    assert [m["status_code"] for m in client.sig.of_type(29)] == [0, 0]
    async with asyncio.timeout(30):
        await handle.wait_done()
    # Alice's camera, if any of it came before Bob's subscription, stops where Bob's starts: replaced
    users = [f.user_id for f in client.frames("video")]
    assert users.count(BOB) >= 5 and users == sorted(users, key=lambda uid: uid == BOB)
    await client.close()
