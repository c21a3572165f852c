"""The processors through a real broker: raw records in, ordered topics, late/dead letters and the
meetings index out (the loop in-process; `tests/processors/test_restart.py` runs `rtmsflow process`)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from emulator.faults import Faults
from rtmsflow.settings import Settings
from tests.ingest.support import ingest_stack, small_meeting
from tests.processors.support import (
    ORDERED,
    OUTPUTS,
    RAW,
    T0,
    RawRecord,
    StreamPlan,
    interleave,
    ordered,
    processor_loop,
    undisturbed,
    wait_for,
    write_raw,
)


async def markers_on_every_ordered_topic(settings: Settings, streams: int) -> bool:
    for base in ORDERED:
        if sum(v["end_of_stream"] for v in await ordered(settings, base)) < streams:
            return False
    return True


def of_stream(records: list[dict[str, Any]], stream: str) -> list[dict[str, Any]]:
    return [v for v in records if v["rtms_stream_id"] == stream]


async def test_shuffled_duplicated_gapped_streams_come_out_sorted_once_with_gaps_late_utterances_and_markers(
    settings: Settings, kafka_topics: dict[str, str]
) -> None:
    meeting = "mtg-" + uuid.uuid4().hex[:8] + "=="
    one = StreamPlan(meeting, "stream-one", seed=1, missing_audio=range(30, 40), late_audio=50, duplicates=4)
    two = StreamPlan(meeting, "stream-two", seed=2, epoch=22, duplicates=2)
    records = interleave(one.build(), two.build())
    malformed = RawRecord("rtms.raw.audio", meeting.encode(), None, raw_bytes=b"\xc3\x01not avro at all")
    records.insert(len(records) // 2, malformed)
    await write_raw(settings, records + one.markers() + two.markers())

    async with processor_loop(settings):
        await wait_for(lambda: markers_on_every_ordered_topic(settings, 2), 60, "markers")
        audio = await ordered(settings, "rtms.audio")
        late = await ordered(settings, "rtms.late")
        dead = await ordered(settings, "rtms.deadletter")
        transcript = await ordered(settings, "rtms.transcript")
        events = await ordered(settings, "rtms.events")
        chat = await ordered(settings, "rtms.chat")
        video = await ordered(settings, "rtms.video")
        index = await wait_for(lambda: ended_index(settings, meeting), 30, "index")

    for stream, plan in (("stream-one", one), ("stream-two", two)):
        lane = of_stream(audio, stream)
        frames = [v for v in lane if not v["end_of_stream"] and v["gap"] is None]
        gaps = [v for v in lane if not v["end_of_stream"] and v["gap"] is not None]
        # sorted, once each, numbered without holes, the marker last and only once
        stamps = [v["timestamp_ms"] for v in frames]
        assert stamps == sorted(set(stamps))
        assert [v["seq"] for v in lane[:-1]] == list(range(len(lane) - 1))
        assert lane[-1]["end_of_stream"] and sum(v["end_of_stream"] for v in lane) == 1
        # audio frames and gaps tile the timeline from t = 0 to the end exactly
        position = 0
        for v in lane[:-1]:
            assert v["offset_ms"] == position
            position += v["gap"]["length_ms"] if v["gap"] else 20
        assert T0 + position == lane[-1]["last_timestamp_ms"] + 20
        assert gaps[0]["gap"] == {"start_ms": T0, "length_ms": 40, "reason": "LOSS"}  # leading gap
        expected = {v.value["timestamp_ms"] for v in plan.records if v.topic == "rtms.raw.audio" and v.value}
        if stream == "stream-one":
            # the late frame is not in the ordered stream; the dropped stretch is one gap
            late_ts = plan.late_timestamp_ms
            assert late_ts not in stamps and set(stamps) == expected - {late_ts}
            assert {"start_ms": T0 + 40 + 30 * 20, "length_ms": 200, "reason": "LOSS"} in [
                g["gap"] for g in gaps
            ]
            assert lane[-1]["counts"] == {
                "AUDIO": len(frames),
                "AUDIO_GAP": len(gaps),
                "LATE": 1,
                "DUPLICATE": 4,
            }
        else:
            assert set(stamps) == expected and len(gaps) == 1  # only the leading gap
            assert lane[-1]["counts"] == {"AUDIO": len(frames), "AUDIO_GAP": 1, "LATE": 0, "DUPLICATE": 2}
        # utterances: every word once, in order, merged (fewer utterances than pieces)
        utterances = [v for v in of_stream(transcript, stream) if not v["end_of_stream"]]
        pieces = sorted((r.value for r in plan.records if r.topic == "rtms.raw.transcript" and r.value),
                        key=lambda v: v["timestamp_ms"])  # fmt: skip
        unique = list({p["timestamp_ms"]: p["text"] for p in pieces}.values())
        assert " ".join(u["text"] for u in utterances) == " ".join(unique)
        assert 0 < len(utterances) < len(unique)
        assert [u["seq"] for u in utterances] == list(range(len(utterances)))
        assert of_stream(transcript, stream)[-1]["end_of_stream"]
        ev = [v for v in of_stream(events, stream) if not v["end_of_stream"]]
        assert [v["timestamp_ms"] for v in ev] == sorted(v["timestamp_ms"] for v in ev) and len(ev) == 4
        # chat: each message once, in the order it arrived, numbered from 0, the marker's counts
        lines = of_stream(chat, stream)
        sent = [r.value for r in plan.records if r.topic == "rtms.raw.chat" and r.value]
        first_sent = list({v["message_id"]: v for v in sent}.values())  # a repeat keeps its first place
        assert [v["message_id"] for v in lines[:-1]] == [v["message_id"] for v in first_sent]
        assert [v["chat_id"] for v in lines[:-1]] == [f"{stream}/{i}" for i in range(len(first_sent))]
        assert any(v["private"] and v["recipients"] for v in lines[:-1])
        assert lines[-1]["end_of_stream"] and lines[-1]["counts"]["CHAT"] == len(first_sent)
        assert lines[-1]["counts"]["DUPLICATE"] == len(sent) - len(first_sent) > 0
        vid = of_stream(video, stream)
        assert [v["timestamp_ms"] for v in vid[:-1]] == sorted({v["timestamp_ms"] for v in vid[:-1]})
    # the late frame is kept on rtms.late with where it came from; the malformed record is dead-lettered
    assert [(v["rtms_stream_id"], v["timestamp_ms"], v["source_topic"]) for v in late] == [
        ("stream-one", one.late_timestamp_ms, "rtms.raw.audio")
    ]
    assert (
        len(dead) == 1
        and dead[0]["payload"] == b"\xc3\x01not avro at all"
        and dead[0]["stage"] == "processors"
    )
    assert dead[0]["source"] == "rtms.raw.audio" and dead[0]["source_offset"] is not None
    # the meetings index lists both streams, ended, with offsets on raw and ordered topics
    streams = {s["rtms_stream_id"]: s for s in index["streams"]}
    assert set(streams) == {"stream-one", "stream-two"}
    for s in streams.values():
        topics = {o["topic"]: o for o in s["offsets"]}
        assert set(topics) >= set(RAW) | set(ORDERED)
        assert all(
            o["end_offset"] is not None and o["first_offset"] <= o["last_offset"] for o in topics.values()
        )
    # and the whole output is what one undisturbed run of the pure core makes of the raw topics
    expected_out = await undisturbed(settings)
    assert audio == expected_out["rtms.audio"] and transcript == expected_out["rtms.transcript"]
    assert video == expected_out["rtms.video"] and events == expected_out["rtms.events"]
    assert chat == expected_out["rtms.chat"]


async def ended_index(settings: Settings, meeting: str) -> dict[str, Any] | None:
    latest = None
    for v in await ordered(settings, "rtms.meetings"):
        if v["meeting_uuid"] == meeting:
            latest = v
    if latest and latest["streams"] and all(s["state"] == "ENDED" for s in latest["streams"]):
        return latest
    return None


async def test_a_repeated_marker_is_a_no_op_and_records_after_it_go_to_late(
    settings: Settings, kafka_topics: dict[str, str]
) -> None:
    meeting = "mtg-" + uuid.uuid4().hex[:8] + "=="
    plan = StreamPlan(meeting, "s", seconds=1.0, duplicates=0)
    records = plan.build()
    straggler = next(r for r in records if r.topic == "rtms.raw.audio")
    await write_raw(settings, records + plan.markers() + plan.markers()[:1] + [straggler])
    async with processor_loop(settings):
        await wait_for(lambda: markers_on_every_ordered_topic(settings, 1), 60, "markers")
        await wait_for(lambda: ordered(settings, "rtms.late"), 30, "late record")
        audio = await ordered(settings, "rtms.audio")
        late = await ordered(settings, "rtms.late")
    assert sum(v["end_of_stream"] for v in audio) == 1 and audio[-1]["end_of_stream"]
    assert [(v["timestamp_ms"], v["lateness_ms"]) for v in late] == [(straggler.value["timestamp_ms"], 0)]  # type: ignore[index]


async def test_behind_the_real_ingest_with_reorder_and_duplicate_faults(
    settings: Settings, kafka_topics: dict[str, str]
) -> None:
    async with ingest_stack(settings) as stack:
        await stack.start_worker()
        identity, handle = stack.stream(
            small_meeting(duration_s=3.0), speed=2.0, faults=Faults(reorder=3, duplicate=3)
        )
        (delivery,) = await stack.hooks.rtms_started(identity)
        assert delivery.delivered
        async with asyncio.timeout(40):
            reason = await handle.wait_done()
        await stack.hooks.rtms_stopped(identity, reason)
        raw = await stack.wait_eos(identity.instance_id)
    assert handle.stats.reordered and handle.stats.duplicated  # the faults really happened
    async with processor_loop(settings):
        await wait_for(lambda: markers_on_every_ordered_topic(settings, 1), 60, "markers")
        out = {base: await ordered(settings, base) for base in ORDERED}
    duplicates = 0
    for base, raw_base in zip(ORDERED, RAW, strict=True):
        records = out[base]
        assert records[-1]["end_of_stream"] and sum(v["end_of_stream"] for v in records) == 1
        duplicates += records[-1]["counts"]["DUPLICATE"]
        data = [v for v in records if not v["end_of_stream"]]
        if base in ("rtms.audio", "rtms.video"):
            frames = [v for v in data if v["gap"] is None]
            stamps = [(v["stream_kind"], v["timestamp_ms"]) for v in frames]
            assert stamps == sorted(set(stamps))  # sorted and once each, whatever the faults did
            sent = {(v["stream_kind"], v["timestamp_ms"]) for v in raw[raw_base] if not v["end_of_stream"]}
            assert set(stamps) == sent  # nothing lost
    assert duplicates == len(handle.stats.duplicated)


async def test_input_goes_on_while_a_commit_cycle_waits_and_nothing_is_committed_before_its_state(
    settings: Settings, kafka_topics: dict[str, str]
) -> None:
    # the cycle's state write is held (a gate in front of the real one): a second stream written
    # meanwhile must still come out whole, and the raw offsets stay uncommitted until it is let go
    first = StreamPlan("mtg-" + uuid.uuid4().hex[:8] + "==", "one", seconds=1.0, duplicates=0)
    second = StreamPlan("mtg-" + uuid.uuid4().hex[:8] + "==", "two", seconds=1.0, duplicates=0)
    gate, held = asyncio.Event(), asyncio.Event()
    async with processor_loop(settings) as loop:
        assert loop.store is not None and loop.consumer is not None
        write = loop.store.write

        async def gated_write(partition: int, snapshot: dict[str, Any]) -> Any:
            held.set()
            await gate.wait()
            return await write(partition, snapshot)

        loop.store.write = gated_write  # type: ignore[method-assign]
        consumer = loop.consumer

        async def committed() -> int:
            return sum([(await consumer.committed(tp)) or 0 for tp in sorted(consumer.assignment())])

        try:
            await write_raw(settings, first.build() + first.markers())
            await wait_for(lambda: _true(held.is_set()), 60, "a cycle at its state write")
            await write_raw(settings, second.build() + second.markers())
            await wait_for(lambda: markers_on_every_ordered_topic(settings, 2), 60, "both streams' markers")
            assert await committed() == 0
        finally:
            gate.set()
        await wait_for(lambda: _positive(committed()), 60, "a commit once the state is written")
    out = {base: await ordered(settings, base) for base in OUTPUTS}
    expected = await undisturbed(settings)
    assert out == {base: expected[base] for base in OUTPUTS}


async def _positive(value: Any) -> bool | None:
    return (await value) > 0 or None


async def _true(value: bool) -> bool | None:
    return value or None
