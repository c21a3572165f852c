"""`rtmsflow process` killed with SIGKILL mid-stream and restarted: the ordered topics are identical,
record for record, to an undisturbed run (the pure core fed the same raw records), nothing doubled;
two processes in one group split the partitions and each stream is processed by exactly one."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from rtmsflow.settings import Settings
from schemas.topics import partition_for
from tests.processors.support import (
    ORDERED,
    OUTPUTS,
    ProcessProcess,
    RawRecord,
    StreamPlan,
    interleave,
    ordered,
    undisturbed,
    wait_for,
    write_raw,
)


def plans(n: int, seconds: float) -> list[StreamPlan]:
    out = []
    for i in range(n):
        meeting = f"m{i}-{uuid.uuid4().hex[:6]}=="
        out.append(StreamPlan(meeting, f"s{i}", seconds=seconds, seed=i, epoch=100 + i,
                              missing_audio=range(20 + i, 30 + i), late_audio=60, duplicates=3))  # fmt: skip
    return out


async def count(settings: Settings, base: str) -> int:
    return len(await ordered(settings, base))


async def all_markers(settings: Settings, streams: int) -> bool:
    for base in ORDERED:
        if sum(v["end_of_stream"] for v in await ordered(settings, base)) < streams:
            return False
    return True


def signatures(records: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [
        (
            v["rtms_stream_id"],
            v.get("stream_kind"),
            v.get("participant_id"),
            v.get("seq"),
            v.get("topic"),
            v.get("piece_count"),
        )
        for v in records
    ]


async def assert_identical_to_undisturbed(settings: Settings) -> None:
    expected = await undisturbed(settings)
    assert expected["rtms.transcript.partial"]  # the input has utterances: partials are compared too
    for base in OUTPUTS:
        got = await ordered(settings, base)
        sigs = signatures(got)
        assert len(sigs) == len(set(sigs)), f"duplicates on {base}"
        assert got == expected[base], base
    late = await ordered(settings, "rtms.late")
    sources = [(v["source_topic"], v["source_partition"], v["source_offset"]) for v in late]
    assert len(sources) == len(set(sources)) and len(late) == len(expected["rtms.late"])


def restored_with_rewrites(log: Path) -> int:
    """How many partition restores found records a killed run had written after its last state."""
    n = 0
    for line in log.read_text(errors="replace").splitlines():
        if '"partition restored"' in line:
            if json.loads(line).get("already_written"):
                n += 1
    return n


async def test_kill_9_at_several_points_and_restart_gives_the_undisturbed_output(
    settings: Settings, settings_env: dict[str, str], kafka_topics: dict[str, str], tmp_path: Path
) -> None:
    streams = plans(6, seconds=6.0)
    records = interleave(*(p.build() for p in streams))
    markers: list[RawRecord] = [m for p in streams for m in p.markers()]
    third = len(records) // 3
    group = f"proc-{uuid.uuid4().hex[:8]}"
    log = tmp_path / "process.log"
    # a long commit interval: kills land between states, so restarts must skip what was written after one
    env = {"RTMSFLOW_PROCESS_COMMIT_INTERVAL_MS": "2500"}

    procs: list[ProcessProcess] = []

    def start() -> ProcessProcess:
        procs.append(ProcessProcess(settings_env, group, log, **env))
        return procs[-1]

    try:
        await write_raw(settings, records[:third])
        proc = start()
        await wait_for(lambda: _at_least(settings, "rtms.audio", 300), 120, "first output")
        proc.kill()  # 1: mid-stream, perhaps before any state was written

        proc = start()
        await wait_for(proc.health, 120, "health")
        await write_raw(settings, records[third : 2 * third])
        # how much audio output the raw records so far make (the pure core): reachable whatever
        # the earlier kill left behind, so the waits depend on no speed
        caught_up = len((await undisturbed(settings))["rtms.audio"])
        await wait_for(lambda: _at_least(settings, "rtms.audio", caught_up), 120, "second output")
        proc.kill()  # 2: caught up, frames held and utterances open, probably no state since

        proc = start()
        await wait_for(proc.health, 120, "health")
        await write_raw(settings, records[2 * third :])
        total = len((await undisturbed(settings))["rtms.audio"])
        halfway = caught_up + (total - caught_up) // 2
        await wait_for(lambda: _at_least(settings, "rtms.audio", halfway), 120, "third output")
        proc.kill()  # 3: half way through the last third

        proc = start()
        await wait_for(proc.health, 120, "health")
        await write_raw(settings, markers)
        await wait_for(lambda: all_markers(settings, len(streams)), 120, "markers")
    finally:
        for p in procs:
            p.stop()
    assert restored_with_rewrites(log) >= 1  # positive control: a restart really met already-written output
    await assert_identical_to_undisturbed(settings)


async def _at_least(settings: Settings, base: str, n: int) -> bool:
    return await count(settings, base) >= n


async def test_two_processes_in_one_group_each_stream_is_processed_by_exactly_one(
    settings: Settings, settings_env: dict[str, str], kafka_topics: dict[str, str], tmp_path: Path
) -> None:
    group = f"proc-{uuid.uuid4().hex[:8]}"
    a = ProcessProcess(settings_env, group, tmp_path / "a.log")
    b = ProcessProcess(settings_env, group, tmp_path / "b.log")
    try:

        async def split() -> tuple[set[int], set[int]] | None:
            ha, hb = await a.health(), await b.health()
            if not ha or not hb or not ha["partitions"] or not hb["partitions"]:
                return None
            pa, pb = set(ha["partitions"]), set(hb["partitions"])
            return (pa, pb) if pa | pb == set(range(settings.partitions)) and not pa & pb else None

        pa, pb = await wait_for(split, 60, "partitions split between the two")
        streams = plans(8, seconds=2.0)
        while len({partition_for(p.meeting, settings.partitions) in pa for p in streams}) < 2:
            streams = plans(8, seconds=2.0)  # random names: both processes must get meetings
        await write_raw(settings, interleave(*(p.build() for p in streams)))
        await write_raw(settings, [m for p in streams for m in p.markers()])
        await wait_for(lambda: all_markers(settings, len(streams)), 120, "markers")
        assert await split() == (pa, pb)  # no rebalance in between: ownership never moved
    finally:
        a.stop()
        b.stop()
    await assert_identical_to_undisturbed(settings)
