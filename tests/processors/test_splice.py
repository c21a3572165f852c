"""FrameSplicer: an ordered frame spliced from its raw bytes equals the codec's encoding (pure)."""

from __future__ import annotations

import io
from typing import Any

from fastavro import schemaless_writer
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.frame_splice import SAMPLES, FrameSplicer
from schemas.codec import SINGLE_OBJECT_MAGIC, Codec

CODEC = Codec()
SPLICER = FrameSplicer.for_codec(CODEC)
LONGS = st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1)
NAMES = st.none() | st.text(max_size=40)


def test_audio_and_video_are_spliced_with_the_current_schemas() -> None:
    assert SPLICER.topics == {"rtms.audio", "rtms.video"}


@st.composite
def raw_frames(draw: st.DrawFn) -> tuple[str, str, dict[str, Any]]:
    raw, ordered = draw(st.sampled_from([("rtms.raw.audio", "rtms.audio"), ("rtms.raw.video", "rtms.video")]))
    base = draw(st.sampled_from(SAMPLES[raw]))
    record = {
        **base,
        "meeting_uuid": draw(st.text(max_size=60)),
        "rtms_stream_id": draw(st.text(max_size=40)),
        "participant_id": draw(LONGS),
        "participant_name": draw(NAMES),
        "channel_id": draw(NAMES),
        "timestamp_ms": draw(LONGS),
        "stream_started_ms": draw(LONGS),
        "ingest_epoch": draw(LONGS),
        "ingest_seq": draw(LONGS),
        "received_at_ms": draw(LONGS),
        "payload": draw(st.binary(max_size=3000)),
    }
    return raw, ordered, record


@settings(max_examples=400, deadline=None)
@given(raw_frames(), LONGS, LONGS)
def test_a_spliced_frame_equals_the_codecs_encoding(
    frame: tuple[str, str, dict[str, Any]], seq: int, offset_ms: int
) -> None:
    raw_topic, ordered_topic, record = frame
    raw_value = CODEC.encode(raw_topic, record)
    ordered = {**CODEC.decode(raw_topic, raw_value), "seq": seq, "offset_ms": offset_ms, "gap": None}
    assert SPLICER.splice(ordered_topic, raw_value, ordered) == CODEC.encode(ordered_topic, ordered)


def test_a_value_written_with_another_schema_than_the_current_raw_one_is_left_to_the_codec() -> None:
    # (an older version's fingerprint once one is released: schemas/history/raw_audio_frame/v1 is
    # the current schema today) the header is all the splicer goes by
    current = CODEC.schema_for("rtms.raw.audio").fingerprint
    record = SAMPLES["rtms.raw.audio"][0]
    value = CODEC.encode("rtms.raw.audio", record)
    frame = {**record, "seq": 1, "offset_ms": 0, "gap": None}
    assert SPLICER.splice("rtms.audio", value, frame) is not None
    other = bytes(b ^ 0xFF for b in current)
    assert SPLICER.splice("rtms.audio", value.replace(current, other, 1), frame) is None


def test_a_raw_value_whose_payload_is_not_where_the_fields_say_is_left_to_the_codec() -> None:
    # participant_id 1 written as a two-byte varint (valid to a reader, not what an encoder writes):
    # the payload sits one byte later than the decoded fields' sizes say
    record = dict(SAMPLES["rtms.raw.audio"][0], participant_id=1)
    schema = CODEC.schema_for("rtms.raw.audio")
    body = io.BytesIO()
    schemaless_writer(body, schema.parsed, record)
    canonical = body.getvalue()
    at = _string_end(canonical, 2) + 1  # after meeting_uuid, rtms_stream_id and the stream_kind index
    assert canonical[at] == 0x02  # zigzag(1)
    odd = SINGLE_OBJECT_MAGIC + schema.fingerprint + canonical[:at] + b"\x82\x00" + canonical[at + 1 :]
    decoded = CODEC.decode("rtms.raw.audio", odd)
    assert decoded["participant_id"] == 1
    frame = {**decoded, "seq": 7, "offset_ms": 140, "gap": None}
    assert SPLICER.splice("rtms.audio", odd, frame) is None


def _string_end(body: bytes, count: int) -> int:
    """The position after `count` Avro strings at the start of `body` (short ones: 1-byte lengths)."""
    at = 0
    for _ in range(count):
        n = body[at] >> 1
        at += 1 + n
    return at
