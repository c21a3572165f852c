"""`rtmsflow prune` and `rtmsflow forget`: dry run lists, `--yes` deletes, forget writes tombstones."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from click.testing import CliRunner

from rtmsflow.kafka_client import bootstrap_servers
from rtmsflow.settings import Settings
from schemas.codec import Codec
from schemas.topics import MEETINGS, SESSIONS, partition_for, session_key
from sinks.cli import forget, prune
from sinks.layout import StreamLayout
from sinks.manifest import StreamEnd, StreamTally, build_manifest, encode_manifest
from sinks.replay import groupless_consumer, read_ranges
from sinks.retention import OutsideDataDir, find_expired, meeting_dirs, parse_age, remove_tree

DAY = 86_400_000


def finished_stream(
    data: Path, meeting: str, stream: str, start_ms: int, *, manifest: str = "manifest.json"
) -> Path:
    layout = StreamLayout(data, meeting, stream, start_ms)
    layout.stream_dir.mkdir(parents=True)
    (layout.stream_dir / "audio.wav").write_bytes(b"RIFF" + bytes(100))
    tally = StreamTally(stream)
    summary = tally.summary(StreamEnd.by_idle_timeout({}), start_ms=start_ms, stop_ms=start_ms + 3_600_000)
    (layout.stream_dir / manifest).write_bytes(encode_manifest(build_manifest(meeting, [summary], {}, [])))
    return layout.stream_dir


def test_parse_age_reads_days_hours_minutes_seconds() -> None:
    assert [parse_age(a) for a in ("30d", "12h", "90m", "45s")] == [
        30 * DAY,
        12 * 3_600_000,
        90 * 60_000,
        45_000,
    ]
    with pytest.raises(ValueError):
        parse_age("30 days")


def test_only_finalized_streams_that_stopped_before_the_cutoff_expire(tmp_path: Path) -> None:
    now = 1_760_000_000_000
    old = finished_stream(tmp_path, "Old/Meeting==", "s1", now - 40 * DAY)
    old_transcript = finished_stream(
        tmp_path, "Old/Meeting==", "s2", now - 40 * DAY, manifest="transcript.manifest.json"
    )
    finished_stream(tmp_path, "New+Meeting==", "s1", now - 2 * DAY)
    writing = finished_stream(tmp_path, "Busy", "s1", now - 50 * DAY)
    (writing / ".recording.mp4.partial").write_bytes(b"...")  # the media sink is (re)building it
    unfinished = StreamLayout(tmp_path, "Half", "s1", now - 50 * DAY).stream_dir
    unfinished.mkdir(parents=True)
    (unfinished / "transcript.txt").write_text("no manifest yet\n")
    expired = find_expired(tmp_path, 30 * DAY, now)
    assert [(e.path, e.meeting_uuid) for e in expired] == [
        (old, "Old/Meeting=="),
        (old_transcript, "Old/Meeting=="),
    ]
    assert find_expired(tmp_path, 60 * DAY, now) == []  # positive control of the cut-off itself


def test_prune_dry_run_lists_and_yes_deletes(tmp_path: Path) -> None:
    now = int(time.time() * 1000)
    old = finished_stream(tmp_path, "Old/Meeting==", "s1", now - 40 * DAY)
    recent = finished_stream(tmp_path, "Recent", "s1", now - DAY)
    runner = CliRunner()
    dry = runner.invoke(prune, ["--older-than", "30d", "--data-dir", str(tmp_path)])
    assert dry.exit_code == 0, dry.output
    assert f"would delete {old}" in dry.output and str(recent) not in dry.output
    assert old.is_dir()  # a dry run deletes nothing
    done = runner.invoke(prune, ["--older-than", "30d", "--data-dir", str(tmp_path), "--yes"])
    assert done.exit_code == 0, done.output
    assert not old.exists() and not old.parent.exists()  # the empty meeting dir went too
    assert recent.is_dir()


async def _compacted(settings: Settings, topic: str, partition: int) -> list[tuple[bytes, bool]]:
    """(key, is tombstone) of every record of a partition, in order."""
    out: list[tuple[bytes, bool]] = []
    consumer = groupless_consumer(settings)
    await consumer.start()
    try:
        await read_ranges(
            consumer,
            {TopicPartition(topic, partition): None},
            lambda _tp, r: out.append((r.key, r.value is None)),
        )
    finally:
        await consumer.stop()
    return out


@pytest.mark.kafka
async def test_forget_lists_then_deletes_files_and_tombstones_the_meeting(
    settings: Settings, settings_env: dict[str, str], kafka_topics: dict[str, str], tmp_path: Path
) -> None:
    meeting, other = "Forget/Me+==", "Keep/Me=="
    data = Path(settings.data_dir)
    mine = finished_stream(data, meeting, "s1", 1_747_316_541_000)
    kept = finished_stream(data, other, "s1", 1_747_316_541_000)
    # the meeting's dir on another date is a link to files outside the data dir: never followed
    victim = finished_stream(tmp_path / "outside", "Victim==", "s1", 1_747_316_541_000)
    linked = StreamLayout(data, meeting, "s1", 1_747_316_541_000 + DAY).meeting_dir
    linked.parent.mkdir(parents=True)
    linked.symlink_to(victim.parent, target_is_directory=True)
    codec = Codec(settings.schema_registry_url, settings.topic_prefix)
    sessions, meetings = kafka_topics[SESSIONS.name], kafka_topics[MEETINGS.name]
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers(settings))
    await producer.start()
    try:
        for m, stream in ((meeting, "s1"), (meeting, "s2"), (other, "s1")):
            value: dict[str, Any] = {
                "meeting_uuid": m, "rtms_stream_id": stream, "action": "STARTED", "event": "meeting.rtms_started",
                "event_ts_ms": 1_747_316_541_000, "received_at_ms": 1_747_316_541_000,
            }  # fmt: skip
            await producer.send_and_wait(sessions, codec.encode(sessions, value), key=session_key(m, stream),
                                         partition=partition_for(m, settings.partitions))  # fmt: skip
        index = {
            "meeting_uuid": meeting,
            "partition": partition_for(meeting, settings.partitions),
            "updated_at_ms": 0,
        }
        await producer.send_and_wait(meetings, codec.encode(meetings, index), key=meeting.encode(),
                                     partition=partition_for(meeting, settings.partitions))  # fmt: skip
    finally:
        await producer.stop()

    runner = CliRunner()
    dry = await asyncio.to_thread(runner.invoke, forget, ["--meeting", meeting], env=settings_env)
    assert dry.exit_code == 0, dry.output
    assert f"would delete {mine.parent}" in dry.output
    assert f"would tombstone rtms.sessions key {meeting}|s1" in dry.output
    assert f"rtms.sessions key {meeting}|s2" in dry.output and other not in dry.output
    assert mine.is_dir()
    p = partition_for(meeting, settings.partitions)
    assert not any(tomb for _k, tomb in await _compacted(settings, sessions, p))  # dry run wrote nothing

    done = await asyncio.to_thread(runner.invoke, forget, ["--meeting", meeting, "--yes"], env=settings_env)
    assert done.exit_code == 0, done.output
    assert meeting_dirs(data, meeting) == [] and kept.is_dir()
    assert (victim / "audio.wav").is_file() and linked.is_symlink()
    session_tombs = [k for k, tomb in await _compacted(settings, sessions, p) if tomb]
    assert sorted(session_tombs) == [session_key(meeting, "s1"), session_key(meeting, "s2")]
    assert [k for k, tomb in await _compacted(settings, meetings, p) if tomb] == [meeting.encode()]


def plant_links(data: Path, outside: Path, now: int) -> dict[str, Path]:
    """Links inside the data dir that point at old, finalized-looking streams outside it: as a date
    dir, as a meeting dir, as a stream dir; plus a date dir that is a link to a file."""
    victims = {}
    for name in ("date", "meeting", "stream"):
        victims[name] = finished_stream(outside / name, "Victim==", "s1", now - 40 * DAY)
    date = victims["date"].parent.parent  # <outside>/date/<yyyy-mm-dd>
    (data / "2001-01-01").symlink_to(date, target_is_directory=True)
    real_date = StreamLayout(data, "Victim==", "s1", now - 41 * DAY).meeting_dir.parent
    real_date.mkdir(parents=True)
    (real_date / StreamLayout(data, "Victim==", "s1", 0).meeting_dir.name).symlink_to(
        victims["meeting"].parent
    )
    real_meeting = StreamLayout(data, "Other==", "s1", now - 42 * DAY).meeting_dir
    real_meeting.mkdir(parents=True)
    (real_meeting / "s1").symlink_to(victims["stream"])
    (outside / "file").write_text("not a directory")
    (data / "2001-01-02").symlink_to(outside / "file")
    return victims


def test_prune_and_forget_never_follow_links_out_of_the_data_dir(tmp_path: Path) -> None:
    now = int(time.time() * 1000)
    data, outside = tmp_path / "data", tmp_path / "outside"
    data.mkdir()
    old = finished_stream(data, "Old/Meeting==", "s1", now - 40 * DAY)  # the positive control
    victims = plant_links(data, outside, now)
    before = sorted(str(p) for p in outside.rglob("*"))

    assert [e.path for e in find_expired(data, 30 * DAY, now)] == [old]
    assert meeting_dirs(data, "Victim==") == []
    runner = CliRunner()
    done = runner.invoke(prune, ["--older-than", "30d", "--data-dir", str(data), "--yes"])
    assert done.exit_code == 0, done.output
    assert not old.exists()  # what is ours went
    assert sorted(str(p) for p in outside.rglob("*")) == before  # nothing outside was touched
    assert all((v / "audio.wav").is_file() for v in victims.values())


def test_remove_tree_refuses_links_and_paths_outside(tmp_path: Path) -> None:
    data, outside = tmp_path / "data", tmp_path / "outside"
    victim = finished_stream(outside, "Victim==", "s1", 1_747_316_541_000)
    ours = finished_stream(data, "Ours==", "s1", 1_747_316_541_000)
    link = ours.parent / "linked"
    link.symlink_to(victim)
    for path in (link, victim, link / "sub"):
        with pytest.raises(OutsideDataDir):
            remove_tree(path, data)
    assert (victim / "audio.wav").is_file()
    remove_tree(ours.parent, data)  # positive control: a real meeting dir goes, with the link in it
    assert (
        not ours.exists() and (victim / "audio.wav").is_file() and not data.joinpath(ours.parts[-3]).exists()
    )
