"""The whole ingest path: signed webhooks into the endpoint, workers holding RTMS streams of the
emulator, every frame on the raw topics, byte for byte, in receive order, end-of-stream last."""

from __future__ import annotations

import asyncio

import pytest

from rtmsflow.settings import Settings
from tests.ingest_support import (
    assert_eos_last,
    assert_ingest_seq_increasing,
    assert_same_frames,
    frames_of,
    ingest_stack,
    small_meeting,
)

pytestmark = pytest.mark.kafka


async def test_started_webhook_brings_every_frame_then_end_of_stream(
    settings: Settings, kafka_topics: dict[str, str]
) -> None:
    meeting = await asyncio.to_thread(small_meeting, 1, 3.0)
    async with ingest_stack(settings) as stack:
        await stack.start_worker()
        identity, handle = stack.stream(meeting, speed=2.0)
        (delivery,) = await stack.hooks.rtms_started(identity)
        assert delivery.delivered
        async with asyncio.timeout(30):
            reason = await handle.wait_done()
        await stack.hooks.rtms_stopped(identity, reason)
        raw = await stack.wait_eos(identity.instance_id)
        assert_eos_last(raw, reason)
        assert_ingest_seq_increasing(raw)
        assert_same_frames(handle.sent, raw)
        audio = frames_of(raw["rtms.raw.audio"])[0]
        assert audio["media"] == {
            "codec": "L16",
            "sample_rate": 16000,
            "channels": 1,
            "send_rate_ms": 20,
            "mixed": True,
        }
        assert frames_of(raw["rtms.raw.video"])[0]["media"]["codec"] == "H264"
        names = {v["name"] for v in frames_of(raw["rtms.raw.events"])}
        assert {"participant_join", "active_speaker", "stream_state", "session_state"} <= names
        assert len(stack.backends) == 1
