"""Several RTMS streams of one meeting, and every path to a stream's end-of-stream markers, through
the real broker, the emulator and real workers (contract v2)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from rtmsflow.settings import Settings
from tests.ingest.support import (
    RAW,
    Stack,
    WorkerProcess,
    assert_eos_last,
    assert_ingest_seq_increasing,
    assert_same_frames,
    frames_of,
    ingest_stack,
    read_topic,
    small_meeting,
    worker_env,
)

pytestmark = pytest.mark.kafka


def of_stream(raw: dict[str, list[dict[str, Any]]], stream_id: str) -> dict[str, list[dict[str, Any]]]:
    return {name: [v for v in records if v["rtms_stream_id"] == stream_id] for name, records in raw.items()}


# Deadlines only catch a hang: generous, so a loaded machine is slow rather than failed.
DEADLINE_S = 120


async def wait_markers(
    stack: Stack, meeting: str, stream_id: str, timeout_s: float = DEADLINE_S
) -> dict[str, Any]:
    """Until every raw topic holds the stream's marker; the meeting's records of that stream."""
    async with asyncio.timeout(timeout_s):
        while True:
            raw = of_stream(await stack.raw(meeting), stream_id)
            if all(any(v["end_of_stream"] for v in raw[name]) for name in RAW):
                return raw
            await asyncio.sleep(0.3)


async def session_actions(settings: Settings, stream_id: str) -> list[str]:
    records = await read_topic(settings, settings.topic_prefix + "rtms.sessions")
    return [v["action"] for _, v, _, _ in records if v["rtms_stream_id"] == stream_id]


async def test_a_restarted_stream_is_a_second_stream_each_complete_with_its_own_markers(
    settings: Settings, kafka_topics: dict[str, str]
) -> None:
    first_meeting, second_meeting = await asyncio.gather(
        asyncio.to_thread(small_meeting, 3, 3.0), asyncio.to_thread(small_meeting, 4, 3.0)
    )
    async with ingest_stack(settings) as stack:
        await stack.start_worker()
        first, first_handle = stack.stream(first_meeting, speed=2.0)
        await stack.hooks.rtms_started(first)
        reason = await asyncio.wait_for(first_handle.wait_done(), DEADLINE_S)
        await stack.hooks.rtms_stopped(first, reason)
        await wait_markers(stack, first.instance_id, first.rtms_stream_id)
        # Zoom restarts the meeting's stream: same meeting, a new stream id
        second_id = "f" * 32
        second_handle = stack.server.add_stream(
            first.instance_id, second_id, second_meeting, speed=2.0, record=True
        )
        second = dataclasses.replace(first, rtms_stream_id=second_id, server_urls=second_handle.server_urls)
        await stack.hooks.rtms_started(second)
        reason2 = await asyncio.wait_for(second_handle.wait_done(), DEADLINE_S)
        await stack.hooks.rtms_stopped(second, reason2)
        await wait_markers(stack, first.instance_id, second_id)
        raw = await stack.raw(first.instance_id)

    for stream_id, handle, why in (
        (first.rtms_stream_id, first_handle, reason),
        (second_id, second_handle, reason2),
    ):
        mine = of_stream(raw, stream_id)
        assert_eos_last(mine, why)  # one marker per topic, last, counts matching, complete
        assert_ingest_seq_increasing(mine)
        assert_same_frames(handle.sent, mine)  # nothing of one stream attributed to the other
        events = [v["name"] for v in frames_of(mine["rtms.raw.events"])]
        # the stream's life in one topic: the started webhook first; the stream ended itself (stream
        # state TERMINATED), so the stop webhook that came after its markers added nothing after them
        assert events[0] == "rtms_started" and events[-1] == "stream_state", events
        # t = 0 is the media clock's (RTMS's first-packet timestamp), on every record of the stream
        (first_packet,) = [
            v["timestamp_ms"] for v in frames_of(mine["rtms.raw.events"]) if v["name"] == "first_packet"
        ]
        for topic in RAW:
            started = {v["stream_started_ms"] for v in frames_of(mine[topic])}
            # a short meeting's chat may hold no message ingest keeps (private ones are dropped)
            assert started == {first_packet} or (topic == "rtms.raw.chat" and not started), topic
        assert min(v["timestamp_ms"] for v in frames_of(mine["rtms.raw.audio"])) >= first_packet
    # every record belongs to one of the two streams: nothing unattributed
    assert {v["rtms_stream_id"] for records in raw.values() for v in records} == {
        first.rtms_stream_id,
        second_id,
    }
    assert await session_actions(stack.settings, first.rtms_stream_id) == [
        "STARTED",
        "HELD",
        "HELD",  # with t = 0 once fixed from the media clock
        "STOPPED",
        "ENDED",
    ]


async def test_a_worker_killed_right_after_the_stop_is_stored_still_leads_to_the_markers(
    settings: Settings, settings_env: dict[str, str], kafka_topics: dict[str, str], tmp_path: Path
) -> None:
    meeting = await asyncio.to_thread(small_meeting, 5, 30.0)
    async with ingest_stack(settings) as stack:
        doomed = WorkerProcess(worker_env(settings_env), stack.group, tmp_path / "doomed.log")
        try:
            async with asyncio.timeout(DEADLINE_S):
                while True:
                    state = await doomed.health()
                    if state and state["partitions"]:
                        break
                    await asyncio.sleep(0.3)
            identity, handle = stack.stream(meeting)
            await stack.hooks.rtms_started(identity)
            await asyncio.wait_for(handle.wait_media(1000), DEADLINE_S)
            # freeze it, store the stop, then kill it: it can never have written the markers
            os.kill(doomed.proc.pid, signal.SIGSTOP)
            (stopped,) = [await stack.hooks.rtms_stopped(identity, 6)]
            assert stopped.delivered
            os.kill(doomed.proc.pid, signal.SIGKILL)
            doomed.proc.wait()
        finally:
            doomed.stop()
        assert await session_actions(stack.settings, identity.rtms_stream_id) == [
            "STARTED",
            "HELD",
            "HELD",
            "STOPPED",
        ]
        await stack.start_worker()  # the partition's next owner finishes the stream
        raw = await wait_markers(stack, identity.instance_id, identity.rtms_stream_id)
        assert await session_actions(stack.settings, identity.rtms_stream_id) == [
            "STARTED",
            "HELD",
            "HELD",
            "STOPPED",
            "ENDED",
        ]
        assert stack.workers[0].connections_opened == 0  # finished, never reconnected

    for name in RAW:
        marker = raw[name][-1]
        assert marker["end_of_stream"] and marker["stop_reason"] == 6 and marker["ended"] == "STOPPED"
        assert sum(v["end_of_stream"] for v in raw[name]) == 1
        # the finisher wrote nothing of the stream itself but the rtms_stopped event
        assert marker["complete"] is False
        assert marker["counts"] == ({"EVENT": 1} if name == "rtms.raw.events" else {}), name
    assert frames_of(raw["rtms.raw.audio"]), "the killed worker's frames are there"
    assert frames_of(raw["rtms.raw.events"])[-1]["name"] == "rtms_stopped"


async def test_a_late_stop_of_the_old_stream_never_hides_the_new_one_from_a_rebuilding_worker(
    settings: Settings, kafka_topics: dict[str, str]
) -> None:
    old_meeting, new_meeting = await asyncio.gather(
        asyncio.to_thread(small_meeting, 6, 30.0), asyncio.to_thread(small_meeting, 7, 3.0)
    )
    async with ingest_stack(settings) as stack:
        old, _old_handle = stack.stream(old_meeting)
        new_id = "e" * 32
        new_handle = stack.server.add_stream(old.instance_id, new_id, new_meeting, speed=2.0, record=True)
        new = dataclasses.replace(old, rtms_stream_id=new_id, server_urls=new_handle.server_urls)
        # with no worker running: old started, new started, then the old stream's stop arrives late
        await stack.hooks.rtms_started(old)
        await stack.hooks.rtms_started(new)
        await stack.hooks.rtms_stopped(old, 1)
        worker = await stack.start_worker()  # rebuilds rtms.sessions from the partition's start
        async with asyncio.timeout(DEADLINE_S):
            while True:
                if (old.instance_id, new_id) in worker.held:
                    break
                await asyncio.sleep(0.2)
        assert (old.instance_id, old.rtms_stream_id) not in worker.held
        reason = await asyncio.wait_for(new_handle.wait_done(), DEADLINE_S)
        await stack.hooks.rtms_stopped(new, reason)
        raw = await wait_markers(stack, old.instance_id, new_id)
        old_raw = await wait_markers(stack, old.instance_id, old.rtms_stream_id)

    new_raw = of_stream(raw, new_id)
    assert_eos_last(new_raw, reason, complete=True)  # nobody held it before this worker
    assert_same_frames(new_handle.sent, new_raw)
    for name in RAW:  # the old stream was finished: never held, so markers and its stop event only
        assert old_raw[name][-1]["stop_reason"] == 1 and old_raw[name][-1]["ended"] == "STOPPED"
    assert [v["name"] for v in frames_of(old_raw["rtms.raw.events"])] == ["rtms_stopped"]
    assert not frames_of(old_raw["rtms.raw.audio"]) and not frames_of(old_raw["rtms.raw.video"])


async def test_a_worker_told_to_end_streams_on_stop_closes_them_at_zoom_with_their_markers(
    settings: Settings, kafka_topics: dict[str, str]
) -> None:
    """What `rtmsflow up` does on Ctrl-C; the default stop (positive control: the rest of this suite,
    e.g. the takeover test) leaves a stream to the next worker without markers."""
    meeting = await asyncio.to_thread(small_meeting, 8, 30.0)
    async with ingest_stack(dataclasses.replace(settings, ingest_end_streams_on_stop=True)) as stack:
        worker = await stack.start_worker()
        identity, handle = stack.stream(meeting)
        await stack.hooks.rtms_started(identity)
        await asyncio.wait_for(handle.wait_media(1000), DEADLINE_S)
        await stack.stop_workers()
        raw = await wait_markers(stack, identity.instance_id, identity.rtms_stream_id)
        reason = await asyncio.wait_for(handle.wait_done(), DEADLINE_S)  # the emulator's stream was closed
        assert worker.held == {}
    assert reason == 20  # RECEIVER_REQUEST_CLOSE: closed at our request
    assert_eos_last(raw, 20, complete=True)
    assert await session_actions(stack.settings, identity.rtms_stream_id) == [
        "STARTED",
        "HELD",
        "HELD",
        "ENDED",
    ]
