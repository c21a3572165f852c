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
from sinks.manifest import read_manifest
from tests.ingest.support import frames_of
from tests.support.s3 import BucketView, download_finalized
from tests.system.support import (
    assert_kafka_has_what_zoom_sent,
    assert_same_files,
    check_stream,
    distinct,
    finalized_by,
    finalized_streams,
    gaps_of,
    health,
    meeting_of,
    raw_records,
    reference_files,
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


@pytest.mark.parametrize("target", ["disk", "bucket"])
async def test_kill_9_of_processor_and_each_sink_in_turn_gives_the_undisturbed_files(
    settings: Settings,
    settings_env: dict[str, str],
    kafka_topics: dict[str, str],
    tmp_path: Path,
    target: str,
    request: pytest.FixtureRequest,
) -> None:
    """The processor, then the media sink, then the transcript sink is killed with SIGKILL while the
    meeting plays and its files are half written; the supervisor restarts each. The files equal, byte
    for byte, those of processors and sinks run undisturbed over the same raw records, and hold
    every frame and every utterance once. `bucket`: the sinks write to an S3-compatible bucket
    (s3proxy); its objects, downloaded, equal the undisturbed run's files on disk."""
    meeting = await asyncio.to_thread(meeting_of, 4, 20.0)
    data = tmp_path / "data"
    env = stack_env(settings_env, settings, data)
    written = {"audio.wav": data, "transcript.txt": data}  # where the sinks' partial files grow
    view: BucketView | None = None
    if target == "bucket":
        view = request.getfixturevalue("s3_target")
        spool = Path(view.settings.spool_dir)
        env.update(view.server.env(view.settings.data_dir), RTMSFLOW_SPOOL_DIR=str(spool))
        written = {"audio.wav": spool / "media", "transcript.txt": spool / "transcripts"}

    def finalized_now() -> dict[str, Path]:
        return finalized_streams(data) if view is None else download_finalized(view, data)

    async with running_stack(settings, env, data, tmp_path / "logs", system_stages(settings)) as stack:
        assert stack.zoom is not None
        played = await stack.zoom.start_meeting(meeting, 4)
        killed: dict[str, int] = {}

        async def kill_when(stage: str, media_ms: int, written: Any) -> None:
            await played.handle.wait_media(media_ms)
            await wait_until(written, 120)
            assert not finalized_now(), "the meeting was finalized before the kill"
            proc = stack.stage(stage).proc
            os.kill(proc.pid, signal.SIGKILL)
            killed[stage] = proc.wait()

        async def media_written() -> bool:
            return partial_size(written["audio.wav"], "audio.wav") > 100_000

        async def text_written() -> bool:
            return partial_size(written["transcript.txt"], "transcript.txt") > 0

        await kill_when("processor-0", 4_000, media_written)
        await kill_when("sink-media-0", 9_000, media_written)
        await kill_when("sink-transcripts-0", 13_000, text_written)
        await stack.zoom.end_meeting(played)

        async def finalized() -> dict[str, Path]:
            return await asyncio.to_thread(finalized_now)

        dirs = await wait_until(finalized, 150)
        assert stack.restarts() == {"processor-0": 1, "sink-media-0": 1, "sink-transcripts-0": 1}
    if view is not None:
        assert view.uploads() == []  # no multipart upload left behind by the killed sinks
    assert killed == {"processor-0": -9, "sink-media-0": -9, "sink-transcripts-0": -9}
    raw = await raw_records(settings, dirs)
    assert_kafka_has_what_zoom_sent(played.handle.sent, raw[played.meeting_uuid])
    manifest = check_stream(dirs[played.meeting_uuid], raw[played.meeting_uuid])
    assert manifest["streams"][0]["ended"]["matched"] is True
    reference = await reference_files(settings, settings_env, tmp_path, dirs)
    manifests = ("manifest.json", "transcript.manifest.json")
    assert_same_files(dirs, reference, but=frozenset(manifests))
    for name in manifests:  # the late and duplicate counts survive the restarts too
        got, want = (read_manifest(d[played.meeting_uuid] / name) for d in (dirs, reference))
        assert got == want, name
        assert (got["streams"][0]["late_count"], got["streams"][0]["duplicate_count"]) == (0, 0)  # none sent


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

        await wait_until(both_in_group, 120)
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

    def order(gap: dict[str, Any]) -> tuple[str, int]:  # not str(gap): the dicts' key orders differ
        return gap["kind"], gap["start_ms"]

    assert sorted(died, key=order) == sorted(expected, key=order), manifest["streams"][0]["gaps"]
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

            await wait_until(media_written, 120)
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


SINKS = 3  # of each kind: a count that does not divide the partitions (4) is the harder case


@pytest.mark.parametrize(
    "processors",
    [1, 2],
)
async def test_several_sinks_of_a_kind_and_n_processors_write_the_files_one_of_each_writes(
    settings: Settings,
    settings_env: dict[str, str],
    kafka_topics: dict[str, str],
    tmp_path: Path,
    processors: int,
) -> None:
    """Three of each sink (and one or two processors) share their groups' partitions; four
    meetings, one in each partition, so every member has work. Each stream is finalized once, and the files
    equal byte for byte those one processor and one sink of a kind write from the same raw records."""
    meetings = await asyncio.to_thread(lambda: [meeting_of(seed, 6.0) for seed in (11, 12, 13, 14)])
    data = tmp_path / "data"
    env = stack_env(settings_env, settings, data)
    stages = system_stages(settings, processors=processors, sinks=SINKS)
    async with running_stack(settings, env, data, tmp_path / "logs", stages) as stack:
        assert stack.zoom is not None
        zoom = stack.zoom
        members = [stack.stage(f"processor-{i}") for i in range(processors)]

        async def split() -> list[set[int]] | None:
            """The processors' partitions, once shared out: each has some, none has one twice."""
            states = [await health(p.spec.port) for p in members]
            owned = [set(s["partitions"]) for s in states if s and s["partitions"]]
            together = set().union(*owned) if owned else set()
            whole = len(owned) == processors and together == set(range(settings.partitions))
            return owned if whole and sum(map(len, owned)) == len(together) else None

        owners = await wait_until(split, 120)
        played = await asyncio.gather(
            *(zoom.start_meeting(m, seed, (p, settings.partitions))
              for p, (seed, m) in enumerate(zip((11, 12, 13, 14), meetings, strict=True)))
        )  # fmt: skip
        await asyncio.gather(*(zoom.end_meeting(p) for p in played))
        dirs = await wait_finalized(data, [p.meeting_uuid for p in played])
        sinks = [s for s in stack.sup.stages if s.spec.name.startswith("sink-")]

        async def counted() -> dict[str, int] | None:  # the counters move just after the rename
            counts = {s.spec.name: await finalized_by(s.spec.port) for s in sinks}
            return counts if sum(counts.values()) >= 2 * len(played) else None

        finalized = await wait_until(counted, 120)
        assert await split() == owners  # no rebalance moved a partition while the meetings played
        assert stack.restarts() == {}
    # each stream finalized once per kind of sink, and every member of each group finalized some
    for kind in ("media", "transcripts"):
        assert sum(n for name, n in finalized.items() if name.startswith(f"sink-{kind}-")) == 4, finalized
    assert all(finalized.values()), finalized
    raw = await raw_records(settings, dirs)
    for p in played:
        assert_kafka_has_what_zoom_sent(p.handle.sent, raw[p.meeting_uuid])
        check_stream(dirs[p.meeting_uuid], raw[p.meeting_uuid])
    reference = await reference_files(settings, settings_env, tmp_path, dirs, processors=1, sinks=1)
    assert_same_files(dirs, reference)
