"""Records that once stopped the processors for every meeting: a meeting whose participant list made
its `rtms.meetings` record larger than the topic takes. The index record is cut to fit, the loop
goes on, and every meeting's ordered output is what an undisturbed run gives."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from processors.meetings import MeetingBook, fit_index, participant_bytes
from rtmsflow.settings import Settings
from schemas.codec import Codec
from schemas.limits import MAX_INDEX_BYTES
from schemas.topics import MEETINGS, partition_for
from tests.processors.support import (
    ORDERED,
    T0,
    RawRecord,
    StreamPlan,
    ordered,
    processor_loop,
    undisturbed,
    wait_for,
    write_raw,
)

CODEC = Codec()


def encoded_size(record: dict[str, Any]) -> int:
    return len(CODEC.encode(MEETINGS.name, record))


def crowded_book(participants: int, name_chars: int, streams: int = 2) -> MeetingBook:
    book = MeetingBook(3)
    names = {i: f"{i:06d}-" + "n" * name_chars for i in range(participants)}
    for s in range(streams):
        book.saw("big==", f"s{s}", T0 + s, "rtms.audio", 10 + s, None)
        book.participants("big==", f"s{s}", T0 + s, names)
    return book


def test_an_index_record_that_fits_is_left_alone() -> None:
    record = crowded_book(20, 10).record("big==")
    fitted = fit_index(record, MAX_INDEX_BYTES, encoded_size)
    assert fitted.record is record and fitted.participants_dropped == 0


@pytest.mark.parametrize(("participants", "name_chars"), [(500, 10_000), (100_000, 20)])
def test_a_crowded_meeting_index_is_cut_to_fit_keeping_every_stream(
    participants: int, name_chars: int
) -> None:
    record = crowded_book(participants, name_chars).record("big==")
    assert encoded_size(record) > MAX_INDEX_BYTES  # what used to stop the processors
    fitted = fit_index(record, MAX_INDEX_BYTES, encoded_size)
    out = fitted.record
    assert encoded_size(out) <= MAX_INDEX_BYTES
    assert [s["rtms_stream_id"] for s in out["streams"]] == ["s0", "s1"]  # streams and offsets kept
    assert out["streams"][0]["offsets"] == record["streams"][0]["offsets"]
    kept = out["participants"]
    assert kept == record["participants"][: len(kept)] and 0 < len(kept) < participants
    assert fitted.participants_dropped == participants - len(kept)
    # as many as fit: one more would not
    more = {**out, "participants": record["participants"][: len(kept) + 1]}
    assert encoded_size(more) > MAX_INDEX_BYTES


def test_participant_bytes_is_the_encoded_size() -> None:
    for p in ({"user_id": 0, "user_name": None}, {"user_id": -(2**63), "user_name": "é" * 300},
              {"user_id": 2**63 - 1, "user_name": ""}, {"user_id": 16_777_216, "user_name": "x" * 200}):  # fmt: skip
        one = {"meeting_uuid": "m", "partition": 0, "updated_at_ms": 0, "participants": [p]}
        none = {**one, "participants": []}
        # an array of one item: count (1 byte) + item + end (1 byte), the empty one: end only
        assert encoded_size(one) - encoded_size(none) == participant_bytes(p) + 1


def test_too_many_streams_drops_the_oldest_entries() -> None:
    record = crowded_book(1, 10, streams=50).record("big==")
    fitted = fit_index(record, 1_000, encoded_size)
    assert encoded_size(fitted.record) <= 1_000 and fitted.streams_dropped > 0
    assert fitted.record["streams"][-1]["rtms_stream_id"] == record["streams"][-1]["rtms_stream_id"]


def same_partition_meetings(partitions: int) -> tuple[str, str]:
    first = "big-" + uuid.uuid4().hex[:8] + "=="
    target = partition_for(first, partitions)
    while True:
        other = "calm-" + uuid.uuid4().hex[:8] + "=="
        if partition_for(other, partitions) == target:
            return first, other


def crowd_events(plan: StreamPlan, participants: int, name_chars: int, per_event: int) -> list[RawRecord]:
    """participant_join events naming `participants` people with long names, after the plan's events."""
    events = [r.value for r in plan.records if r.topic == "rtms.raw.events" and r.value]
    base = max(events, key=lambda v: v["timestamp_ms"])  # after it: in order, not late
    out = []
    for n, first in enumerate(range(0, participants, per_event)):
        people = [{"user_id": 1000 + i, "user_name": f"{i:05d}" + "x" * name_chars}
                  for i in range(first, min(participants, first + per_event))]  # fmt: skip
        value = dict(base, ingest_seq=100 + n, timestamp_ms=base["timestamp_ms"] + 1 + n, msg_type=6,
                     name="participant_join", participants=people, body="{}")  # fmt: skip
        out.append(RawRecord("rtms.raw.events", plan.meeting.encode(), value))
    return out


@pytest.mark.kafka
async def test_a_meeting_with_500_long_named_participants_does_not_stop_the_processors(
    settings: Settings, kafka_topics: dict[str, str]
) -> None:
    big_id, calm_id = same_partition_meetings(settings.partitions)
    big = StreamPlan(big_id, "big-stream", seconds=1.0, duplicates=0)
    calm = StreamPlan(calm_id, "calm-stream", seconds=1.0, seed=3, duplicates=0)
    records = big.build()
    crowd = crowd_events(big, 500, 10_000, per_event=25)  # ~5 MB of names, listed twice: ~10 MB
    await write_raw(settings, records + crowd)  # the markers later: the crowd must reach the index live
    await write_raw(settings, calm.build() + calm.markers())

    async with processor_loop(settings) as loop:

        async def indexes() -> dict[str, dict[str, Any]]:
            return {v["meeting_uuid"]: {k: x for k, x in v.items() if k != "end_of_stream"}
                    for v in await ordered(settings, "rtms.meetings")}  # fmt: skip

        async def crowd_indexed() -> bool:
            return len((await indexes()).get(big_id, {}).get("participants") or ()) > 0

        await wait_for(crowd_indexed, 60, "the crowded meeting's index record, with participants")
        await write_raw(settings, big.markers())

        async def done() -> bool:
            markers = [sum(v["end_of_stream"] for v in await ordered(settings, b)) for b in ORDERED]
            return min(markers) >= 2

        await wait_for(done, 60, "both streams' markers on every ordered topic")

        async def ended_indexes() -> list[dict[str, Any]] | None:
            latest = await indexes()
            ok = all(m in latest and all(s["state"] == "ENDED" for s in latest[m]["streams"])
                     for m in (big_id, calm_id))  # fmt: skip
            return [latest[big_id], latest[calm_id]] if ok else None

        big_index, calm_index = await wait_for(ended_indexes, 60, "both meetings' index records, ended")
        assert loop.run_task is not None and not loop.run_task.done()  # the loop is still running

    assert encoded_size(big_index) <= MAX_INDEX_BYTES
    assert 0 < len(big_index["participants"]) < 500 and big_index["streams"][0]["participants"] == []
    # the other meeting's index is complete: its stream, ended, with offsets on every topic
    (calm_stream,) = calm_index["streams"]
    assert {o["topic"] for o in calm_stream["offsets"]} >= set(ORDERED)
    assert all(o["end_offset"] is not None for o in calm_stream["offsets"])
    want = await undisturbed(settings)
    for base in ORDERED:
        got = await ordered(settings, base)
        assert got == want[base], base
    names = [
        p["user_name"] for v in await ordered(settings, "rtms.events") for p in v.get("participants") or ()
    ]
    assert sum(len(n or "") > 10_000 for n in names) == 500  # the events themselves are whole


def test_a_dead_letter_of_a_record_near_the_topic_limit_still_fits() -> None:
    from processors.batch_loop import output_value
    from processors.frame_splice import FrameSplicer
    from processors.lanes import DEADLETTER, Output
    from schemas.limits import MAX_DEAD_LETTER_PAYLOAD_BYTES, MAX_VALUE_BYTES

    def letter(payload: bytes) -> Output:
        value = {"meeting_uuid": "m==", "rtms_stream_id": None, "stage": "processors", "source": "rtms.raw.audio",
                 "reason": "not Avro", "error": "CodecError", "payload": payload, "received_at_ms": 0,
                 "source_partition": 1, "source_offset": 7}  # fmt: skip
        return Output(DEADLETTER, b"m==", value, source=("rtms.raw.audio", 7))

    splicer = FrameSplicer(0, {}, {}, {})
    big = output_value(letter(b"\x07" * MAX_VALUE_BYTES), splicer, CODEC, DEADLETTER, lambda: 5)
    assert big is not None and len(big) < MAX_DEAD_LETTER_PAYLOAD_BYTES + 1_000
    decoded = CODEC.decode(DEADLETTER, big)
    assert decoded["payload"] == b"\x07" * MAX_DEAD_LETTER_PAYLOAD_BYTES
    assert (
        decoded["reason"]
        == f"not Avro (payload: its first {MAX_DEAD_LETTER_PAYLOAD_BYTES} of {MAX_VALUE_BYTES} bytes)"
    )
    small = output_value(letter(b"\x07" * 100), splicer, CODEC, DEADLETTER, lambda: 5)  # positive control
    assert small is not None and CODEC.decode(DEADLETTER, small)["payload"] == b"\x07" * 100
