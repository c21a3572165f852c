"""`rtmsflow tail`: a meeting's transcript (and events) from the ordered topics, as a data team sees it."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

import pytest

from rtmsflow.kafka_client import make_producer
from rtmsflow.settings import Settings
from schemas.codec import Codec
from schemas.markers import marker_headers
from schemas.topics import partition_for

pytestmark = pytest.mark.kafka

MEETING = "4Rk/ZbJyQ0+Xh2fNpm3xUA=="
OTHER = "zz/other+meeting=="
STREAM = "03db704592624398931a588dd78200cb"
T0 = 1_747_316_541_000  # 2025-05-15T13:42:21.000Z


def utterance(meeting: str, seq: int, name: str | None, text: str, start: int) -> dict[str, Any]:
    return {
        "meeting_uuid": meeting,
        "rtms_stream_id": STREAM,
        "utterance_id": f"{STREAM}/{seq}",
        "seq": seq,
        "participant_id": 16778240 + seq,
        "participant_name": name,
        "start_ms": start,
        "end_ms": start + 1500,
        "stream_started_ms": T0 - 5000,
        "text": text,
        "language": "en",
    }


async def test_tail_prints_the_meetings_transcript_and_events_and_stops_at_the_end(
    settings: Settings, settings_env: dict[str, str], kafka_topics: dict[str, str]
) -> None:
    codec = Codec(settings.schema_registry_url, settings.topic_prefix)
    transcript, events, chat = (
        kafka_topics["rtms.transcript"],
        kafka_topics["rtms.events"],
        kafka_topics["rtms.chat"],
    )
    part = partition_for(MEETING, settings.partitions)
    producer = make_producer(settings)
    await producer.start()
    try:

        async def send(topic: str, meeting: str, value: dict[str, Any] | None, headers: Any = None) -> None:
            data = None if value is None else codec.encode(topic, value)
            await producer.send_and_wait(topic, data, key=meeting.encode(), partition=part, headers=headers)

        await send(transcript, MEETING, utterance(MEETING, 0, "John Doe", "Hello everyone", T0))
        # another meeting in the same partition: not ours (the positive control is the line above)
        await send(transcript, OTHER, utterance(OTHER, 0, "Eve", "not this meeting", T0 + 500))
        await send(
            events,
            MEETING,
            {
                "meeting_uuid": MEETING,
                "rtms_stream_id": STREAM,
                "stream_kind": "EVENT",
                "timestamp_ms": T0 + 1000,
                "stream_started_ms": T0 - 5000,
                "ingest_epoch": 1,
                "ingest_seq": 0,
                "received_at_ms": T0 + 1001,
                "seq": 0,
                "name": "participant_join",
                "participants": [{"user_id": 7, "user_name": "Ada"}],
            },
        )
        await send(transcript, MEETING, utterance(MEETING, 1, None, "Two\nlines", T0 + 2000))
        message = {"meeting_uuid": MEETING, "rtms_stream_id": STREAM, "chat_id": f"{STREAM}/0", "seq": 0,
                   "sender_id": 7, "sender_name": "Ada", "timestamp_ms": T0 + 2500, "stream_started_ms": T0 - 5000,
                   "text": "link in chat", "private": True, "recipients": [{"user_id": 8, "user_name": "Bo"}]}  # fmt: skip
        await send(chat, MEETING, message)
        end = {
            "meeting_uuid": MEETING,
            "rtms_stream_id": STREAM,
            "topic": "rtms.transcript",
            "ended": "STOPPED",
            "stream_started_ms": T0 - 5000,
            "ingest_epoch": 1,
            "counts": {"TRANSCRIPT": 2},
            "complete": True,
        }
        await send(transcript, MEETING, None, marker_headers(end))
        # the processors forward the stream's marker on every ordered topic: events too
        await send(
            events, MEETING, None, marker_headers({**end, "topic": "rtms.events", "counts": {"EVENT": 1}})
        )
        await send(chat, MEETING, None, marker_headers({**end, "topic": "rtms.chat", "counts": {"CHAT": 1}}))
    finally:
        await producer.stop()

    args = [sys.executable, "-m", "rtmsflow.cli", "tail", "--meeting", MEETING, "--events", "--until-end"]
    result = await asyncio.to_thread(
        subprocess.run, args, env=settings_env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert "[2025-05-15T13:42:21.000Z] John Doe: Hello everyone" in lines
    assert "[2025-05-15T13:42:23.000Z] Participant 16778241: Two lines" in lines
    assert "[2025-05-15T13:42:22.000Z] * participant_join: Ada" in lines
    assert "[2025-05-15T13:42:23.500Z] Ada (chat, private to Bo): link in chat" in lines
    # the end line comes once, after the last utterance and the last event, whichever topic was read first
    assert lines[-1] == f"-- end of stream {STREAM} (stopped)"
    assert sum(line.startswith("-- end of stream") for line in lines) == 1
    assert not [line for line in lines if "not this meeting" in line]
    assert len(lines) == 5


def test_a_stream_ends_for_tail_once_its_marker_came_on_every_topic_tailed() -> None:
    """Pure: with --events the transcript's marker alone does not end the stream (events may
    still come from the other topic); the events marker then does, and only once."""
    import io

    from sinks.tail import Tail

    out = io.StringIO()
    tail = Tail(MEETING, ["p.rtms.transcript", "p.rtms.events"], out)
    end = {"meeting_uuid": MEETING, "rtms_stream_id": STREAM, "topic": "rtms.transcript", "ended": "STOPPED",
           "stream_started_ms": T0 - 5000, "ingest_epoch": 1, "counts": {}, "complete": True}  # fmt: skip
    tail.record("p.rtms.transcript", utterance(MEETING, 0, "John Doe", "Hello", T0), [])
    tail.record("p.rtms.transcript", None, marker_headers(end))
    assert not tail.all_ended and "end of stream" not in out.getvalue()
    tail.record("p.rtms.events", None, marker_headers({**end, "topic": "rtms.events"}))
    tail.record("p.rtms.events", None, marker_headers({**end, "topic": "rtms.events"}))  # repeated: a no-op
    assert tail.all_ended
    assert out.getvalue().count(f"-- end of stream {STREAM} (stopped)") == 1
    # control: tailing the transcript alone, its marker ends the stream
    alone = Tail(MEETING, ["p.rtms.transcript"], io.StringIO())
    alone.record("p.rtms.transcript", utterance(MEETING, 0, "John Doe", "Hello", T0), [])
    alone.record("p.rtms.transcript", None, marker_headers(end))
    assert alone.all_ended
