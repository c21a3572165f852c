"""Conformance: Zoom's own SDK (`rtms` 1.1.0) joins the emulator and gets exactly what it sent.

The SDK runs in a subprocess (tests/emulator/sdk_driver.py) so a crash in its C core cannot take the test
session down; it logs every callback, and the test compares them with the frames the emulator
recorded (bytes, user id/name, timestamps), the events the SDK subscribed to, and the stop reason.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import platform
import ssl
import sys
from pathlib import Path
from typing import Any

import pytest

import rtms_protocol as rp
from emulator.faults import Faults
from emulator.media import MeetingSpec, SyntheticMeeting
from emulator.server import RTMSServer, StreamHandle
from tests.ingest.support import SDK_MAY_LOSE_TAIL_MS, assert_prefix_with_tail
from tests.support.tls import make_test_cert

pytestmark = [
    pytest.mark.sdk,
    pytest.mark.skipif(
        not (platform.system() == "Linux" and platform.machine() == "x86_64"),
        reason="Zoom's rtms wheel is only run here on linux x86_64 (it also exists for macOS arm64, untested)",
    ),
]

CLIENT_ID = "sdk-client-id"
SECRET = "sdk-client-secret"
DRIVER = Path(__file__).with_name("sdk_driver.py")
BASE_MS = 1_800_000_000_000
# What Zoom's SDK subscribes to at join: 2, 3, 4 (on_user_update) and 8, 9 (on_participant_video).
SDK_EVENTS = frozenset({2, 3, 4, 8, 9})


async def run_sdk(
    handle: StreamHandle, workdir: Path, *, ca: Path | None = None, **extra: Any
) -> list[dict[str, Any]]:
    """Run the SDK driver against `handle` until it leaves; returns its callbacks."""
    (workdir / "logs").mkdir(parents=True, exist_ok=True)
    out = workdir / "callbacks.jsonl"
    args = {
        "server_urls": handle.server_urls,
        "meeting_uuid": handle.meeting_uuid,
        "rtms_stream_id": handle.stream_id,
        "client": CLIENT_ID,
        "secret": SECRET,
        "out": str(out),
        "timeout_s": 30,
    } | extra
    env = os.environ | {"ZM_RTMS_CLIENT": CLIENT_ID, "ZM_RTMS_SECRET": SECRET, "ZM_RTMS_LOG_LEVEL": "error"}
    if ca is not None:
        env["ZM_RTMS_CA"] = str(ca)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(DRIVER), json.dumps(args), cwd=workdir, env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(60):
        _, stderr = await proc.communicate()
    assert proc.returncode == 0, f"SDK driver exited with {proc.returncode}: {stderr.decode()[-2000:]}"
    return [json.loads(line) for line in out.read_text().splitlines()]


def received(callbacks: list[dict[str, Any]], kind: str) -> list[tuple[Any, ...]]:
    return [(c["ts"], c["uid"], c["name"], c["size"], c["sha"]) for c in callbacks if c["cb"] == kind]


def sent(handle: StreamHandle, channel: str) -> list[tuple[Any, ...]]:
    out = []
    for f in handle.sent:
        if f.channel == channel:
            data = f.data.encode() if isinstance(f.data, str) else f.data
            out.append((f.timestamp, f.user_id, f.user_name, len(data), hashlib.sha256(data).hexdigest()))
    return out


def labelled_by_last_speaker_heard(callbacks: list[dict[str, Any]]) -> list[tuple[int, str]]:
    """Each audio callback's expected label: the active speaker of the last active-speaker event
    the SDK had called back before it (-1 before any). Receipt order, not timestamps: signaling and
    media are separate sockets, so an event stamped later than a packet can arrive before it."""
    speaker, labels = (-1, ""), []
    for c in callbacks:
        if c["cb"] == "event" and c["raw"]["event_type"] == 2:
            speaker = (c["raw"]["user_id"], c["raw"]["user_name"])
        elif c["cb"] == "audio":
            labels.append(speaker)
    return labels


def expected_events(meeting: SyntheticMeeting, types: set[int]) -> list[dict[str, Any]]:
    """The EVENT_UPDATE bodies the meeting plays, for the subscribed types (plus 1, always sent)."""
    events: list[dict[str, Any]] = [{"event_type": 1, "timestamp": BASE_MS}]
    for item in meeting.timeline(audio=False, video=False, transcripts=False):
        assert item.event is not None
        if item.event["event_type"] in types:
            body = {"event_type": item.event["event_type"], "timestamp": BASE_MS + item.offset_ms}
            events.append(body | {k: v for k, v in item.event.items() if k != "event_type"})
    return events


@pytest.fixture(scope="module")
def meeting() -> SyntheticMeeting:
    spec = MeetingSpec(
        seed=5, participants=3, duration_s=4.0, video="720p", fps=30, beep_every_ms=2000, deskshare=True
    )
    m = SyntheticMeeting(spec)
    m.prepare()  # encode the clips once, before any server runs
    return m


@pytest.mark.parametrize("tls", [False, True], ids=["ws", "wss"])
async def test_zoom_sdk_receives_every_frame_and_subscribed_event(
    meeting: SyntheticMeeting, tmp_path: Path, tls: bool
) -> None:
    ssl_context = None
    ca = None
    if tls:
        ca, key = make_test_cert(tmp_path)
        ssl_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ssl_context.load_cert_chain(ca, key)
    async with RTMSServer(client_id=CLIENT_ID, client_secret=SECRET, ssl_context=ssl_context) as server:
        handle = server.add_stream(
            "sdkMeeting==",
            f"sdk-{'wss' if tls else 'ws'}",
            meeting,
            speed=2.0,
            base_ms=BASE_MS,
            record=True,
            start_after_subscribing=SDK_EVENTS,  # every event from the first: media waits for them
        )
        callbacks = await run_sdk(handle, tmp_path / "sdk", ca=ca)
        reason = await handle.wait_done()
    assert reason == rp.StopReason.MEETING_ENDED
    assert [c["reason"] for c in callbacks if c["cb"] == "join_confirm"] == [0]
    assert [c["reason"] for c in callbacks if c["cb"] == "leave"] == [rp.StopReason.MEETING_ENDED]
    assert handle.granted["audio"] == rp.AudioParams(
        data_opt=1
    )  # what the SDK asked for: L16 16 kHz mono mixed
    # The meeting has chat and the server offers it (server_urls.chat), but SDK 1.1.0 has no chat
    # callback and never asks for media type 16: it joins and receives the rest as before.
    assert list(meeting.chat_messages())
    assert "chat" not in handle.granted and not sent(handle, "chat")
    for channel in ("audio", "video", "deskshare", "transcript"):
        want = sent(handle, channel)
        assert want, f"the meeting sent no {channel}"
        got = received(callbacks, channel)
        if channel == "audio":
            # Mixed audio goes out as user_id 0 / user_name ""; the SDK labels each mixed packet
            # with the active speaker it last heard of (userId -1 before any; zoom/rtms issue #75).
            assert {uid for _, uid, _, _, _ in want} == {0}
            labels = labelled_by_last_speaker_heard(callbacks)
            assert len(labels) == len(got) and len(set(labels)) > 1, labels  # the speaker changed
            labelled = [(w[0], *label, *w[3:]) for w, label in zip(want, labels, strict=False)]
            want = labelled + want[len(labelled) :]
        # all of it, but for what was in flight when TERMINATED closed the SDK's sockets
        assert_prefix_with_tail(got, want, SDK_MAY_LOSE_TAIL_MS)
    transcripts = [(c["start"], c["text"], c["end"]) for c in callbacks if c["cb"] == "transcript"]
    assert_prefix_with_tail(
        transcripts,
        [(f.start_time, f.data, f.end_time) for f in handle.sent if f.channel == "transcript"],
        SDK_MAY_LOSE_TAIL_MS,
    )
    # The SDK subscribed to 2, 3, 4 (on_user_update) and 8, 9 (on_participant_video) at join;
    # sharing events (5, 6) were not subscribed, so they must not arrive.
    assert handle.subscribed_events == SDK_EVENTS
    events = [c["raw"] for c in callbacks if c["cb"] == "event"]
    assert events == expected_events(meeting, SDK_EVENTS), json.dumps(callbacks[:12])
    joins = [(c["op"], c["id"], c["name"]) for c in callbacks if c["cb"] == "user_update" and c["op"] == 0]
    assert joins == [(0, p.user_id, p.user_name) for p in meeting.participants]


async def test_zoom_sdk_leaves_with_the_stop_reason_the_server_gives(
    meeting: SyntheticMeeting, tmp_path: Path
) -> None:
    async with RTMSServer(client_id=CLIENT_ID, client_secret=SECRET) as server:
        handle = server.add_stream("sdkMeeting==", "sdk-stop", meeting, base_ms=BASE_MS, record=True)
        sdk = asyncio.create_task(run_sdk(handle, tmp_path / "sdk", audio_data_opt=2))
        await handle.wait_media(1000)
        handle.stop(rp.StopReason.USER_EJECTED)
        callbacks = await sdk
    assert [c["reason"] for c in callbacks if c["cb"] == "leave"] == [rp.StopReason.USER_EJECTED]
    got, want = received(callbacks, "audio"), sent(handle, "audio")
    # frames sent in the same instant as the stop may lose the race with it (the SDK leaves at once)
    assert got == want[: len(got)] and len(got) >= len(want) - 5
    speakers = {uid for _, uid, _, _, _ in received(callbacks, "audio")}
    assert speakers and speakers <= {p.user_id for p in meeting.participants}  # multi-stream audio


@pytest.mark.parametrize("tls", [False, True], ids=["ws", "wss"])
async def test_zoom_sdk_subscribes_each_participants_camera_and_gets_exactly_it(
    meeting: SyntheticMeeting, tmp_path: Path, tls: bool
) -> None:
    """SDK 1.1.0's `subscribe_video` (VIDEO_SUBSCRIPTION_REQ 28) with video data_opt 4: each
    subscribed participant's own camera arrives, labelled with that participant, from an IDR on."""
    ssl_context = None
    ca = None
    if tls:
        ca, key = make_test_cert(tmp_path)
        ssl_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ssl_context.load_cert_chain(ca, key)
    ids = [p.user_id for p in meeting.participants]
    async with RTMSServer(client_id=CLIENT_ID, client_secret=SECRET, ssl_context=ssl_context) as server:
        handle = server.add_stream(
            "sdkMeeting==", f"sdk-cams-{tls}", meeting, Faults(individual_videos=4), speed=2.0,
            base_ms=BASE_MS, record=True, start_after_subscribing=SDK_EVENTS,
        )  # fmt: skip
        callbacks = await run_sdk(handle, tmp_path / "sdk", ca=ca, video_data_opt=4, subscribe_video=ids)
        assert await handle.wait_done() == rp.StopReason.MEETING_ENDED
    video = handle.granted["video"]
    assert (
        isinstance(video, rp.VideoParams) and video.data_opt == rp.DataOption.VIDEO_SINGLE_INDIVIDUAL_STREAM
    )
    answers = [(c["uid"], c["status"]) for c in callbacks if c["cb"] == "video_subscribed"]
    assert answers == [(uid, 0) for uid in ids]
    want = sent(handle, "video")
    assert {uid for _, uid, _, _, _ in want} == set(ids)  # every camera, not the active speaker's
    got = received(callbacks, "video")
    for uid in ids:
        mine = [w for w in want if w[1] == uid]
        first = next(f for f in handle.sent if f.channel == "video" and f.user_id == uid)
        assert first.data[4] & 0x1F == 7  # each camera starts with an IDR's SPS
        assert_prefix_with_tail([g for g in got if g[1] == uid], mine, SDK_MAY_LOSE_TAIL_MS)
