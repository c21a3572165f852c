"""Raw audio/video values joined from cached pieces are fastavro's bytes, and anything unusual is
left to the codec.

`ingest.record_bytes.RecordEncoder` encodes the subset of records it knows (exact types, in range,
only schema fields) and returns None for the rest, which `FrameProducer` then encodes with
`Codec.encode` (so the same EncodeError, the same dead letter). Properties over generated records,
well-formed and not: whenever it returns bytes they are `Codec.encode`'s; it returns bytes for every
well-formed record (so the property is not vacuous); and a producer's raw values re-encode to
themselves."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ingest.backend import AudioData, AudioParams, StreamSession, VideoData, VideoParams
from ingest.producer import FrameProducer
from ingest.record_bytes import SAMPLES, RecordEncoder, avro_long
from rtms_protocol import AudioChannel
from rtmsflow.settings import Settings
from schemas.codec import Codec, EncodeError

PROPERTY = settings(
    max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
CODEC = Codec()
TOPICS = ("rtms.raw.audio", "rtms.raw.video")
ENCODERS = {topic: RecordEncoder.for_topic(CODEC, topic, SAMPLES[topic]) for topic in TOPICS}

longs = st.integers(min_value=-(2**63), max_value=2**63 - 1) | st.sampled_from(
    [0, 1, -1, 63, 64, 8191, 8192, 16383, 16384, -8193, 2**62, 2**63 - 1, -(2**63), 1_765_000_000_123]
)
ints32 = st.integers(min_value=-(2**31), max_value=2**31 - 1)
names = st.none() | st.text(max_size=12)
AUDIO_MEDIA = st.fixed_dictionaries(
    {"codec": st.sampled_from(["L16", "OPUS", "ü"]), "sample_rate": ints32,
     "channels": ints32 | st.sampled_from(list(AudioChannel)),  # the producer passes the granted enum
     "send_rate_ms": ints32, "mixed": st.booleans()}
)  # fmt: skip
VIDEO_MEDIA = st.fixed_dictionaries(
    {"codec": st.sampled_from(["H264", "JPG"]), "width": ints32, "height": ints32, "fps": ints32,
     "mode": st.sampled_from(["UNKNOWN", "ACTIVE_SPEAKER", "INDIVIDUAL", "GALLERY"])}
)  # fmt: skip


def common() -> dict[str, st.SearchStrategy[Any]]:
    return {
        "meeting_uuid": st.text(max_size=24),
        "rtms_stream_id": st.text(max_size=12),
        "participant_id": longs,
        "timestamp_ms": longs,
        "stream_started_ms": longs,
        "ingest_epoch": longs,
        "ingest_seq": longs,
        "received_at_ms": longs,
        "payload": st.binary(max_size=300),
    }


well_formed: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "rtms.raw.audio": st.fixed_dictionaries(
        {**common(), "stream_kind": st.just("AUDIO"), "media": AUDIO_MEDIA},
        optional={"participant_name": names, "channel_id": names},
    ),
    "rtms.raw.video": st.fixed_dictionaries(
        {**common(), "stream_kind": st.sampled_from(["VIDEO", "DESKSHARE"]), "media": VIDEO_MEDIA},
        optional={
            "participant_name": names,
            "channel_id": names,
            "keyframe": st.booleans(),
            "has_parameter_sets": st.booleans(),
            "access_unit_parsed": st.booleans(),
        },
    ),  # fmt: skip
}
# what may replace one field's value in a malformed record
oddities = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=2**63, max_value=2**70),
    st.integers(min_value=-(2**70), max_value=-(2**63) - 1),
    st.integers(min_value=2**31, max_value=2**40),
    st.floats(allow_nan=False),
    st.text(max_size=4),
    st.just("\ud800"),  # a lone surrogate: not UTF-8 encodable
    st.binary(max_size=4),
    st.just(bytearray(b"ab")),
    st.just([1]),
    st.just({"codec": "L16"}),
    st.just("NOT_A_KIND"),
)


@st.composite
def records(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    """A raw record, well-formed, or with one field changed, removed, or an unknown one added."""
    topic = draw(st.sampled_from(TOPICS))
    record = dict(draw(well_formed[topic]))
    change = draw(st.integers(0, 5))
    if change == 1:
        record[draw(st.sampled_from(sorted(record)))] = draw(oddities)
    elif change == 2:
        del record[draw(st.sampled_from(sorted(record)))]
    elif change == 3:
        record[draw(st.sampled_from(["extra", "seq", "DATA"]))] = draw(oddities | longs)
    elif change == 4:
        key = draw(st.sampled_from(sorted(record["media"])))
        record["media"] = {**record["media"], key: draw(oddities)}
    return topic, record


def codec_bytes(topic: str, record: dict[str, Any]) -> bytes | EncodeError:
    try:
        return CODEC.encode(topic, record)
    except EncodeError as exc:
        return exc


def test_an_encoder_is_built_for_both_raw_frame_topics() -> None:
    assert all(isinstance(ENCODERS[topic], RecordEncoder) for topic in TOPICS)


@PROPERTY
@given(case=records())
@example(case=("rtms.raw.audio", {**SAMPLES["rtms.raw.audio"][0], "ingest_seq": 2**63}))
@example(case=("rtms.raw.audio", {**SAMPLES["rtms.raw.audio"][0], "ingest_seq": True}))
@example(case=("rtms.raw.audio", {**SAMPLES["rtms.raw.audio"][0], "participant_name": "\ud800"}))
@example(case=("rtms.raw.video", {**SAMPLES["rtms.raw.video"][0], "keyframe": 1}))
@example(case=("rtms.raw.video", {**SAMPLES["rtms.raw.video"][0], "extra": 1}))
def test_joined_bytes_are_the_codecs_and_the_rest_is_left_to_it(case: tuple[str, dict[str, Any]]) -> None:
    topic, record = case
    encoder = ENCODERS[topic]
    assert encoder is not None
    joined = encoder.encode(record)
    expected = codec_bytes(topic, record)
    if joined is not None:
        assert joined == expected, f"{record!r}"


@PROPERTY
@given(topic=st.sampled_from(TOPICS), data=st.data())
def test_every_well_formed_record_is_joined(topic: str, data: st.DataObject) -> None:
    record = data.draw(well_formed[topic])
    encoder = ENCODERS[topic]
    assert encoder is not None
    assert encoder.encode(record) == CODEC.encode(topic, record)


@pytest.mark.parametrize(
    "change",
    [
        {"ingest_seq": 2**63},  # out of a long's range: the codec's EncodeError
        {"participant_id": True},
        {"participant_name": "\ud800"},
        {"extra": 1},
        {"stream_kind": "NOPE"},
        {"media": {**SAMPLES["rtms.raw.audio"][0]["media"], "sample_rate": 2**31}},
        {"payload": bytearray(b"x")},
    ],
)
def test_unusual_records_are_left_to_the_codec(change: dict[str, Any]) -> None:
    encoder = ENCODERS["rtms.raw.audio"]
    assert encoder is not None
    sample = SAMPLES["rtms.raw.audio"][0]
    assert encoder.encode(sample) is not None  # positive control
    assert encoder.encode({**sample, **change}) is None


def test_a_long_is_avros_zigzag_varint() -> None:
    def reference(n: int) -> bytes:
        z = (n << 1) ^ (n >> 63)
        out = bytearray()
        while z >= 0x80:
            out.append((z & 0x7F) | 0x80)
            z >>= 7
        return bytes(out + bytes([z]))

    edges = [0, -1, 1, 8191, 8192, -8192, -8193, 16383, 16384, 2**20, 2**62, 2**63 - 1, -(2**63)]
    for n in edges + [1_765_000_000_000 + i * 997 for i in range(2000)]:
        assert avro_long(n) == reference(n), n


SETTINGS = Settings(kafka_bootstrap="unused:9092", topic_prefix="p.")


class AckingSends:
    """A producer without the batch API: each `send()` acknowledged at once, its values kept (a
    marker's, None, left out)."""

    def __init__(self) -> None:
        self.values: list[tuple[str, bytes]] = []

    async def send(self, topic: str, value: bytes | None, key: Any = None, headers: Any = None) -> Any:
        if value is not None:
            self.values.append((topic, value))
        acked: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        acked.set_result(None)
        return acked


async def test_the_producers_raw_values_are_the_codecs_bytes() -> None:
    producer = AckingSends()
    codec = Codec(SETTINGS.schema_registry_url, SETTINGS.topic_prefix)
    frames = FrameProducer(SETTINGS, producer=producer, codec=codec)  # type: ignore[arg-type]
    sent = producer.values
    session = StreamSession("meet==", "s-1", "wss://x", started_ms=900, media_origin_ms=900)
    granted = AudioParams(channels=AudioChannel.MONO)  # as `MediaValues.grant` builds it
    encoded: list[str] = []
    codec_encode = codec.encode

    def counted(topic: str, record: dict[str, Any]) -> bytes:
        encoded.append(topic)
        return codec_encode(topic, record)

    for ts in (1000, 1040):
        await frames.audio(session, AudioData(ts, b"\x01\x02" * 320, granted, 7, "Zoë", "ch"))
        await frames.video(session, VideoData("VIDEO", ts, b"\x00\x00\x01\x65\x88", VideoParams(), 7, None))
        codec.encode = counted  # type: ignore[method-assign]  # the encoders are built: count from here
    assert [t for t, _ in sent] == ["p.rtms.raw.audio", "p.rtms.raw.video"] * 2
    assert encoded == []  # the second pair was joined, not encoded by the codec
    for topic, value in sent:
        assert codec.encode(topic, codec.decode(topic, value)) == value


def test_a_cached_media_record_is_not_reused_for_an_equal_value_of_another_type() -> None:
    encoder = ENCODERS["rtms.raw.audio"]
    assert encoder is not None
    sample = SAMPLES["rtms.raw.audio"][0]
    assert encoder.encode(sample) is not None  # caches its media record
    for odd in ({"sample_rate": 16000.0}, {"mixed": 1}):
        assert encoder.encode({**sample, "media": {**sample["media"], **odd}}) is None


def full(topic: str, record: dict[str, Any]) -> dict[str, Any]:
    """The record with every schema field (the producer's records have them all)."""
    defaults = {"participant_name": None, "channel_id": None}
    if topic == "rtms.raw.video":
        defaults |= {"keyframe": False, "has_parameter_sets": False, "access_unit_parsed": True}
    return {**defaults, **record}


@PROPERTY
@given(case=records(), again=st.tuples(longs, longs, longs, st.binary(max_size=300)))
@example(
    case=("rtms.raw.audio", full("rtms.raw.audio", SAMPLES["rtms.raw.audio"][0])),
    again=(2**63 - 1, 0, -1, b""),
)
def test_a_prepared_record_joins_the_codecs_bytes_for_other_longs_and_payloads(
    case: tuple[str, dict[str, Any]], again: tuple[int, int, int, bytes]
) -> None:
    topic, record = case
    encoder = ENCODERS[topic]
    assert encoder is not None
    prepared = encoder.prepare(record)
    if prepared is None:
        return
    assert encoder.encode(record) is not None  # only what the encoder joins is prepared
    ts, seq, received, payload = again
    other = {**record, "timestamp_ms": ts, "ingest_seq": seq, "received_at_ms": received, "payload": payload}
    assert prepared.encode(ts, seq, received, payload) == CODEC.encode(topic, other), f"{other!r}"


@PROPERTY
@given(topic=st.sampled_from(TOPICS), data=st.data())
def test_every_well_formed_full_record_is_prepared(topic: str, data: st.DataObject) -> None:
    record = full(topic, data.draw(well_formed[topic]))
    encoder = ENCODERS[topic]
    assert encoder is not None
    prepared = encoder.prepare(record)
    assert prepared is not None
    args = (record["timestamp_ms"], record["ingest_seq"], record["received_at_ms"], record["payload"])
    assert prepared.encode(*args) == CODEC.encode(topic, record)


def test_a_prepared_record_leaves_a_timestamp_that_is_not_a_long_to_the_codec() -> None:
    encoder = ENCODERS["rtms.raw.audio"]
    assert encoder is not None
    prepared = encoder.prepare(SAMPLES["rtms.raw.audio"][0])
    assert prepared is not None
    assert prepared.encode(5, 1, 2, b"x") is not None  # positive control
    for odd in (2**63, -(2**63) - 1, True, 5.0):
        assert prepared.encode(odd, 1, 2, b"x") is None  # type: ignore[arg-type]
    assert encoder.prepare({**SAMPLES["rtms.raw.audio"][0], "ingest_seq": 2**63}) is None
    incomplete = dict(SAMPLES["rtms.raw.audio"][0])
    del incomplete["channel_id"]
    assert encoder.encode(incomplete) is not None and encoder.prepare(incomplete) is None


async def test_a_streams_prepared_records_follow_what_changes_along_it() -> None:
    """Participants, names, granted params, keyframes and parameter sets change along a stream: each
    value the producer sends decodes to the frame it was made from (the prepared records are told
    apart by everything that varies)."""
    producer = AckingSends()
    codec = Codec(SETTINGS.schema_registry_url, SETTINGS.topic_prefix)
    frames = FrameProducer(SETTINGS, producer=producer, codec=codec)  # type: ignore[arg-type]
    sent = producer.values
    session = StreamSession("meet==", "s-1", "wss://x", started_ms=900, media_origin_ms=900)
    rates = [
        AudioParams(channels=AudioChannel.MONO),
        AudioParams(sample_rate=48000, channels=AudioChannel.MONO),
    ]
    idr, p_frame = b"\x00\x00\x01\x65\x88\x84", b"\x00\x00\x01\x41\x9a\x02"
    sps_pps = b"\x00\x00\x00\x01\x67\x42\xc0\x1f\xda\x01\x40\x16\xe8\x06\xd0\xa1\x35\x00\x00\x00\x01\x68\xce\x06\xe2"
    # one object per grant, as `MediaValues` makes them (a new one is a change)
    granted_video = [VideoParams(), VideoParams(fps=15)]
    expected: list[dict[str, Any]] = []
    for i in range(40):
        ts = 1000 + 20 * i
        who, name = [(7, "Ann"), (8, "Bob"), (7, "Ann B."), (9, None)][i % 4]
        params = rates[i // 20]
        payload = bytes([i]) * (i % 5)
        await frames.audio(session, AudioData(ts, payload, params, who, name, "ch" if i % 3 else None))
        expected.append({"stream_kind": "AUDIO", "timestamp_ms": ts, "participant_id": who,
                         "participant_name": name, "channel_id": "ch" if i % 3 else None, "payload": payload,
                         "media": {"sample_rate": params.sample_rate}})  # fmt: skip
        kind = "DESKSHARE" if i % 7 == 0 else "VIDEO"
        shape = (i // 4) % 4  # each participant sees every shape
        video = [idr, p_frame, sps_pps + idr, b"\x01"][shape]
        await frames.video(session, VideoData(kind, ts, video, granted_video[i // 30], who, name))
        expected.append({"stream_kind": kind, "timestamp_ms": ts, "participant_id": who, "participant_name": name,
                         "payload": video, "keyframe": shape in (0, 2), "has_parameter_sets": shape == 2,
                         "access_unit_parsed": shape != 3, "media": {"fps": granted_video[i // 30].fps}})  # fmt: skip
    assert len(sent) == len(expected)
    seqs: dict[str, int] = {}
    for (topic, value), want in zip(sent, expected, strict=True):
        got = codec.decode(topic, value)
        media = want.pop("media", {})
        assert {k: got[k] for k in want} == want
        assert {k: got["media"][k] for k in media} == media
        assert got["ingest_seq"] == seqs.get(want["stream_kind"], 0)
        seqs[want["stream_kind"]] = got["ingest_seq"] + 1
        assert codec.encode(topic, got) == value
