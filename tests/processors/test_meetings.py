"""The meetings index's bookkeeping, without a broker: what a partition's core read goes into its
`MeetingBook` at once; where its ordered records went, only once they are acknowledged (`settle`)."""

from __future__ import annotations

from typing import Any

from processors.lanes import LaneConfig, PartitionCore
from processors.meetings import MeetingBook
from schemas.codec import Codec
from tests.processors.support import ORDERED, RAW, StreamPlan


def _fed_core(plan: StreamPlan) -> tuple[PartitionCore, list[Any]]:
    """A core fed the plan's records and markers in order; its outputs."""
    codec = Codec()
    core = PartitionCore(0, codec.decode, LaneConfig())
    offsets = dict.fromkeys(RAW, 0)
    outs = []
    for r in [*plan.build(), *plan.markers()]:
        value, headers = (None, r.headers()) if r.value is None else (codec.encode(r.topic, r.value), [])
        outs += core.feed(r.topic, offsets[r.topic], r.key, value, headers)
        offsets[r.topic] += 1
    return core, outs


def _offsets(book: MeetingBook[int], meeting: str) -> dict[str, dict[str, Any]]:
    (stream,) = book.record(meeting)["streams"]
    return {o["topic"]: o for o in stream["offsets"]}


def test_ordered_offsets_enter_the_index_only_once_acknowledged() -> None:
    plan = StreamPlan("m==", "s1", seconds=1.0, duplicates=0)
    core, outs = _fed_core(plan)
    book: MeetingBook[int] = MeetingBook(0)
    book.read(core)
    written: dict[str, int] = {}  # per ordered topic: its next offset (the record's "where")
    for out in outs:
        if out.topic not in ORDERED or out.stream is None:
            continue
        where = written[out.topic] = written.get(out.topic, -1) + 1
        if out.end is not None:
            book.sent_marker(out.topic, where, out.end)
        else:
            book.sent(out.stream, out.topic, where, out.value.get("timestamp_ms") if out.value else None)
    sent = book.take(core)
    before = _offsets(book, "m==")
    assert set(before) == set(RAW) and all(o["end_offset"] is not None for o in before.values())
    assert book.record("m==")["streams"][0]["state"] == "LIVE"  # not yet: nothing acknowledged

    book.settle(sent, lambda where: where)

    after = _offsets(book, "m==")
    assert set(after) == {*RAW, *ORDERED}
    for topic in ORDERED:  # every ordered topic got records, then its marker last
        assert after[topic]["first_offset"] == 0 and after[topic]["end_offset"] == written[topic] > 0
    assert book.record("m==")["streams"][0]["state"] == "ENDED"
    assert book.take(core).records == {}  # taken once: the next cycle starts empty
