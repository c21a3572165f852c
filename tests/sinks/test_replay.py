"""`rtmsflow replay`: rebuilds a meeting's files from the topics, byte-identical to the live sinks',
found by scanning its partition or through the rtms.meetings index, without any consumer group."""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from emulator.media import MeetingSpec, SyntheticMeeting
from rtmsflow.kafka_client import bootstrap_servers
from rtmsflow.settings import Settings
from schemas.codec import Codec
from schemas.topics import AUDIO, MEETINGS, TRANSCRIPT, VIDEO, partition_for
from sinks.kinds import MEDIA_SINK, TRANSCRIPT_SINK
from sinks.replay import ReadRange, groupless_consumer, ranges_from_index, read_ranges, replay_meeting
from tests.ingest.support import read_topic
from tests.sinks.support import from_meeting, produce, stream_dir, wait_for

pytestmark = pytest.mark.kafka
MEETING = "rePlay/ME+==="
OTHER = "0therMeeting=="


def files_of(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


async def groups(settings: Settings) -> set[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers(settings))
    await admin.start()
    try:
        return {g[0] for g in await admin.list_consumer_groups()}
    finally:
        await admin.close()


async def test_replay_rebuilds_a_meeting_byte_identical_to_the_live_sinks(
    settings: Settings, settings_env: dict[str, str], kafka_topics: dict[str, str], tmp_path: Path
) -> None:
    meeting = SyntheticMeeting(
        MeetingSpec(seed=4, participants=2, duration_s=10, video="360p", fps=25, deskshare=True)
    )
    first = from_meeting(meeting, MEETING, "c0ffee", pause=(6000, 6500), deskshare=True)
    second = from_meeting(
        SyntheticMeeting(MeetingSpec(seed=6, participants=2, duration_s=3, video="360p", fps=25)),
        MEETING,
        "beef01",
    )
    other = from_meeting(
        SyntheticMeeting(MeetingSpec(seed=7, participants=2, duration_s=3, video="360p", fps=25)),
        OTHER,
        "d00d",
    )
    await produce(settings, [first, second, other])
    dirs = [stream_dir(settings, s) for s in (first, second, other)]
    async with MEDIA_SINK.service(settings, "live-m"), TRANSCRIPT_SINK.service(settings, "live-t"):
        await wait_for(
            lambda: all(
                (d / n).is_file() for d in dirs for n in ("manifest.json", "transcript.manifest.json")
            ),
            120,
            "the live sinks' manifests",
        )
    before = await groups(settings)
    assert {"live-m", "live-t"} <= before

    # 1. the command, with no index entry: the meeting's partition is scanned
    out = tmp_path / "replayed"
    env = {**settings_env, "RTMSFLOW_DATA_DIR": str(tmp_path / "unused")}
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "rtmsflow.cli", "replay", "--meeting", MEETING, "--out", str(out)],
        env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "replay" in done.stderr  # the progress bar's label
    for stream in (first, second):
        live, rebuilt = stream_dir(settings, stream), stream_dir(settings, stream, out)
        assert files_of(rebuilt) == files_of(live)
        assert sorted(files_of(rebuilt)) != []
    assert "deskshare.mp4" in files_of(stream_dir(settings, first, out))
    assert not stream_dir(settings, other, out).exists()  # only the meeting asked for
    assert await groups(settings) == before  # replay joined no group and committed nothing

    # 2. through the index: a MeetingIndex naming where each stream's records are
    partition = partition_for(MEETING, settings.partitions)
    streams = []
    for stream in (first, second):
        offsets = []
        for base in (AUDIO.name, VIDEO.name, TRANSCRIPT.name):
            mine = [
                (o, v) for k, v, p, o in await read_topic(settings, kafka_topics[base])
                if k == MEETING.encode() and v["rtms_stream_id"] == stream.rtms_stream_id
            ]  # fmt: skip
            offsets.append(
                {
                    "topic": base,
                    "first_offset": mine[0][0],
                    "last_offset": mine[-2][0],
                    "end_offset": mine[-1][0],
                }
            )
        streams.append(
            {
                "rtms_stream_id": stream.rtms_stream_id,
                "state": "ENDED",
                "started_at_ms": stream.origin_ms,
                "offsets": offsets,
            }
        )
    index = {
        "meeting_uuid": MEETING,
        "partition": partition,
        "streams": streams,
        "updated_at_ms": first.origin_ms,
    }
    ranges = ranges_from_index(index)  # type: ignore[arg-type]
    assert ranges[AUDIO.name].start == min(s["offsets"][0]["first_offset"] for s in streams)
    codec = Codec(settings.schema_registry_url, settings.topic_prefix)
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers(settings))
    await producer.start()
    try:
        await producer.send_and_wait(
            kafka_topics[MEETINGS.name],
            codec.encode(kafka_topics[MEETINGS.name], index),
            key=MEETING.encode(),
            partition=partition,
        )
    finally:
        await producer.stop()
    again = tmp_path / "again"
    result = await replay_meeting(dataclasses.replace(settings, data_dir=str(tmp_path / "x")), MEETING, again)
    assert result.used_index and result.partition == partition
    assert sorted(f.rtms_stream_id for f in result.finalized) == ["beef01", "beef01", "c0ffee", "c0ffee"]
    for stream in (first, second):
        assert files_of(stream_dir(settings, stream, again)) == files_of(stream_dir(settings, stream))


async def test_replay_reads_a_record_larger_than_its_fetch_sizes(
    settings: Settings, kafka_topics: dict[str, str]
) -> None:
    """Replay fetches 1 MB a partition (bounded memory), yet a topic takes records of up to 8 MB:
    the broker hands over a first batch larger than the fetch size, so a 3 MB frame is read whole."""
    topic = kafka_topics[VIDEO.name]
    big = bytes(range(256)) * (3 * 4096)  # 3 MB
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers(settings), max_request_size=8 << 20)
    await producer.start()
    try:
        for value in (b"before", big, b"after"):
            await producer.send_and_wait(topic, value, key=b"m", partition=0)
    finally:
        await producer.stop()
    seen: list[bytes] = []
    consumer = groupless_consumer(settings)
    await consumer.start()
    try:
        count = await read_ranges(
            consumer, {TopicPartition(topic, 0): None}, lambda tp, record: seen.append(record.value)
        )
    finally:
        await consumer.stop()
    assert len(big) > 1 << 20  # larger than the partition fetch size
    assert count == 3 and seen == [b"before", big, b"after"]


def test_a_stream_whose_marker_is_not_indexed_yet_is_read_to_the_partitions_end() -> None:
    # The processors index a marker once it is acknowledged; a replay started right after the live
    # sinks finalized may read an index without it and must not cut the stream there.
    def index(end_offset: int | None) -> dict[str, Any]:
        where = {"topic": AUDIO.name, "first_offset": 10, "last_offset": 40, "end_offset": end_offset}
        return {"meeting_uuid": MEETING, "partition": 0, "streams": [{"offsets": [where]}]}

    closed = ranges_from_index(index(41))  # type: ignore[arg-type]
    assert closed[AUDIO.name] == ReadRange(10, 42)
    open_range = ranges_from_index(index(None))  # type: ignore[arg-type]
    assert open_range[AUDIO.name].start == 10
    assert open_range[AUDIO.name].end > 2**62
