"""The registry path read by a consumer nobody here wrote: confluent-kafka's DeserializingConsumer
with its AvroDeserializer and SchemaRegistryClient, as a data team would read `rtms.transcript`.

We write utterances with our `Codec(registry_url)` (Confluent framing) and an end-of-stream marker
(null value + headers) with aiokafka; Confluent's client hands the utterances back field for field
(times as UTC datetimes: what `timestamp-millis` means to an Avro reader), the marker as a None
value with its headers, and nothing else. Its consumer is blocking, so it runs in a thread."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime
from typing import Any, cast

import pytest
from confluent_kafka import DeserializingConsumer, Message, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import StringDeserializer

from rtmsflow.kafka_client import bootstrap_servers, make_producer
from rtmsflow.settings import Settings
from schemas.catalog import current_schema
from schemas.codec import Codec
from schemas.markers import marker_headers, read_marker
from schemas.records import ChatMessage, StreamEnd, TranscriptUtterance
from schemas.topics import CHAT, TRANSCRIPT, partition_for

MEETING = "kQ3V8mE+Qx2yIYNwS0dY/w=="
STREAM = "0a1b2c3d4e5f60718293a4b5c6d7e8f9"
STARTED_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def _utterances() -> list[TranscriptUtterance]:
    texts = [
        ("Good morning, everyone.", 16778240, "Ada"),
        ("Bonjour !", 16779264, None),
        ("Let's start.", 0, ""),
    ]
    out: list[TranscriptUtterance] = []
    for seq, (text, participant, name) in enumerate(texts):
        start = STARTED_MS + 1_250 + 4_000 * seq
        utterance: TranscriptUtterance = {
            "meeting_uuid": MEETING,
            "rtms_stream_id": STREAM,
            "utterance_id": f"{STREAM}/{seq}",
            "seq": seq,
            "participant_id": participant,
            "participant_name": name,
            "start_ms": start,
            "end_ms": start + 2_345,
            "stream_started_ms": STARTED_MS,
            "text": text,
        }
        if seq == 1:  # the others leave defaulted fields out: the reader must see the defaults
            utterance.update(
                {"language_code": 1, "language": "fr", "final": False, "piece_count": 3, "channel_id": "ch-1"}
            )
        out.append(utterance)
    return out


END: StreamEnd = {
    "meeting_uuid": MEETING,
    "rtms_stream_id": STREAM,
    "topic": TRANSCRIPT.name,
    "ended": "STOPPED",
    "stop_reason": 6,
    "stream_started_ms": STARTED_MS,
    "last_timestamp_ms": STARTED_MS + 9_250,
    "ingest_epoch": 7,
    "counts": {"TRANSCRIPT": 3},
    "complete": True,
}


def _as_confluent_reads_it(record: dict[str, Any], schema: str = TRANSCRIPT.schema) -> dict[str, Any]:
    """What an Avro reader that honours logical types returns: every field (defaults filled in),
    timestamp-millis as an aware UTC datetime."""
    out: dict[str, Any] = {}
    for field in current_schema(schema).schema["fields"]:
        value = record.get(field["name"], field.get("default"))
        ftype = field["type"]
        if isinstance(ftype, dict) and ftype.get("logicalType") == "timestamp-millis":
            value = datetime.fromtimestamp(value / 1000, tz=UTC)
        out[field["name"]] = value
    return out


def _read_all(
    bootstrap: str, registry: str, topic: str, expected: int, timeout_s: float = 60.0
) -> list[Message]:
    """Read `topic` from the start with Confluent's deserializing consumer until `expected` records
    came and the consumer stands at the end of every partition (so nothing else is there)."""
    consumer = DeserializingConsumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"data-team-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "key.deserializer": StringDeserializer("utf_8"),
            "value.deserializer": AvroDeserializer(SchemaRegistryClient({"url": registry})),
        }
    )
    try:
        consumer.subscribe([topic])
        messages: list[Message] = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None:
                assert msg.error() is None, msg.error()
                messages.append(msg)
            if len(messages) >= expected and _at_end(consumer):
                return messages
        raise AssertionError(f"read {len(messages)} records of {expected} in {timeout_s:.0f} s")
    finally:
        consumer.close()


def _at_end(consumer: DeserializingConsumer) -> bool:
    """True when the consumer's position is the high watermark of each assigned partition."""
    assigned = consumer.assignment()
    if not assigned:
        return False
    for tp in consumer.position(assigned):
        _, high = consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), cached=False)
        if tp.offset < 0 and high > 0 or tp.offset >= 0 and tp.offset < high:
            return False
    return True


@pytest.mark.kafka
async def test_confluent_avro_consumer_reads_our_utterances_and_sees_the_marker_as_none(
    settings: Settings, kafka_topics: dict[str, str], schema_registry: str
) -> None:
    topic = kafka_topics[TRANSCRIPT.name]
    codec = Codec(schema_registry, settings.topic_prefix)
    await codec.prepare([topic])
    utterances = _utterances()
    headers = marker_headers(END)

    producer = make_producer(settings)
    await producer.start()
    try:
        for utterance in utterances:
            await producer.send_and_wait(topic, codec.encode(topic, utterance), key=MEETING.encode())
        await producer.send_and_wait(topic, None, key=MEETING.encode(), headers=headers)
    finally:
        await producer.stop()

    messages = await asyncio.to_thread(_read_all, bootstrap_servers(settings), schema_registry, topic, 4)

    assert len(messages) == 4
    partition = partition_for(MEETING, settings.partitions)
    assert {(m.partition(), m.key()) for m in messages} == {(partition, MEETING)}
    # The deserializer replaced the bytes with a dict (the stubs type value() as bytes).
    values: list[Any] = [m.value() for m in messages]
    data = [v for v in values if v is not None]
    assert data == [_as_confluent_reads_it(dict(u)) for u in utterances]
    assert isinstance(data[0]["start_ms"], datetime)  # not an int: the logical type is honoured
    assert data[0]["start_ms"] == datetime(2026, 1, 1, 0, 0, 1, 250_000, tzinfo=UTC)
    assert [m.headers() for m in messages[:3]] == [None, None, None]  # data records carry no headers
    marker = messages[3]  # the last one written, in the same partition: read last
    assert values[3] is None
    assert marker.headers() == headers
    assert read_marker(cast(list[tuple[str, bytes]], marker.headers())) == END


@pytest.mark.kafka
async def test_the_chat_topic_reads_with_the_same_confluent_consumer_code(
    settings: Settings, kafka_topics: dict[str, str], schema_registry: str
) -> None:
    """`rtms.chat` is read like `rtms.transcript`: the same `_read_all`, a public and a private
    message field for field (recipients as records), the marker as None with its headers."""
    topic = kafka_topics[CHAT.name]
    codec = Codec(schema_registry, settings.topic_prefix)
    await codec.prepare([topic])
    public: ChatMessage = {"meeting_uuid": MEETING, "rtms_stream_id": STREAM, "chat_id": f"{STREAM}/0", "seq": 0,
                           "sender_id": 16778240, "sender_name": "Ada", "timestamp_ms": STARTED_MS + 3_000,
                           "stream_started_ms": STARTED_MS, "text": "slides: https://example.com/d?x=1&y=2"}  # fmt: skip
    private: ChatMessage = {**public, "chat_id": f"{STREAM}/1", "seq": 1, "message_id": "m-2", "text": "psst 👋",
                            "private": True, "recipients": [{"user_id": 16779264, "user_name": None}]}  # fmt: skip
    headers = marker_headers({**END, "topic": CHAT.name, "counts": {"CHAT": 2}})
    producer = make_producer(settings)
    await producer.start()
    try:
        for message in (public, private):
            await producer.send_and_wait(topic, codec.encode(topic, message), key=MEETING.encode())
        await producer.send_and_wait(topic, None, key=MEETING.encode(), headers=headers)
    finally:
        await producer.stop()

    messages = await asyncio.to_thread(_read_all, bootstrap_servers(settings), schema_registry, topic, 3)
    values: list[Any] = [m.value() for m in messages]
    assert values[:2] == [_as_confluent_reads_it(dict(m), CHAT.schema) for m in (public, private)]
    assert values[0]["private"] is False and values[0]["recipients"] == [] and values[0]["message_id"] is None
    assert values[1]["recipients"] == [{"user_id": 16779264, "user_name": None}]
    assert values[0]["timestamp_ms"] == datetime(2026, 1, 1, 0, 0, 3, tzinfo=UTC)
    assert values[2] is None and messages[2].headers() == headers
