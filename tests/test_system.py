"""The whole stack through the real broker: the emulator plays Zoom (signed webhooks, RTMS
WebSockets, real PCM and H.264) to every stage running as its own process under the supervisor
`rtmsflow up` uses, and the tests read the files the meetings became.

Where a test disturbs the stack (a stage killed with SIGKILL, the broker stopped), "the same files as
an undisturbed run" means: processors and sinks re-run undisturbed over a copy of the *same* raw
records (`system_support.reference_files`) write byte-identical files. Two live runs of one emulated
meeting never have the same raw input (RTMS timestamps come from the wall clock), so that is the
comparison that can hold; `check_stream` then checks the files' content against the raw records.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from rtmsflow.settings import Settings
from tests.ingest_support import assert_same_frames
from tests.system_support import (
    check_stream,
    gaps_of,
    meeting_of,
    raw_records,
    running_stack,
    stack_env,
    system_stages,
    wait_finalized,
)

pytestmark = pytest.mark.kafka


def edges_only(manifest: dict, kind: str) -> bool:
    """True when every gap of `kind` touches the stream's start or end (no media lost inside)."""
    (stream,) = manifest["streams"]
    return all(
        g["start_ms"] == stream["start_ms"] or g["start_ms"] + g["duration_ms"] == stream["stop_ms"]
        for g in gaps_of(manifest, kind)
    )


async def test_three_concurrent_meetings_become_complete_files(
    settings: Settings, settings_env: dict[str, str], kafka_topics: dict[str, str], tmp_path: Path
) -> None:
    meetings = await asyncio.to_thread(lambda: [meeting_of(seed, 8.0) for seed in (1, 2, 3)])
    data = tmp_path / "data"
    env = stack_env(settings_env, settings, data)
    async with running_stack(settings, env, data, tmp_path / "logs", system_stages(settings)) as stack:
        assert stack.zoom is not None
        zoom = stack.zoom
        played = await asyncio.gather(*(zoom.start_meeting(m, seed) for seed, m in enumerate(meetings, 1)))
        reasons = await asyncio.gather(*(zoom.end_meeting(p) for p in played))
        dirs = await wait_finalized(data, [p.meeting_uuid for p in played])
        assert stack.restarts() == {}
    assert reasons == [6, 6, 6]
    raw = await raw_records(settings, dirs)
    assert len(set(dirs.values())) == 3
    for p in played:
        assert_same_frames(p.handle.sent, raw[p.meeting_uuid])  # Zoom -> Kafka: every frame, once
        manifest = check_stream(dirs[p.meeting_uuid], raw[p.meeting_uuid])  # Kafka -> files
        (stream,) = manifest["streams"]
        assert stream["ended"]["matched"] is True and stream["ended"]["stop_reason"] == 6
        assert edges_only(manifest, "audio") and edges_only(manifest, "video"), stream["gaps"]
