"""The processors' restart logic without a broker: a `PartitionCore` killed after any input and
rebuilt from its last snapshot, as `processors/batch_loop.py` does it (re-read the raw topics from
the snapshot's commits, skip the outputs a crashed run wrote after the snapshot), writes exactly
what one undisturbed core writes: every ordered record, gap, utterance and marker (with its
counts) once, and every late record once.

A kill lands between two snapshots; several kills in a row restore from a snapshot taken while
the previous restart was still re-reading, which is where counts once went double."""

from __future__ import annotations

import asyncio
import random

import pytest

from processors.lanes import DEADLETTER, LATE, LaneConfig, Output, PartitionCore
from schemas.codec import Codec
from tests.processors.support import RAW, StreamPlan, interleave

Raw = tuple[str, int, bytes, bytes | None, list[tuple[str, bytes]]]


@pytest.fixture(scope="module")
def codec() -> Codec:
    codec = Codec()
    asyncio.run(
        codec.prepare(
            [
                *RAW,
                "rtms.audio",
                "rtms.video",
                "rtms.transcript",
                "rtms.events",
                "rtms.chat",
                LATE,
                DEADLETTER,
            ]
        )
    )
    return codec


@pytest.fixture(scope="module")
def raw(codec: Codec) -> list[Raw]:
    """Two streams in one partition (shuffled, duplicated, a gap, a late frame), then their markers,
    as (topic, offset, key, value, headers) in arrival order."""
    plans = [StreamPlan(f"m{i}==", f"s{i}", seconds=4.0, seed=i, epoch=100 + i, missing_audio=range(20 + i, 30 + i),
                        late_audio=60, duplicates=3) for i in range(2)]  # fmt: skip
    records = interleave(*(p.build() for p in plans)) + [m for p in plans for m in p.markers()]
    offsets = dict.fromkeys(RAW, 0)
    out: list[Raw] = []
    for r in records:
        if r.value is None:
            value, headers = None, r.headers()
        else:
            value, headers = codec.encode(r.topic, r.value), []
        out.append((r.topic, offsets[r.topic], r.key, value, headers))
        offsets[r.topic] += 1
    return out


def signature(out: Output) -> str:
    value = None if out.value is None else {k: v for k, v in out.value.items() if k != "received_at_ms"}
    return repr((value, out.end))


def undisturbed(codec: Codec, raw: list[Raw]) -> dict[str, list[str]]:
    core = PartitionCore(0, codec.decode, LaneConfig(300))
    written: dict[str, list[str]] = {}
    for r in raw:
        for out in core.feed(*r):
            written.setdefault(out.topic, []).append(signature(out))
    return written


class Topics:
    """What the output topics hold and what a run has accounted for (the batch loop's `ends`)."""

    def __init__(self) -> None:
        self.written: dict[str, list[str]] = {}
        self.ends: dict[str, int] = {}
        self.skips: dict[str, list[tuple[str, int]]] = {}
        self.skipped = 0

    def restart(self, ends: dict[str, int]) -> None:
        """A new run from a state with `ends`: what lies past them was written by a crashed run."""
        self.ends = dict(ends)
        self.skips = {
            t: [(s, i) for i, s in enumerate(v) if i >= ends.get(t, 0)] for t, v in self.written.items()
        }

    def write(self, out: Output) -> None:
        sig, held = signature(out), self.written.setdefault(out.topic, [])
        if out.topic in (LATE, DEADLETTER):  # matched by source, as the loop does
            if sig in held:
                self.skipped += 1
                return
        elif self.skips.get(out.topic):
            expected, index = self.skips[out.topic].pop(0)
            assert expected == sig, f"restart wrote something else on {out.topic}"
            self.ends[out.topic] = index + 1
            self.skipped += 1
            return
        held.append(sig)
        self.ends[out.topic] = len(held)


def disturbed(codec: Codec, raw: list[Raw], kills: list[tuple[int, int]], rnd: random.Random) -> Topics:
    """Feed `raw`; for each (a, b) in `kills`: snapshot after a more inputs, kill after b more,
    restart from the snapshot reading each raw topic from its commit (topics interleaved anew)."""
    topics = Topics()
    core = PartitionCore(0, codec.decode, LaneConfig(300))
    queue = list(raw)

    def feed(n: int) -> None:
        for _ in range(min(n, len(queue))):
            for out in core.feed(*queue.pop(0)):
                topics.write(out)

    for snapshot_after, kill_after in kills:
        feed(snapshot_after)
        state, ends = core.snapshot(), dict(topics.ends)
        feed(kill_after)
        core = PartitionCore(0, codec.decode, LaneConfig(300), state)
        topics.restart(ends)
        per_topic = [[r for r in raw if r[0] == t and r[1] >= state["commits"].get(t, 0)] for t in RAW]
        queue = interleave(*per_topic, seed=rnd.randrange(1 << 30))
    feed(len(queue))
    return topics


@pytest.mark.parametrize("kill_count", [1, 2, 3, 4])
def test_kills_anywhere_give_the_undisturbed_output(codec: Codec, raw: list[Raw], kill_count: int) -> None:
    expected = undisturbed(codec, raw)
    assert expected["rtms.late"] and any(
        "DUPLICATE" in s for s in expected["rtms.audio"]
    )  # the input has both
    rnd = random.Random(kill_count)
    skipped = 0
    for _ in range(30):
        kills = [(rnd.randrange(0, 500), rnd.randrange(0, 300)) for _ in range(kill_count)]
        topics = disturbed(codec, raw, kills, rnd)
        for topic, records in expected.items():
            assert topics.written.get(topic) == records, (topic, kills)
        skipped += topics.skipped
    assert skipped > 0  # positive control: restarts really met output a crashed run had written


def test_a_snapshot_taken_while_re_reading_keeps_the_old_positions_and_commits(
    codec: Codec, raw: list[Raw]
) -> None:
    core = PartitionCore(0, codec.decode, LaneConfig(300))
    for r in raw[:400]:
        core.feed(*r)
    first = core.snapshot()
    restarted = PartitionCore(0, codec.decode, LaneConfig(300), first)
    audio = [r for r in raw if r[0] == "rtms.raw.audio" and r[1] >= first["commits"]["rtms.raw.audio"]]
    restarted.feed(*audio[0])  # one input re-read: far from the old position
    second = restarted.snapshot()
    assert second["positions"] == first["positions"]
    assert second["commits"] == first["commits"]
    for r in audio[1:]:  # control: once past the old position, both move on
        restarted.feed(*r)
    moved = restarted.snapshot()
    assert moved["positions"]["rtms.raw.audio"] > first["positions"]["rtms.raw.audio"]
    assert moved["commits"]["rtms.raw.audio"] > first["commits"]["rtms.raw.audio"]
