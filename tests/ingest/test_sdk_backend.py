"""The SDK backend (Zoom's `rtms` 1.1.0 in a host process): the pure parts without I/O, then the
whole path through the real broker and the emulator -- every frame byte for byte on the raw topics,
end-of-stream last -- and the SDK defects it works around: subscriptions, sockets really closed on
leave, comma-separated URLs, no STREAM_CLOSE_REQ, a crashing C core."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import platform
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import rtms_protocol as proto
from emulator.server import RTMSServer
from ingest.backend import FrameHandler, Product, SessionBackend, StreamSession
from ingest.producer import FrameProducer
from ingest.rtms_client import ClientConfig
from ingest.sdk_backend import (
    HOSTS,
    SdkBackend,
    SdkOptions,
    event_data,
    join_status_decision,
    leave_decision,
    sdk_plan,
    shutdown_sdk_hosts,
)
from ingest.sdk_wire import (
    ControlMessage,
    JoinCommand,
    Kind,
    LeaveCommand,
    MediaMessage,
    MessageReader,
    SdkAudio,
    SdkDeskshare,
    SdkMedia,
    SdkTranscript,
    SdkVideo,
    control,
    decode_command,
    media_header,
    reason_message,
)
from ingest.ws_client import client_config
from rtmsflow.settings import Settings
from tests.ingest.support import (
    CLIENT_ID,
    CLIENT_SECRET,
    RAW,
    SDK_MAY_LOSE_TAIL_MS,
    assert_eos_last,
    assert_same_frames,
    frames_of,
    ingest_settings,
    ingest_stack,
    play_whole_meeting,
    read_topic,
    small_meeting,
)

# Zoom publishes the `rtms` wheel for these platforms only (pyproject's `sdk` extra has the same
# marker). Everywhere else the SDK cannot exist; where it can, a missing install is a failure.
SDK_PLATFORM = (platform.system(), platform.machine()) in (("Linux", "x86_64"), ("Darwin", "arm64"))
needs_sdk = pytest.mark.skipif(
    not SDK_PLATFORM, reason="Zoom's rtms wheel is published only for linux x86_64 and macOS arm64"
)
SUBSCRIBED = {2, 3, 4, 5, 6, 8, 9}


# --- pure parts ---------------------------------------------------------------------------------


def test_plan_asks_the_sdk_for_what_the_raw_backend_asks_for() -> None:
    plan = sdk_plan(ClientConfig("id", "secret", video_resolution=1, video_fps=10, transcript_language=9))
    # L16 16 kHz mono mixed 20 ms (frame_size in samples); H.264 SD 10 fps active speaker
    assert plan.media.audio == SdkAudio(
        content_type=2, codec=1, sample_rate=1, channel=1, data_opt=1, duration=20, frame_size=320
    )
    assert plan.media.video == SdkVideo(content_type=3, codec=7, resolution=1, data_opt=3, fps=10)
    assert plan.media.deskshare is None
    assert plan.media.transcript == SdkTranscript(src_language=9, enable_lid=True)
    assert (plan.audio.codec, plan.audio.sample_rate, plan.audio.channels, plan.audio.mixed) == (
        "L16",
        16000,
        1,
        True,
    )
    assert (plan.video.codec, plan.video.width, plan.video.height, plan.video.fps) == ("H264", 640, 360, 10)
    multi = sdk_plan(ClientConfig("id", "secret", audio_multi=True, deskshare=True, transcript=False))
    assert multi.media.audio is not None and multi.media.audio.data_opt == 2 and not multi.audio.mixed
    # JPG HD 1 fps, as the raw backend asks
    assert multi.media.deskshare == SdkDeskshare(content_type=3, codec=5, resolution=2, fps=1)
    assert multi.media.transcript is None


def test_plan_refuses_individual_video_which_this_backend_does_not_subscribe() -> None:
    with pytest.raises(ValueError, match="websocket backend"):
        sdk_plan(ClientConfig("id", "secret", video_individual=True))
    # the control: without video there is no camera to subscribe
    assert sdk_plan(ClientConfig("id", "secret", video=False, video_individual=True)).media.video is None
    assert sdk_plan(ClientConfig("i", "s")).media.transcript == SdkTranscript(-1, True)


@pytest.mark.parametrize(
    ("status", "decision"),
    [(0, "ok"), (8, "retry"), (3, "fatal"), (2, "fatal"), (17, "fatal"), (1, "next"), (610, "next")],
)
def test_join_confirmation_statuses(status: int, decision: str) -> None:
    assert join_status_decision(status) == decision


@pytest.mark.parametrize(
    ("reason", "decision"),
    [
        (6, ("ended", 6)),
        (20, ("ended", 20)),
        (-1, ("ended", 0)),
        (960, ("retry", None)),
        (1001, ("retry", None)),
    ],
)
def test_leave_reasons(reason: int, decision: tuple[str, int | None]) -> None:
    assert leave_decision(reason) == decision


def test_event_from_the_sdk_is_the_raw_backends_event() -> None:
    raw = '{"event_type":3,"participants":[{"user_id":16778240,"user_name":"Alice"}],"timestamp":17}'
    ev = event_data(raw, Product.MEETING)
    assert (ev.msg_type, ev.name, ev.event_type, ev.timestamp_ms) == (6, "participant_join", 3, 17)
    assert [(p.user_id, p.user_name) for p in ev.participants] == [(16778240, "Alice")]
    assert ev.body == '{"msg_type":6,"event":' + raw + "}"
    speaker = event_data('{"event_type":2,"timestamp":5,"user_id":7,"user_name":"Bo"}', Product.MEETING)
    assert (speaker.name, speaker.participant_id, speaker.participant_name) == ("active_speaker", 7, "Bo")
    assert event_data('{"event_type":9,"timestamp":1}', Product.CONTACT_CENTER).name == "zcc_event_9"


def test_host_messages_survive_any_chunking() -> None:
    pcm = bytes(range(256)) * 3
    stream = (
        control(Kind.HELLO, 0, b'{"pid":1}')
        + media_header(Kind.AUDIO, 4, 1_700_000_000_000, 16778240, 0, 0, "Zoë".encode(), len(pcm))
        + pcm
        + reason_message(Kind.JOIN_CONFIRM, 4, 0)
        + media_header(Kind.TRANSCRIPT, 4, 5, 1, 2, 3, b"", 5)
        + b"hello"
        + control(Kind.LEFT, 4)
    )
    for step in (1, 7, 64, len(stream)):
        reader = MessageReader()
        got = []
        for i in range(0, len(stream), step):
            got += reader.feed(stream[i : i + step])
        assert reader.pending_bytes == 0
        assert [m.kind for m in got] == [
            Kind.HELLO,
            Kind.AUDIO,
            Kind.JOIN_CONFIRM,
            Kind.TRANSCRIPT,
            Kind.LEFT,
        ]
        audio = got[1]
        assert isinstance(audio, MediaMessage)
        assert (audio.sid, audio.timestamp_ms, audio.user_id, audio.user_name, audio.payload) == (
            4,
            1_700_000_000_000,
            16778240,
            "Zoë",
            pcm,
        )
        text = got[3]
        assert isinstance(text, MediaMessage) and (text.start_ms, text.end_ms, text.payload) == (
            2,
            3,
            b"hello",
        )
        confirm = got[2]
        assert isinstance(confirm, ControlMessage) and confirm.reason == 0


def test_commands_round_trip() -> None:
    media = SdkMedia(audio=SdkAudio(2, 1, 1, 1, 1, 20, 320), transcript=SdkTranscript(-1, True))
    join = JoinCommand(3, "m==", "s1", "wss://x/y", "sig", media)
    assert decode_command(join.encode()) == join
    every = SdkMedia(SdkAudio(2, 1, 1, 1, 1, 20, 320), SdkVideo(3, 7, 1, 3, 10), SdkDeskshare(3, 5, 2, 1))
    assert decode_command(dataclasses.replace(join, media=every).encode()) == dataclasses.replace(
        join, media=every
    )
    assert decode_command(LeaveCommand(3).encode()) == LeaveCommand(3)
    assert decode_command(b'{"op":"quit"}') is None
    with pytest.raises(ValueError):
        decode_command(b'{"op":"dance"}')


# --- through the SDK, the emulator and the broker ------------------------------------------------------


@pytest.fixture
async def sdk_options(tmp_path: Path) -> AsyncIterator[SdkOptions]:
    """A fresh SDK host home per test; the host is stopped after the test."""
    yield SdkOptions(home=tmp_path / "sdk-home", linger_s=0.2)
    await shutdown_sdk_hosts()


def sdk_config(settings: Settings, **overrides: Any) -> ClientConfig:
    base: dict[str, Any] = {"backoff_base_s": 0.2, "video_resolution": 1, "video_fps": 10}
    base.update(overrides)
    return client_config(settings, **base)


@dataclasses.dataclass
class Direct:
    """A backend on a FrameProducer, without the worker: for the tests that drive `stop()` themselves."""

    settings: Settings
    frames: FrameProducer
    server: RTMSServer

    async def raw(self, meeting_uuid: str) -> dict[str, list[dict[str, Any]]]:
        out = {}
        for name in RAW:
            records = await read_topic(self.settings, self.settings.topic_prefix + name)
            out[name] = [v for k, v, _, _ in records if k == meeting_uuid.encode()]
        return out


@pytest.fixture
async def direct(settings: Settings, kafka_topics: dict[str, str]) -> AsyncIterator[Direct]:
    s = ingest_settings(settings)
    frames = FrameProducer(s)
    await frames.start()
    server = RTMSServer(client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    await server.start()
    try:
        yield Direct(s, frames, server)
    finally:
        await server.stop()
        await frames.stop()


def assert_sent_minus_a_gap(
    sent_frames: list[Any], raw: dict[str, list[dict[str, Any]]], max_lost: int
) -> None:
    """Audio and video on the raw topics are what the emulator sent, in order, once each, except
    at most `max_lost` frames per channel (those in flight when a connection went away), and the
    last frame of each channel arrived."""
    for channel, name in (("audio", "rtms.raw.audio"), ("video", "rtms.raw.video")):
        sent = [(f.timestamp, f.user_id, f.data) for f in sent_frames if f.channel == channel]
        got = [(v["timestamp_ms"], v["participant_id"], v["payload"]) for v in frames_of(raw[name])]
        assert len(set(got)) == len(got), f"{channel}: duplicates"
        it = iter(sent)
        assert all(frame in it for frame in got), f"{channel}: not a subsequence of what was sent"
        assert len(sent) - len(got) <= max_lost, f"{channel}: lost {len(sent) - len(got)} frames"
        assert got[-1] == sent[-1], channel


@needs_sdk
@pytest.mark.kafka
@pytest.mark.sdk
async def test_started_webhook_brings_every_frame_then_end_of_stream_with_the_sdk(
    settings: Settings, kafka_topics: dict[str, str], sdk_options: SdkOptions
) -> None:
    meeting = await asyncio.to_thread(small_meeting, 1, 3.0)
    async with ingest_stack(settings) as stack:
        backends: list[SdkBackend] = []

        def factory(s: Settings, frames: FrameHandler) -> SessionBackend:
            backend = SdkBackend(s, frames, config=sdk_config(s), options=sdk_options)
            backends.append(backend)
            return backend

        stack.backend_factory = factory  # type: ignore[method-assign]
        await stack.start_worker()
        handle, raw = await play_whole_meeting(stack, meeting, SDK_MAY_LOSE_TAIL_MS)
        assert frames_of(raw["rtms.raw.video"])[0]["media"] == {
            "codec": "H264",
            "width": 640,
            "height": 360,
            "fps": 10,
            "mode": "ACTIVE_SPEAKER",
        }
        # the SDK asked for what the raw backend asks for (its own defaults are OPUS 48 kHz stereo)
        granted_audio, granted_video = handle.granted["audio"], handle.granted["video"]
        assert isinstance(granted_audio, proto.AudioParams) and isinstance(granted_video, proto.VideoParams)
        assert (granted_audio.codec, granted_audio.sample_rate, granted_audio.channel) == (1, 1, 1)
        assert (granted_video.codec, granted_video.fps) == (7, 10)
        # typed callbacks never subscribe; the backend did, so the emulator sent the events
        assert SUBSCRIBED <= handle.subscribed_events
        events = frames_of(raw["rtms.raw.events"])
        assert {"first_packet", "participant_join", "active_speaker"} <= {v["name"] for v in events}
        signaled = [v for v in events if v["msg_type"] != 0]  # msg_type 0: the lifecycle webhooks
        assert [v["name"] for v in events if v["msg_type"] == 0] == ["rtms_started", "rtms_stopped"]
        assert len(signaled) == handle.stats.events_sent  # every EVENT_UPDATE, nothing else (no msg 8/9)
        assert len(backends) == 1 and backends[0].ready_count == 1
        # the C core's log went to the host's home, not to ./logs of whoever started the worker
        assert list((sdk_options.home / "logs").glob("*.log"))  # python_<pid>_… or python3_<pid>_…


@needs_sdk
@pytest.mark.kafka
@pytest.mark.sdk
async def test_comma_separated_urls_fail_over_to_the_next(direct: Direct, sdk_options: SdkOptions) -> None:
    meeting = await asyncio.to_thread(small_meeting, 2, 3.0)
    handle = direct.server.add_stream("sdk-failover==", "sdk-failover", meeting, speed=2.0, record=True)
    # the first URL refuses connections: the SDK would retry it forever; our join timeout moves on
    session = StreamSession(
        "sdk-failover==", "sdk-failover", f"ws://127.0.0.1:9/x, {handle.server_urls}", fresh=True
    )
    backend = SdkBackend(
        direct.settings,
        direct.frames,
        config=sdk_config(direct.settings, handshake_timeout_s=2.0),
        options=sdk_options,
    )
    await backend.start(session)
    async with asyncio.timeout(40):
        outcome = await backend.wait()
    assert outcome.ended and outcome.stop_reason == 6
    await direct.frames.end_of_stream(session, outcome.stop_reason)
    raw = await direct.raw(session.meeting_uuid)
    assert_eos_last(raw, 6)
    assert_same_frames(handle.sent, raw, SDK_MAY_LOSE_TAIL_MS)


@needs_sdk
@pytest.mark.kafka
@pytest.mark.sdk
async def test_leave_closes_the_sdk_sockets_so_the_next_owner_can_connect(
    direct: Direct, sdk_options: SdkOptions
) -> None:
    meeting = await asyncio.to_thread(small_meeting, 3, 4.0)
    handle = direct.server.add_stream("sdk-handover==", "sdk-handover", meeting, speed=1.0, record=True)
    session = StreamSession("sdk-handover==", "sdk-handover", handle.server_urls, fresh=True)
    interrupted = asyncio.Event()
    handle.on_lifecycle(lambda change: interrupted.set() if change.kind == "interrupted" else None)
    first = SdkBackend(
        direct.settings, direct.frames, config=sdk_config(direct.settings), options=sdk_options
    )
    await first.start(session)
    async with asyncio.timeout(20):
        await handle.wait_media(1_000)
    await first.stop()  # a rebalance: leave without ending the stream
    assert (await first.wait()).ended is False
    # `leave()` from a foreign thread would leave the sockets open (the emulator stays "active"
    # and refuses a second signaling connection with status 8 until they time out)
    async with asyncio.timeout(5):
        await interrupted.wait()
    second = SdkBackend(
        direct.settings, direct.frames, config=sdk_config(direct.settings), options=sdk_options
    )
    await second.start(session)
    async with asyncio.timeout(30):
        outcome = await second.wait()
    assert outcome.ended and outcome.stop_reason == 6 and second.ready_count == 1
    assert handle.stats.signaling_handshakes == 2
    await direct.frames.end_of_stream(session, outcome.stop_reason)
    raw = await direct.raw(session.meeting_uuid)
    assert_eos_last(raw, 6)
    # What "Zoom" had written into the old sockets when they closed is gone (with any client);
    # the audio of the gap was buffered by Zoom and came on the new connection.
    assert_sent_minus_a_gap(handle.sent, raw, max_lost=10)


@needs_sdk
@pytest.mark.kafka
@pytest.mark.sdk
async def test_stop_with_close_stream_ends_the_stream_although_the_sdk_cannot(
    direct: Direct, sdk_options: SdkOptions
) -> None:
    meeting = await asyncio.to_thread(small_meeting, 4, 10.0)
    handle = direct.server.add_stream("sdk-close==", "sdk-close", meeting, record=True)
    session = StreamSession("sdk-close==", "sdk-close", handle.server_urls, fresh=True)
    backend = SdkBackend(
        direct.settings, direct.frames, config=sdk_config(direct.settings), options=sdk_options
    )
    await backend.start(session)
    async with asyncio.timeout(20):
        await handle.wait_media(500)
    await backend.stop(close_stream=True)
    outcome = await backend.wait()
    assert outcome.ended and outcome.stop_reason == 20 and outcome.detail == "closed by us"
    async with asyncio.timeout(5):
        assert await handle.wait_done() == 20  # RECEIVER_REQUEST_CLOSE: the STREAM_CLOSE_REQ arrived


@needs_sdk
@pytest.mark.kafka
@pytest.mark.sdk
async def test_a_crashing_sdk_host_costs_a_reconnect_not_the_worker(
    direct: Direct, sdk_options: SdkOptions
) -> None:
    meeting = await asyncio.to_thread(small_meeting, 5, 6.0)
    handle = direct.server.add_stream("sdk-crash==", "sdk-crash", meeting, speed=1.0, record=True)
    session = StreamSession("sdk-crash==", "sdk-crash", handle.server_urls, fresh=True)
    backend = SdkBackend(
        direct.settings, direct.frames, config=sdk_config(direct.settings), options=sdk_options
    )
    await backend.start(session)
    async with asyncio.timeout(20):
        await handle.wait_media(1_500)
    host = HOSTS._hosts[asyncio.get_running_loop()]
    assert host.proc is not None
    os.kill(host.proc.pid, signal.SIGSEGV)  # what the C core does on a bad day
    async with asyncio.timeout(40):
        outcome = await backend.wait()
    assert outcome.ended and outcome.stop_reason == 6
    assert backend.ready_count == 2 and handle.stats.signaling_handshakes == 2
    await direct.frames.end_of_stream(session, outcome.stop_reason)
    raw = await direct.raw(session.meeting_uuid)
    assert_eos_last(raw, 6)
    # Frames in flight in the dead host are lost (as with any crash); everything else arrived once,
    # in order, and "Zoom" re-sent the audio of the gap after the reconnect.
    assert_sent_minus_a_gap(handle.sent, raw, max_lost=25)
