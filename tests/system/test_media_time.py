"""Media time through the real broker: a dropped video socket's loss is listed however short, and
a frame whose H.264 the parser cannot read still reaches the raw topic (the system of record)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from emulator.media import MeetingSpec, SyntheticMeeting
from ingest.backend import StreamSession, VideoData, VideoParams
from ingest.producer import FrameProducer
from processors.lanes import LaneConfig, PartitionCore
from rtmsflow.settings import Settings
from schemas.codec import Codec
from schemas.markers import read_control
from tests.ingest.support import ingest_stack, read_topic
from tests.processors.support import _raw_records

pytestmark = pytest.mark.kafka

DEADLINE_S = 120
FPS = 10  # what the test stack's worker asks for: the 300 ms video gap rule lets two missing frames pass


def video_gaps(
    codec: Codec, settings: Settings, records: list[Any], keep_marks: bool
) -> list[dict[str, Any]]:
    """The rtms.video gap records the processors' core makes of raw video `records` (with or
    without the progress marks ingest wrote among them)."""
    core = PartitionCore(0, lambda b, d: codec.decode(settings.topic_prefix + b, d), LaneConfig(300))
    gaps = []
    for _, offset, key, value, headers in records:
        control = read_control(headers) if value is None else None
        if control is not None and "media_ms" in control and not keep_marks:
            continue
        for out in core.feed("rtms.raw.video", offset, key, value, headers):
            if out.topic == "rtms.video" and out.value is not None and out.value["gap"] is not None:
                gaps.append(out.value["gap"])
    return gaps


async def test_a_dropped_video_socket_lists_its_loss_as_a_loss_gap_however_short(
    settings: Settings, kafka_topics: dict[str, str]
) -> None:
    spec = MeetingSpec(seed=6, participants=2, duration_s=3.0, video="360p", fps=FPS)
    meeting = await asyncio.to_thread(lambda: SyntheticMeeting(spec))
    await asyncio.to_thread(meeting.prepare)
    async with ingest_stack(settings) as stack:
        await stack.start_worker()
        identity, handle = stack.stream(meeting)
        await stack.hooks.rtms_started(identity)
        async with asyncio.timeout(DEADLINE_S):
            await handle.wait_media(1000)
        handle.drop_media("video", close_frame=False)
        # a stall of the event loop the emulator and the worker share: the frames due meanwhile are
        # lost (RTMS does not buffer video), as when a reconnect takes a moment; its length only
        # sets how many are lost, which the test reads back below
        time.sleep(0.15)  # noqa: ASYNC251 (blocking the loop is the fault injected)
        async with asyncio.timeout(DEADLINE_S):
            await handle.wait_done()
        await stack.wait_eos(identity.instance_id, timeout_s=DEADLINE_S)

    marks = [v for _, v, _, _ in await read_topic(stack.settings, stack.settings.topic_prefix + "rtms.raw.video", marks=True)
             if v.get("progress") and v["losses"]]  # fmt: skip
    assert len(marks) == 1, marks  # ingest listed the drop in band, once
    (loss,) = marks[0]["losses"]
    raw = [r for r in await _raw_records(stack.settings, stack.settings.topic_prefix + "rtms.raw.video")]
    frames = sorted(
        Codec(stack.settings.schema_registry_url, stack.settings.topic_prefix).decode(
            stack.settings.topic_prefix + "rtms.raw.video", r[3]
        )["timestamp_ms"]
        for r in raw
        if r[3] is not None
    )
    holes = [(a, b) for a, b in zip(frames, frames[1:], strict=False) if b - a > 1000 // FPS * 3 // 2]
    assert holes, frames  # frames were lost while the socket was down
    assert len(holes) == 1, (holes, [f - frames[0] for f in frames])
    ((before, after),) = holes
    assert (loss["start_ms"], loss["end_ms"]) == (before, after)
    codec = Codec(stack.settings.schema_registry_url, stack.settings.topic_prefix)
    hole = {"start_ms": before + 1000 // FPS, "length_ms": after - before - 1000 // FPS, "reason": "LOSS"}
    assert video_gaps(codec, stack.settings, raw, keep_marks=True) == [hole]
    # control: without ingest's knowledge, a hole within the 200 ms rule is taken for jitter
    assert video_gaps(codec, stack.settings, raw, keep_marks=False) == (
        [] if hole["length_ms"] <= 200 else [hole]
    )


async def test_a_frame_whose_sps_cannot_be_read_reaches_the_raw_topic(
    settings: Settings, kafka_topics: dict[str, str]
) -> None:
    session = StreamSession("sps-meeting==", "s1", "wss://x.zoom.us", started_ms=1_800_000_000_000,
                            media_origin_ms=1_800_000_000_000)  # fmt: skip
    params = VideoParams(width=640, height=360, fps=10)
    # an SPS (NAL type 7) of one byte: a minimal SPS rtmsflow/h264.py cannot read, then an IDR slice
    unreadable = b"\x00\x00\x00\x01\x67\x42\x00\x00\x00\x01\x65\x88\x84"
    readable = b"\x00\x00\x00\x01\x65\x88\x84\x00"  # control: an IDR slice alone parses
    frames = FrameProducer(settings)
    await frames.start()
    try:
        for i in range(50):
            await frames.video(session, VideoData("VIDEO", session.started_ms + 100 * i, unreadable, params))
        await frames.video(session, VideoData("VIDEO", session.started_ms + 5_000, readable, params))
        await frames.end_of_stream(session, 6)
    finally:
        await frames.stop()
    records = [v for _, v, _, _ in await read_topic(settings, settings.topic_prefix + "rtms.raw.video")]
    data = [v for v in records if not v["end_of_stream"]]
    assert len(data) == 51 and [v["ingest_seq"] for v in data] == list(range(51))
    assert all(
        v["payload"] == unreadable and not v["access_unit_parsed"] and not v["keyframe"] for v in data[:50]
    )
    assert data[50]["access_unit_parsed"] and data[50]["keyframe"]
    dead = await read_topic(settings, settings.topic_prefix + "rtms.deadletter")
    assert dead == []
