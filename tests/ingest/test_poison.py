"""Frames too large for a topic, through the real broker: each is dead-lettered (its head, with a
reason naming the sizes and the meeting), the stream goes on without a hole in `ingest_seq`, its
marker counts what was written, and a meeting alongside is untouched."""

from __future__ import annotations

import pytest

from ingest.backend import AudioData, AudioParams, StreamSession, VideoData, VideoParams
from ingest.producer import FrameProducer
from rtmsflow.settings import Settings
from schemas.limits import MAX_DEAD_LETTER_PAYLOAD_BYTES, MAX_VALUE_BYTES
from tests.ingest.support import read_topic

pytestmark = pytest.mark.kafka
T0 = 1_760_000_000_000
BIG = StreamSession(
    "big/meeting==", "s-big", "wss://x.zoom.us", started_ms=T0, fresh=True, media_origin_ms=T0
)
CALM = StreamSession(
    "calm/meeting==", "s-calm", "wss://x.zoom.us", started_ms=T0, fresh=True, media_origin_ms=T0
)


def pcm(ts: int) -> AudioData:
    return AudioData(ts, bytes([ts % 251]) * 640, AudioParams(), 16778240, "Ann")


async def test_frames_over_the_topic_limit_are_dead_lettered_and_the_stream_goes_on(
    settings: Settings, kafka_topics: dict[str, str]
) -> None:
    huge = 20 << 20  # accepted by the WebSocket (32 MiB), over the raw topics' 8 MiB
    frames = FrameProducer(settings)
    await frames.start()
    try:
        for i in range(5):
            await frames.audio(CALM, pcm(T0 + 20 * i))
            if i == 2:
                await frames.audio(BIG, AudioData(T0 + 40, b"\x01" * huge, AudioParams(), 16778240, "Ann"))
                au = b"\x00\x00\x00\x01\x65\x88" + bytes(huge)
                await frames.video(BIG, VideoData("VIDEO", T0 + 40, au, VideoParams(width=640, height=360)))
            else:
                await frames.audio(BIG, pcm(T0 + 20 * i))
        await frames.end_of_stream(BIG, 6)
        await frames.end_of_stream(CALM, 6)
    finally:
        await frames.stop()

    audio = await read_topic(settings, kafka_topics["rtms.raw.audio"])
    by_meeting: dict[str, list[dict]] = {}
    for _k, v, _p, _o in audio:
        by_meeting.setdefault(v["meeting_uuid"], []).append(v)
    big, calm = by_meeting[BIG.meeting_uuid], by_meeting[CALM.meeting_uuid]
    assert [v["ingest_seq"] for v in big if not v["end_of_stream"]] == [0, 1, 2, 3]  # no hole
    assert [v["timestamp_ms"] for v in big if not v["end_of_stream"]] == [T0, T0 + 20, T0 + 60, T0 + 80]
    assert big[-1]["end_of_stream"] and big[-1]["counts"] == {"AUDIO": 4}
    assert [(v["timestamp_ms"], v["payload"]) for v in calm if not v["end_of_stream"]] == [
        (T0 + 20 * i, pcm(T0 + 20 * i).payload) for i in range(5)
    ]  # the meeting alongside: every frame, as sent
    video = await read_topic(settings, kafka_topics["rtms.raw.video"])
    assert [v["end_of_stream"] for _k, v, _p, _o in video if v["meeting_uuid"] == BIG.meeting_uuid] == [True]

    letters = [v for _k, v, _p, _o in await read_topic(settings, kafka_topics["rtms.deadletter"])]
    assert sorted(v["source"] for v in letters) == ["ingest:rtms.raw.audio", "ingest:rtms.raw.video"]
    for v in letters:
        assert (v["meeting_uuid"], v["rtms_stream_id"], v["error"]) == (
            BIG.meeting_uuid,
            "s-big",
            "RecordTooLarge",
        )
        assert f"over the raw topics' limit of {MAX_VALUE_BYTES}" in v["reason"]
        assert (
            f"its first {MAX_DEAD_LETTER_PAYLOAD_BYTES} of {huge + (6 if 'video' in v['source'] else 0)} bytes"
            in v["reason"]
        )
        assert len(v["payload"]) == MAX_DEAD_LETTER_PAYLOAD_BYTES  # its head: the letter itself fits
    (audio_letter,) = [v for v in letters if v["source"] == "ingest:rtms.raw.audio"]
    assert audio_letter["payload"] == b"\x01" * MAX_DEAD_LETTER_PAYLOAD_BYTES


async def test_a_frame_just_under_the_limit_is_written() -> None:
    """Positive control of the limit itself (no broker needed: the check is before any send)."""
    from tests.ingest.test_producer import make_producer

    frames, producer, codec = make_producer()
    producer.auto_ack = True
    size = MAX_VALUE_BYTES - 1_000
    await frames.audio(BIG, AudioData(T0, b"\x02" * size, AudioParams(), 1, "Ann"))
    await frames.audio(BIG, AudioData(T0 + 20, b"\x02" * (MAX_VALUE_BYTES + 1), AudioParams(), 1, "Ann"))
    topics = [t for t, *_ in producer.sent]
    assert topics == ["p.rtms.raw.audio", "p.rtms.deadletter"]
    assert len(producer.sent[0][1]) <= MAX_VALUE_BYTES
