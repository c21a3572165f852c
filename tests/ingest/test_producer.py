"""FrameProducer without a broker: frame identity stamping, the bounded in-flight window, and
end-of-stream only after everything before it is acknowledged."""

from __future__ import annotations

import asyncio
from typing import Any

from ingest import metrics
from ingest.backend import (
    AudioData,
    AudioParams,
    ChatData,
    EventData,
    Participant,
    StreamSession,
    TranscriptData,
    VideoData,
    VideoParams,
)
from ingest.producer import FrameProducer
from rtmsflow.settings import Settings
from schemas.codec import Codec
from schemas.markers import read_marker

# t = 0 known (as a takeover knows it from rtms.sessions): records are written as they come;
# fixing t = 0 from the media clock has tests of its own below
SESSION = StreamSession(
    "meet==", "stream-1", "wss://x.zoom.us", started_ms=900, fresh=True, media_origin_ms=900
)


class FakeProducer:
    """Records sends; each returns a future the test resolves (the broker's ack)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes | None, asyncio.Future[Any]]] = []
        self.headers: list[Any] = []
        self.auto_ack = False

    async def send(
        self, topic: str, value: bytes, key: bytes | None = None, headers: Any = None
    ) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.auto_ack:
            fut.set_result(None)
        self.sent.append((topic, value, key, fut))
        self.headers.append(headers)
        return fut

    async def flush(self) -> None:
        pass

    def ack_all(self) -> None:
        for *_, fut in self.sent:
            if not fut.done():
                fut.set_result(None)


def make_producer(chat_private: str = "drop", **kw: Any) -> tuple[FrameProducer, FakeProducer, Codec]:
    settings = Settings(kafka_bootstrap="unused:9092", topic_prefix="p.", chat_private=chat_private)
    producer = FakeProducer()
    codec = Codec(settings.schema_registry_url, settings.topic_prefix)
    return FrameProducer(settings, producer=producer, codec=codec, **kw), producer, codec  # type: ignore[arg-type]


def audio(ts: int) -> AudioData:
    return AudioData(ts, b"\x00\x01" * 320, AudioParams(), 16778240, "Ann")


async def test_records_are_stamped_and_keyed_by_meeting() -> None:
    frames, producer, codec = make_producer()
    await frames.audio(SESSION, audio(1000))
    await frames.audio(SESSION, audio(1020))
    await frames.video(
        SESSION,
        VideoData("VIDEO", 1005, b"\x00\x00\x01\x65\x88", VideoParams(width=640, height=360, fps=10)),
    )
    await frames.transcript(
        SESSION,
        TranscriptData(1010, "hello", 16778240, "Ann", language=9, start_time_ms=900, end_time_ms=1010),
    )
    await frames.event(SESSION, EventData(6, "active_speaker", 999, '{"msg_type":6}', 2, 16778240, "Ann"))
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
    assert a0["received_at_ms"] > 1_600_000_000_000
    assert {r["stream_started_ms"] for r in (a0, a1, v0, t0, e0)} == {900}
    epochs = {r["ingest_epoch"] for r in (a0, a1, v0, t0, e0)}
    assert len(epochs) == 1 and epochs.pop() > 0
    assert v0["media"] == {"codec": "H264", "width": 640, "height": 360, "fps": 10, "mode": "UNKNOWN"}
    assert v0["keyframe"] is True and v0["has_parameter_sets"] is False
    assert t0["start_time_ms"] == 900 and e0["zoom_timestamp"] is True
    assert t0["text"] == "hello" and t0["language"] == 9 and e0["name"] == "active_speaker"


async def test_in_flight_window_blocks_until_acknowledged() -> None:
    frames, producer, _ = make_producer(max_in_flight=3)
    for ts in range(3):
        await frames.audio(SESSION, audio(ts))
    blocked = asyncio.create_task(frames.audio(SESSION, audio(99)))
    await asyncio.sleep(0.05)
    assert not blocked.done() and len(producer.sent) == 3
    producer.sent[0][3].set_result(None)
    await asyncio.wait_for(blocked, 1)
    assert len(producer.sent) == 4


async def test_end_of_stream_waits_for_acks_then_marks_every_raw_topic_once() -> None:
    frames, producer, codec = make_producer()
    await frames.audio(SESSION, audio(1000))
    await frames.transcript(SESSION, TranscriptData(1010, "x"))
    await frames.chat(SESSION, ChatData(1020, "hi all", 16778240, "Ann"))
    eos = asyncio.create_task(frames.end_of_stream(SESSION, 6))
    await asyncio.sleep(0.05)
    assert len(producer.sent) == 3  # nothing written while frames are unacknowledged
    producer.auto_ack = True
    producer.ack_all()
    await asyncio.wait_for(eos, 1)
    assert [v for _, v, _, _ in producer.sent[3:]] == [None] * 5  # no value: no consumer mistakes it for data
    markers = [read_marker(h) for h in producer.headers[3:]]
    assert all(m is not None for m in markers)
    assert {m["stop_reason"] for m in markers if m} == {6} and {m["ended"] for m in markers if m} == {
        "STOPPED"
    }
    assert [t for t, *_ in producer.sent[3:]] == [
        "p.rtms.raw.audio",
        "p.rtms.raw.video",
        "p.rtms.raw.transcript",
        "p.rtms.raw.events",
        "p.rtms.raw.chat",
    ]
    audio_end, video_end, text_end, events_end, chat_end = (m for m in markers if m)
    assert chat_end["counts"] == {"CHAT": 1} and chat_end["last_timestamp_ms"] == 1020
    assert audio_end["counts"] == {"AUDIO": 1} and audio_end["last_timestamp_ms"] == 1000
    assert video_end["counts"] == {} and video_end["last_timestamp_ms"] is None
    assert text_end["counts"] == {"TRANSCRIPT": 1} and events_end["counts"] == {}
    assert audio_end["complete"] is True and audio_end["stream_started_ms"] == 900
    assert [m["topic"] for m in markers if m] == [
        "rtms.raw.audio",
        "rtms.raw.video",
        "rtms.raw.transcript",
        "rtms.raw.events",
        "rtms.raw.chat",
    ]
    await frames.end_of_stream(SESSION, 6)  # idempotent
    assert len(producer.sent) == 8


async def test_a_frame_h264_cannot_parse_reaches_the_raw_topic_with_its_derived_fields_unknown() -> None:
    """The raw topics are the system of record: every frame Zoom sent is there, even one whose SPS
    the parser cannot read (it is counted; a later stage decides what it can use)."""
    frames, producer, codec = make_producer()
    producer.auto_ack = True
    params = VideoParams(width=640, height=360, fps=10)
    unparsed_before = metrics.UNPARSED_VIDEO._value.get()
    await frames.video(SESSION, VideoData("VIDEO", 1000, b"garbage without a start code", params))
    await frames.video(SESSION, VideoData("VIDEO", 1100, b"\x00\x00\x01\x65\x88", params))  # positive control
    topics = [t for t, *_ in producer.sent]
    assert topics == ["p.rtms.raw.video", "p.rtms.raw.video"]
    bad, good = (codec.decode(t, v) for t, v, _, _ in producer.sent)
    assert bad["payload"] == b"garbage without a start code" and bad["ingest_seq"] == 0
    assert (bad["access_unit_parsed"], bad["keyframe"], bad["has_parameter_sets"]) == (False, False, False)
    assert (good["access_unit_parsed"], good["keyframe"], good["ingest_seq"]) == (True, True, 1)
    assert metrics.UNPARSED_VIDEO._value.get() == unparsed_before + 1


async def test_records_waiting_for_room_go_to_kafka_in_ingest_seq_order() -> None:
    """Events of one stream come from its sockets and from the worker: a record that must wait
    (here for room) is not passed by a later one that need not (a small one that fits)."""
    frames, producer, codec = make_producer(max_in_flight=10, max_in_flight_bytes=3_000)

    def event(body_bytes: int) -> EventData:
        return EventData(6, "active_speaker", 999, "x" * body_bytes, 2, 16778240, "Ann")

    await frames.event(SESSION, event(2_000))  # in flight: ~2 KB of the 3 KB
    # The tasks run in the order they were made, before the ack's callback (scheduled after
    # them) gives the room back: the large one (seq 1) must wait, the small one (seq 2) fits.
    large = asyncio.create_task(frames.event(SESSION, event(1_500)))
    small = asyncio.create_task(frames.event(SESSION, event(10)))
    producer.ack_all()
    await asyncio.wait_for(asyncio.gather(large, small), 10)
    seqs = [codec.decode(t, v)["ingest_seq"] for t, v, _, _ in producer.sent]
    assert seqs == [0, 1, 2]  # the small one went behind the large one, not before it


PRIVATE = ChatData(2000, "psst", 16778240, "Ann", "m-2", (Participant(16779264, "Bob"),))


async def test_chat_goes_to_its_raw_topic_typed_and_private_messages_as_the_setting_says() -> None:
    for policy, kept in (
        ("drop", None),
        ("keep", [{"user_id": 16779264, "user_name": "Bob"}]),
        ("unaddressed", []),
    ):
        frames, producer, codec = make_producer(chat_private=policy)
        producer.auto_ack = True
        await frames.chat(SESSION, ChatData(1990, "hello all", 16778240, "Ann", "m-1"))
        await frames.chat(SESSION, PRIVATE)
        values = [codec.decode(t, v) for t, v, _, _ in producer.sent]
        assert [t for t, *_ in producer.sent] == ["p.rtms.raw.chat"] * (1 if kept is None else 2), policy
        public = values[0]
        assert (public["stream_kind"], public["participant_id"], public["participant_name"]) == (
            "CHAT",
            16778240,
            "Ann",
        )
        assert (public["text"], public["message_id"], public["private"], public["recipients"]) == (
            "hello all",
            "m-1",
            False,
            [],
        )
        if kept is not None:
            assert (
                values[1]["private"] is True
                and values[1]["recipients"] == kept
                and values[1]["ingest_seq"] == 1
            )


async def test_hostile_chat_is_cut_or_dead_lettered_with_its_meeting() -> None:
    frames, producer, codec = make_producer(chat_private="keep")
    producer.auto_ack = True
    await frames.chat(SESSION, ChatData(2000, "é" * 20_000, 1, "Ann"))  # 40,000 bytes: cut at a character
    await frames.chat(SESSION, ChatData(2001, "bad \ud800 text", 1, "Ann"))
    await frames.chat(
        SESSION, ChatData(2002, "x", 1, "Ann", None, tuple(Participant(i) for i in range(1001)))
    )
    (cut_topic, cut, *_), *dead = producer.sent
    assert cut_topic == "p.rtms.raw.chat"
    record = codec.decode(cut_topic, cut)
    assert record["text_truncated"] is True and record["text"] == "é" * 8192
    assert [t for t, *_ in dead] == ["p.rtms.deadletter"] * 2
    letters = [codec.decode(t, v) for t, v, _, _ in dead]
    assert [d["error"] for d in letters] == ["InvalidText", "TooManyRecipients"]
    assert {d["meeting_uuid"] for d in letters} == {"meet=="}
