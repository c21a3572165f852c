"""KafkaSink without a broker: frame identity stamping, the bounded in-flight window, and
end-of-stream only after everything before it is acknowledged."""

from __future__ import annotations

import asyncio
from typing import Any

from ingest.backend import (
    AudioData,
    AudioParams,
    EventData,
    StreamSession,
    TranscriptData,
    VideoData,
    VideoParams,
)
from ingest.producer import KafkaSink
from rtmsflow.settings import Settings
from schemas.codec import Codec

SESSION = StreamSession("meet==", "stream-1", "wss://x.zoom.us")


class FakeProducer:
    """Records sends; each returns a future the test resolves (the broker's ack)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes | None, asyncio.Future[Any]]] = []
        self.auto_ack = False

    async def send(self, topic: str, value: bytes, key: bytes | None = None) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.auto_ack:
            fut.set_result(None)
        self.sent.append((topic, value, key, fut))
        return fut

    async def flush(self) -> None:
        pass

    def ack_all(self) -> None:
        for *_, fut in self.sent:
            if not fut.done():
                fut.set_result(None)


def make_sink(**kw: Any) -> tuple[KafkaSink, FakeProducer, Codec]:
    settings = Settings(kafka_bootstrap="unused:9092", topic_prefix="p.")
    producer = FakeProducer()
    codec = Codec.from_settings(settings)
    return KafkaSink(settings, producer=producer, codec=codec, **kw), producer, codec  # type: ignore[arg-type]


def audio(ts: int) -> AudioData:
    return AudioData(ts, b"\x00\x01" * 320, AudioParams(), 16778240, "Ann")


async def test_records_are_stamped_and_keyed_by_meeting() -> None:
    sink, producer, codec = make_sink()
    await sink.audio(SESSION, audio(1000))
    await sink.audio(SESSION, audio(1020))
    await sink.video(
        SESSION, VideoData("VIDEO", 1005, b"\x00\x00\x01\x65", VideoParams(width=640, height=360, fps=10))
    )
    await sink.transcript(
        SESSION,
        TranscriptData(1010, "hello", 16778240, "Ann", language=9, start_time_ms=900, end_time_ms=1010),
    )
    await sink.event(SESSION, EventData(6, "active_speaker", 999, '{"msg_type":6}', 2, 16778240, "Ann"))
    topics = [t for t, *_ in producer.sent]
    assert topics == [
        "p.rtms.raw.audio",
        "p.rtms.raw.audio",
        "p.rtms.raw.video",
        "p.rtms.raw.transcript",
        "p.rtms.raw.events",
    ]
    assert {k for _, _, k, _ in producer.sent} == {b"meet=="}
    a0, a1, v0, t0, e0 = (codec.decode(t, v) for t, v, _, _ in producer.sent)
    assert (a0["ingest_seq"], a1["ingest_seq"], v0["ingest_seq"], t0["ingest_seq"], e0["ingest_seq"]) == (
        0,
        1,
        0,
        0,
        0,
    )
    assert (
        a0["timestamp_ms"] == 1000 and a0["participant_id"] == 16778240 and a0["payload"] == b"\x00\x01" * 320
    )
    assert a0["received_at_ms"] > 1_600_000_000_000 and not a0["end_of_stream"]
    assert v0["media"] == {"codec": "H264", "width": 640, "height": 360, "fps": 10}
    assert t0["text"] == "hello" and t0["language"] == 9 and e0["name"] == "active_speaker"


async def test_in_flight_window_blocks_until_acknowledged() -> None:
    sink, producer, _ = make_sink(max_in_flight=3)
    for ts in range(3):
        await sink.audio(SESSION, audio(ts))
    blocked = asyncio.create_task(sink.audio(SESSION, audio(99)))
    await asyncio.sleep(0.05)
    assert not blocked.done() and len(producer.sent) == 3
    producer.sent[0][3].set_result(None)
    await asyncio.wait_for(blocked, 1)
    assert len(producer.sent) == 4


async def test_end_of_stream_waits_for_acks_then_marks_every_raw_topic_once() -> None:
    sink, producer, codec = make_sink()
    await sink.audio(SESSION, audio(1000))
    await sink.transcript(SESSION, TranscriptData(1010, "x"))
    eos = asyncio.create_task(sink.end_of_stream(SESSION, 6))
    await asyncio.sleep(0.05)
    assert len(producer.sent) == 2  # nothing written while frames are unacknowledged
    producer.auto_ack = True
    producer.ack_all()
    await asyncio.wait_for(eos, 1)
    markers = [codec.decode(t, v) for t, v, _, _ in producer.sent[2:]]
    assert [m["end_of_stream"] for m in markers] == [True] * 4 and {m["stop_reason"] for m in markers} == {6}
    assert [t for t, *_ in producer.sent[2:]] == [
        "p.rtms.raw.audio",
        "p.rtms.raw.video",
        "p.rtms.raw.transcript",
        "p.rtms.raw.events",
    ]
    assert markers[0]["ingest_seq"] == 1 and markers[0]["timestamp_ms"] == 1000
    await sink.end_of_stream(SESSION, 6)  # idempotent
    assert len(producer.sent) == 6
