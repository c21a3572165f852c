"""The whole ingest path: signed webhooks into the endpoint, workers holding RTMS streams of the
emulator, every frame on the raw topics, byte for byte, in receive order, end-of-stream last."""

from __future__ import annotations

import asyncio

import pytest

from rtmsflow.settings import Settings
from tests.ingest.support import (
    frames_of,
    ingest_stack,
    play_whole_meeting,
    small_meeting,
)

pytestmark = pytest.mark.kafka


async def test_started_webhook_brings_every_frame_then_end_of_stream(
    settings: Settings, kafka_topics: dict[str, str]
) -> None:
    meeting = await asyncio.to_thread(small_meeting, 1, 3.0)
    async with ingest_stack(settings) as stack:
        await stack.start_worker()
        handle, raw = await play_whole_meeting(stack, meeting)
        assert frames_of(raw["rtms.raw.video"])[0]["media"]["codec"] == "H264"
        names = {v["name"] for v in frames_of(raw["rtms.raw.events"])}
        assert {"participant_join", "active_speaker", "stream_state", "session_state"} <= names
        assert len(stack.backends) == 1
