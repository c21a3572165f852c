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
import dataclasses
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from rtmsflow.admin import ensure_topics
from rtmsflow.broker import LocalKafka
from rtmsflow.settings import Settings
from schemas.topics import ALL_TOPICS
from tests.ingest_support import frames_of
from tests.system_support import (
    assert_kafka_has_what_zoom_sent,
    check_stream,
    distinct,
    finalized_streams,
    gaps_of,
    health,
    meeting_of,
    raw_records,
    running_stack,
    stack_env,
    system_stages,
    wait_finalized,
    wait_until,
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
        # Zoom -> Kafka: every frame, once, in order; then Kafka -> files
        assert_kafka_has_what_zoom_sent(p.handle.sent, raw[p.meeting_uuid])
        manifest = check_stream(dirs[p.meeting_uuid], raw[p.meeting_uuid])
        (stream,) = manifest["streams"]
        assert stream["ended"]["matched"] is True and stream["ended"]["stop_reason"] == 6
        assert edges_only(manifest, "audio") and edges_only(manifest, "video"), stream["gaps"]


def partial_size(data: Path, name: str) -> int:
    """Bytes the sinks have written so far to `name` of the (one) stream being recorded."""
    return sum(p.stat().st_size for p in data.glob(f"*/*/*/.{name}.partial"))


def hole_at_takeover(frames: list[dict[str, Any]], step_ms: int) -> tuple[int, int, int]:
    """(end of the last frame of the first holding, start of the first frame of the second, frames
    before): where the dead worker's output stops and the survivor's begins."""
    epochs = [v["ingest_epoch"] for v in frames]
    first = epochs[0]
    n = epochs.index(next(e for e in epochs if e != first))
    assert set(epochs[n:]) == {epochs[n]} and set(epochs[:n]) == {first}, "not one holding, then one other"
    return frames[n - 1]["timestamp_ms"] + step_ms, frames[n]["timestamp_ms"], n


async def test_kill_9_of_the_ingest_worker_leaves_exactly_its_lost_stretch_as_an_ingest_died_gap(
    settings: Settings, settings_env: dict[str, str], kafka_topics: dict[str, str], tmp_path: Path
) -> None:
    """The worker holding the meeting is killed with SIGKILL mid-meeting (and not restarted); the
    other worker of the group takes the meeting over. What the dead one had received but not produced
    is gone (Zoom cannot re-send it), and video Zoom sent while nobody was connected is gone too: the
    files show exactly that stretch as an INGEST_DIED gap, keep every frame that reached Kafka at its
    stream time (A/V sync), and hold none twice."""
    meeting = await asyncio.to_thread(meeting_of, 5, 16.0)
    data = tmp_path / "data"
    env = stack_env(settings_env, settings, data)
    stages = system_stages(settings, workers=2)
    async with running_stack(settings, env, data, tmp_path / "logs", stages) as stack:
        assert stack.zoom is not None
        workers = [stack.stage("ingest-worker-0"), stack.stage("ingest-worker-1")]

        async def both_in_group() -> bool:
            states = [await health(w.spec.port) for w in workers]
            return all(s and s["partitions"] for s in states)

        await wait_until(both_in_group, 60)
        played = await stack.zoom.start_meeting(meeting, 5)
        await played.handle.wait_media(5_000)
        states = [await health(w.spec.port) for w in workers]
        (holder,) = [w for w, s in zip(workers, states, strict=True) if s and s["meetings"] == 1]
        holder.stopping = True  # the supervisor must not restart it: the survivor takes over
        assert holder.proc is not None
        os.kill(holder.proc.pid, signal.SIGKILL)
        holder.proc.wait()
        await stack.zoom.end_meeting(played)
        dirs = await wait_finalized(data, [played.meeting_uuid], timeout_s=150)
    raw = (await raw_records(settings, dirs))[played.meeting_uuid]
    manifest = check_stream(dirs[played.meeting_uuid], raw)  # every frame in Kafka, once, in place
    audio, video = distinct(raw["rtms.raw.audio"]), distinct(raw["rtms.raw.video"])
    assert len(audio) == len(frames_of(raw["rtms.raw.audio"])), "an audio frame reached Kafka twice"
    assert len(video) == len(frames_of(raw["rtms.raw.video"])), "a video frame reached Kafka twice"

    # the audio the emulator sent that never reached Kafka is exactly the stretch between the holdings
    a_start, a_end, n = hole_at_takeover(audio, 20)
    sent = sorted(f.timestamp for f in played.handle.sent if f.channel == "audio")
    in_kafka = {v["timestamp_ms"] for v in audio}
    assert [ts for ts in sent if ts not in in_kafka] == list(range(a_start, a_end, 20))
    assert 0 < n < len(audio)  # positive control: both holdings wrote audio
    v_start, v_end, _ = hole_at_takeover(video, 100)  # 10 fps
    assert v_end - v_start > 300  # Zoom does not buffer video: the takeover always loses some

    died = [g for g in manifest["streams"][0]["gaps"] if g.get("reason") == "INGEST_DIED"]
    expected = [{"start_ms": v_start, "kind": "video", "participant_id": 0, "duration_ms": v_end - v_start,
                 "reason": "INGEST_DIED"}]  # fmt: skip
    if a_end > a_start:
        expected.append({"start_ms": a_start, "kind": "audio", "participant_id": 0,
                         "duration_ms": a_end - a_start, "reason": "INGEST_DIED"})  # fmt: skip
    assert sorted(died, key=str) == sorted(expected, key=str), manifest["streams"][0]["gaps"]
    others = [g for g in manifest["streams"][0]["gaps"] if g.get("reason") != "INGEST_DIED"]
    assert edges_only({"streams": [{**manifest["streams"][0], "gaps": others}]}, "audio"), others
    assert edges_only({"streams": [{**manifest["streams"][0], "gaps": others}]}, "video"), others
    print(f"takeover: {len(sent) - len(in_kafka)} audio frames lost, video hole {v_end - v_start} ms")


def reusable(port: int) -> bool:
    """Whether the broker can listen on `port` again: bound as the JVM binds (SO_REUSEADDR), so the
    connections the stopped broker closed (TIME_WAIT on its port) do not count as a listener."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


async def test_broker_stopped_mid_meeting_and_started_again_loses_nothing(
    settings: Settings, settings_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A broker of the test's own is stopped while the meeting plays and the sinks write, kept down
    for a few seconds, and started again on the same address: every frame Zoom sent reaches Kafka
    once and the files hold all of it."""
    # LocalKafka keeps its address on a restart only if its old port binds without SO_REUSEADDR,
    # which fails for a minute after it had clients (TIME_WAIT); the broker itself could bind it
    monkeypatch.setattr("rtmsflow.broker._port_is_free", reusable)
    broker = LocalKafka(tmp_path / "kafka")
    await asyncio.to_thread(broker.fetch)
    bootstrap = await asyncio.to_thread(broker.start, 120, die_with_caller=True)
    try:
        own = dataclasses.replace(settings, kafka_bootstrap=bootstrap)
        await ensure_topics(own, ALL_TOPICS)
        meeting = await asyncio.to_thread(meeting_of, 6, 20.0)
        data = tmp_path / "data"
        env = stack_env(settings_env, own, data)
        async with running_stack(own, env, data, tmp_path / "logs", system_stages(own)) as stack:
            assert stack.zoom is not None
            played = await stack.zoom.start_meeting(meeting, 6)
            await played.handle.wait_media(4_000)

            async def media_written() -> bool:
                return partial_size(data, "audio.wav") > 0

            await wait_until(media_written, 60)
            t0 = time.monotonic()
            await asyncio.to_thread(broker.stop)
            await asyncio.sleep(3)  # the outage itself (it decides nothing): the broker stays down
            assert await asyncio.to_thread(broker.start, 120, die_with_caller=True) == bootstrap
            down_s = time.monotonic() - t0
            assert not finalized_streams(data), "the meeting was over before the broker came back"
            await stack.zoom.end_meeting(played)
            dirs = await wait_finalized(data, [played.meeting_uuid], timeout_s=180)
            restarts = stack.restarts()
        raw = (await raw_records(own, dirs))[played.meeting_uuid]
    finally:
        await asyncio.to_thread(broker.stop)
    print(f"broker down {down_s:.1f} s; stages restarted by the supervisor: {restarts or 'none'}")
    assert_kafka_has_what_zoom_sent(played.handle.sent, raw)
    manifest = check_stream(dirs[played.meeting_uuid], raw)
    (stream,) = manifest["streams"]
    assert stream["ended"]["matched"] is True
    assert edges_only(manifest, "audio") and edges_only(manifest, "video"), stream["gaps"]
