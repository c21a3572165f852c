"""Property tests: the processors' and the sinks' pure cores fed generated records with extreme
values (timestamps, sizes, counts, strings) never raise out of the core: what they cannot handle
becomes a dead letter naming the meeting, and the core takes the next record."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from processors.lanes import LaneConfig, PartitionCore
from rtmsflow.settings import Settings
from schemas.codec import Codec, CodecError
from schemas.markers import marker_headers
from sinks.kinds import MEDIA_SINK, TRANSCRIPT_SINK
from tests.schemas.samples import T0

CODEC = Codec()
I64 = (-(2**63), 2**63 - 1)
EDGES = [0, 1, -1, 20, T0, T0 + 1, I64[0], I64[1], 2**31, -(2**31), 2**53, 253_402_300_800_000,
         -62_135_596_800_001, 1_760_000_000_000_000, 1_760_000_000]  # fmt: skip

longs = st.one_of(st.sampled_from(EDGES), st.integers(*I64))
ints = st.one_of(
    st.sampled_from([0, 1, -1, 2**31 - 1, -(2**31), 16000, 20]), st.integers(-(2**31), 2**31 - 1)
)
# near T0 most of the time (so records meet in lanes), anything else sometimes
times = st.one_of(st.integers(T0 - 5_000, T0 + 60_000), longs)
texts = st.one_of(st.text(max_size=40), st.sampled_from(["", "x" * 100_000, "\x00", "é" * 5000, "🚂" * 300]))
ids = st.sampled_from(["m==", "M/+==", "x" * 300, "é", "con", "a/../b"])
streams = st.sampled_from(["s1", "s2", "S" * 250])
payloads = st.one_of(st.binary(max_size=64), st.sampled_from([b"", bytes(641), bytes(1 << 20)]))
names = st.one_of(st.none(), texts)


def _stamp(draw: Any, kind: str) -> dict[str, Any]:
    return {
        "meeting_uuid": draw(ids),
        "rtms_stream_id": draw(streams),
        "stream_kind": kind,
        "participant_id": draw(longs),
        "participant_name": draw(names),
        "timestamp_ms": draw(times),
        "stream_started_ms": draw(st.one_of(st.just(T0), longs)),
        "ingest_epoch": draw(st.one_of(st.just(7), longs)),
        "ingest_seq": draw(st.one_of(st.integers(0, 50), longs)),
        "received_at_ms": draw(times),
    }


@st.composite
def raw_records(draw: Any) -> tuple[str, dict[str, Any] | None, bytes | None, list[tuple[str, bytes]]]:
    """(raw topic, value dict or None, raw bytes instead, headers)."""
    which = draw(st.sampled_from(["audio", "video", "transcript", "event", "marker", "garbage"]))
    if which == "garbage":
        return "rtms.raw.audio", None, draw(st.binary(max_size=40)), []
    if which == "marker":
        topic = draw(
            st.sampled_from(["rtms.raw.audio", "rtms.raw.video", "rtms.raw.transcript", "rtms.raw.events"])
        )
        end = {"meeting_uuid": draw(ids), "rtms_stream_id": draw(streams), "topic": topic,
               "ended": draw(st.sampled_from(["STOPPED", "UNEXPECTED"])), "stop_reason": draw(st.none() | ints),
               "stream_started_ms": draw(st.one_of(st.just(T0), longs)), "last_timestamp_ms": draw(st.none() | times),
               "ingest_epoch": draw(longs), "counts": {"AUDIO": draw(longs)}, "complete": draw(st.booleans())}  # fmt: skip
        return topic, None, None, marker_headers(end)
    if which == "audio":
        value = {**_stamp(draw, "AUDIO"), "payload": draw(payloads), "channel_id": draw(st.none() | texts),
                 "media": {"codec": draw(st.sampled_from(["L16", "OPUS", "G711"])), "sample_rate": draw(ints),
                           "channels": draw(ints), "send_rate_ms": draw(ints), "mixed": draw(st.booleans())}}  # fmt: skip
        return "rtms.raw.audio", value, None, []
    if which == "video":
        value = {**_stamp(draw, draw(st.sampled_from(["VIDEO", "DESKSHARE"]))), "payload": draw(payloads),
                 "keyframe": draw(st.booleans()), "has_parameter_sets": draw(st.booleans()),
                 "media": {"codec": "H264", "width": draw(ints), "height": draw(ints), "fps": draw(ints),
                           "mode": "ACTIVE_SPEAKER"}}  # fmt: skip
        return "rtms.raw.video", value, None, []
    if which == "transcript":
        value = {**_stamp(draw, "TRANSCRIPT"), "text": draw(texts), "language": draw(ints),
                 "start_time_ms": draw(st.none() | times), "end_time_ms": draw(st.none() | times)}  # fmt: skip
        return "rtms.raw.transcript", value, None, []
    people = draw(st.lists(st.fixed_dictionaries({"user_id": longs, "user_name": names}), max_size=5))
    value = {**_stamp(draw, draw(st.sampled_from(["EVENT", "CHAT"]))), "msg_type": draw(ints),
             "event_type": draw(st.none() | ints), "name": draw(texts), "participants": people,
             "state": draw(st.none() | ints), "reason": draw(st.none() | ints), "body": draw(texts)}  # fmt: skip
    return "rtms.raw.events", value, None, []


def encoded(topic: str, value: dict[str, Any] | None, raw: bytes | None) -> bytes | None:
    if raw is not None or value is None:
        return raw
    try:
        return CODEC.encode(topic, value)
    except CodecError:
        return b"\xff" + repr(sorted(value)).encode()  # not encodable: feed it as garbage


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(st.lists(raw_records(), min_size=1, max_size=25), st.integers(0, 400), st.integers(0, 10_000))
def test_the_processors_core_never_raises(records: list, window_ms: int, horizon_ms: int) -> None:
    core = PartitionCore(3, CODEC.decode, LaneConfig(window_ms, horizon_ms))
    offsets: dict[str, int] = {}
    for topic, value, raw, headers in records:
        offset = offsets[topic] = offsets.get(topic, -1) + 1
        key = value["meeting_uuid"].encode() if value else b"k"
        for out in core.feed(topic, offset, key, encoded(topic, value, raw), headers):
            if out.value is not None:
                CODEC.encode(out.topic, out.value)  # every output is a value of its topic
        core.snapshot()


@st.composite
def ordered_records(draw: Any) -> tuple[str, dict[str, Any] | None, bytes | None, list[tuple[str, bytes]]]:
    which = draw(st.sampled_from(["audio", "video", "transcript", "marker", "garbage"]))
    if which == "garbage":
        return "rtms.audio", None, draw(st.binary(max_size=40)), []
    if which == "marker":
        topic = draw(st.sampled_from(["rtms.audio", "rtms.video", "rtms.transcript"]))
        end = {"meeting_uuid": draw(ids), "rtms_stream_id": draw(streams), "topic": topic, "ended": "STOPPED",
               "stream_started_ms": draw(st.one_of(st.just(T0), longs)), "last_timestamp_ms": draw(st.none() | times),
               "ingest_epoch": draw(longs), "counts": {"AUDIO": draw(longs)}, "complete": draw(st.booleans())}  # fmt: skip
        return topic, None, None, marker_headers(end)
    gap = draw(st.none() | st.fixed_dictionaries({"start_ms": times, "length_ms": longs,
                                                  "reason": st.sampled_from(["LOSS", "PAUSE", "SILENT"])}))  # fmt: skip
    if which == "audio":
        value = {**_stamp(draw, "AUDIO"), "payload": draw(payloads), "seq": draw(longs),
                 "offset_ms": draw(st.one_of(st.integers(0, 60_000), longs)), "gap": gap,
                 "media": {"codec": "L16", "sample_rate": draw(st.sampled_from([16000, 0, 8000, 2**31 - 1])),
                           "channels": draw(st.sampled_from([1, 2, 0])), "send_rate_ms": 20,
                           "mixed": draw(st.booleans())}}  # fmt: skip
        return "rtms.audio", value, None, []
    if which == "video":
        value = {**_stamp(draw, draw(st.sampled_from(["VIDEO", "DESKSHARE"]))), "payload": draw(payloads),
                 "seq": draw(longs), "offset_ms": draw(st.one_of(st.integers(0, 60_000), longs)), "gap": gap,
                 "keyframe": draw(st.booleans()), "has_parameter_sets": draw(st.booleans()),
                 "media": {"codec": "H264", "width": draw(ints), "height": draw(ints), "fps": draw(ints),
                           "mode": "ACTIVE_SPEAKER"}}  # fmt: skip
        return "rtms.video", value, None, []
    value = {"meeting_uuid": draw(ids), "rtms_stream_id": draw(streams), "utterance_id": draw(texts),
             "seq": draw(longs), "participant_id": draw(longs), "participant_name": draw(names),
             "start_ms": draw(times), "end_ms": draw(times), "stream_started_ms": draw(st.one_of(st.just(T0), longs)),
             "text": draw(texts), "language_code": draw(ints), "language": draw(texts), "final": draw(st.booleans())}  # fmt: skip
    return "rtms.transcript", value, None, []


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(st.lists(ordered_records(), min_size=1, max_size=20), st.booleans())
def test_the_sinks_cores_never_raise(records: list, idle_end: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Settings(data_dir=str(Path(tmp)))
        cores = [MEDIA_SINK.core(cfg, idle_timeout_s=0.0 if idle_end else 600.0), TRANSCRIPT_SINK.core(cfg)]
        offsets: dict[str, int] = {}
        for topic, value, raw, headers in records:
            offset = offsets[topic] = offsets.get(topic, -1) + 1
            key = value["meeting_uuid"].encode() if value else b"k"
            data = encoded(topic, value, raw)
            for core in cores:
                if topic in core.topics:
                    core.feed(core.topics[topic], 0, offset, key, data, headers)
                    core.expire_idle()
        for core in cores:
            core.finish_all()
            for letter in core.dead_letters:
                CODEC.encode("rtms.deadletter", letter)  # every dead letter is a value of its topic
            core.abort_all()


def test_every_sample_record_of_the_contract_is_plausible() -> None:
    """Positive control of `implausible`: the contract's realistic records all pass it, and one
    changed value is enough to refuse each kind."""
    from schemas.limits import implausible
    from tests.schemas.samples import SAMPLES

    for schema in ("raw_audio_frame", "raw_video_frame", "raw_transcript_frame", "raw_event", "audio_frame",
                   "video_frame", "meeting_event", "transcript_utterance", "stream_end"):  # fmt: skip
        for record in SAMPLES[schema]:
            assert implausible(record) is None, (schema, implausible(record))
    audio, video = SAMPLES["raw_audio_frame"][0], SAMPLES["raw_video_frame"][0]
    bad = [
        {**audio, "timestamp_ms": 253_402_300_800_000},
        {**audio, "timestamp_ms": audio["stream_started_ms"] + 49 * 3_600_000},
        {**audio, "media": {**audio["media"], "sample_rate": 0}},
        {**audio, "meeting_uuid": "m" * 65},
        {**video, "media": {**video["media"], "fps": 241}},
        {**SAMPLES["audio_frame"][1], "gap": {**SAMPLES["audio_frame"][1]["gap"], "length_ms": 10**12}},
    ]
    assert all(implausible(record) is not None for record in bad)
