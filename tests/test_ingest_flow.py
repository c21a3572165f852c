"""The whole ingest path: signed webhooks into the endpoint, workers holding RTMS streams of the
emulator, every frame on the raw topics, byte for byte, in receive order, end-of-stream last."""

from __future__ import annotations

import asyncio

import pytest

from rtmsflow.settings import Settings
from tests.ingest_support import RAW, frames_of, ingest_stack, small_meeting

pytestmark = pytest.mark.kafka


def assert_same_frames(sent: list, raw: dict[str, list[dict]]) -> None:
    """What the emulator sent, per channel, equals what is on the raw topics (order included)."""
    audio = [(f.timestamp, f.user_id, f.data) for f in sent if f.channel == "audio"]
    video = [(f.timestamp, f.user_id, f.data) for f in sent if f.channel == "video"]
    text = [
        (f.timestamp, f.user_id, f.data, f.start_time, f.end_time) for f in sent if f.channel == "transcript"
    ]
    got_audio = [
        (v["timestamp_ms"], v["participant_id"], v["payload"]) for v in frames_of(raw["rtms.raw.audio"])
    ]
    got_video = [
        (v["timestamp_ms"], v["participant_id"], v["payload"]) for v in frames_of(raw["rtms.raw.video"])
    ]
    got_text = [(v["timestamp_ms"], v["participant_id"], v["text"], v["start_time_ms"], v["end_time_ms"])
                for v in frames_of(raw["rtms.raw.transcript"])]  # fmt: skip
    assert audio and video and text
    assert got_audio == audio
    assert got_video == video
    assert got_text == text


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
        for name in RAW:
            records = raw[name]
            assert records[-1]["end_of_stream"] and records[-1]["stop_reason"] == reason, name
            assert sum(v["end_of_stream"] for v in records) == 1, name
            seqs = [v["ingest_seq"] for v in records if v["stream_kind"] == records[-1]["stream_kind"]]
            assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), name
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
