"""The Kafka guarantees rtmsflow builds on, proved through the real broker: idempotent producers,
consumer groups with manual commits, no loss across `kill -9`, and co-partitioning by meeting."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import signal
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO

import pytest
from aiokafka import TopicPartition

from rtmsflow.admin import admin_client
from rtmsflow.kafka_client import make_consumer, make_producer
from rtmsflow.settings import Settings
from schemas.topics import ALL_TOPICS

pytestmark = pytest.mark.kafka

HELPER = Path(__file__).with_name("commit_after_write_consumer.py")


async def test_idempotent_producer_keeps_order_and_a_group_resumes_after_its_commit(
    settings: Settings, kafka_topics: dict[str, str]
) -> None:
    topic = kafka_topics["rtms.raw.events"]
    producer = make_producer(settings)
    await producer.start()
    try:
        sends = [await producer.send(topic, f"r{i}".encode(), key=b"meeting-1") for i in range(200)]
        metadata = await asyncio.gather(*sends)
        # The broker gave the producer an id: its batches carry sequence numbers, so a retried
        # batch is written once.
        txn = producer._txn_manager
        assert txn is not None and txn.has_pid(), "make_producer must make idempotent producers"
    finally:
        await producer.stop()
    assert len({m.partition for m in metadata}) == 1
    assert [m.offset for m in metadata] == list(range(metadata[0].offset, metadata[0].offset + 200))
    tp = TopicPartition(topic, metadata[0].partition)

    group = f"{settings.topic_prefix}g"
    first = make_consumer(topic, group_id=group, settings=settings)
    await first.start()
    seen: list[bytes] = []
    try:
        async with asyncio.timeout(60):  # only catches a hang
            while len(seen) < 120:
                batch = await first.getmany(tp, timeout_ms=1000, max_records=120 - len(seen))
                for record in batch.get(tp, []):
                    seen.append(record.value)
                    last = record.offset
        await first.commit({tp: last + 1})
    finally:
        await first.stop()
    assert seen == [f"r{i}".encode() for i in range(120)]

    second = make_consumer(topic, group_id=group, settings=settings)
    await second.start()
    rest: list[bytes] = []
    try:
        deadline = time.monotonic() + 60
        while len(rest) < 80 and time.monotonic() < deadline:
            batch = await second.getmany(tp, timeout_ms=500)
            rest += [r.value for r in batch.get(tp, [])]
    finally:
        await second.stop()
    assert rest == [f"r{i}".encode() for i in range(120, 200)]


async def test_consumer_killed_with_sigkill_resumes_from_its_committed_offset_without_loss(
    settings: Settings, kafka_topics: dict[str, str], tmp_path: Path
) -> None:
    topic = kafka_topics["rtms.raw.audio"]
    total = 3000
    producer = make_producer(settings)
    await producer.start()
    try:
        for i in range(total):
            await producer.send(topic, f"v{i}".encode(), key=f"meeting-{i % 13}".encode())
        await producer.flush()
    finally:
        await producer.stop()

    group = f"{settings.topic_prefix}sink"
    out = tmp_path / "written.txt"
    cmd = [sys.executable, str(HELPER), settings.kafka_bootstrap, topic, group, str(out), "--delay-ms", "1"]

    def written() -> list[tuple[int, int, str]]:
        if not out.exists():
            return []
        rows = []
        for line in out.read_text().splitlines():
            partition, offset, value = line.split(" ")
            rows.append((int(partition), int(offset), value))
        return rows

    log1, log2 = tmp_path / "consumer-1.log", tmp_path / "consumer-2.log"
    first = await _spawn(cmd, log1)
    try:
        await _wait_for(
            lambda: len(written()) >= 600, 60, first, log1, "the first consumer to write 600 records"
        )
        first.send_signal(signal.SIGKILL)
        await asyncio.wait_for(first.wait(), 60)
    finally:
        await _reap(first)
    at_kill = written()
    assert len(at_kill) < total, "the consumer finished before it was killed; nothing was proved"

    async with admin_client(settings) as admin:
        committed_at_kill = {
            tp.partition: meta.offset for tp, meta in (await admin.list_consumer_group_offsets(group)).items()
        }

    second = await _spawn(cmd, log2)
    expected = {f"v{i}" for i in range(total)}
    try:
        await _wait_for(
            lambda: {v for _, _, v in written()} >= expected, 90, second, log2, "every record written"
        )
        second.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(second.wait(), 60) == 0
    finally:
        await _reap(second)

    rows = written()
    assert {v for _, _, v in rows} == expected, "records were lost"
    counts = collections.Counter((p, o) for p, o, _ in rows)
    duplicates = {key for key, n in counts.items() if n > 1}
    assert all(n <= 2 for n in counts.values())
    # The only record written twice in a partition is the one written but not yet committed at the
    # kill: the restarted consumer resumes exactly at the committed offset.
    for partition, offset in duplicates:
        assert offset == committed_at_kill.get(partition, 0), (partition, offset, committed_at_kill)
    per_partition = collections.Counter(p for p, _ in duplicates)
    assert all(n == 1 for n in per_partition.values())


async def test_records_of_one_meeting_land_in_the_same_partition_on_every_topic(
    settings: Settings, kafka_topics: dict[str, str]
) -> None:
    meetings = [str(uuid.uuid4()) for _ in range(24)]
    producer = make_producer(settings)
    await producer.start()
    try:
        placed: dict[str, dict[str, int]] = collections.defaultdict(dict)
        for spec in ALL_TOPICS:
            topic = kafka_topics[spec.name]
            for meeting in meetings:
                meta = await (await producer.send(topic, b"x", key=meeting.encode()))
                placed[meeting][topic] = meta.partition
    finally:
        await producer.stop()
    for meeting, partitions in placed.items():
        assert len(set(partitions.values())) == 1, (meeting, partitions)
    # The keys really spread over partitions (so the equality above is not trivially true).
    assert len({next(iter(p.values())) for p in placed.values()}) > 1


async def _spawn(cmd: list[str], log: Path) -> asyncio.subprocess.Process:
    """Start `cmd` with its stdout and stderr in `log`."""
    with _open_for_write(log) as out:
        return await asyncio.create_subprocess_exec(*cmd, stdout=out, stderr=asyncio.subprocess.STDOUT)


def _open_for_write(path: Path) -> IO[bytes]:
    return path.open("wb")


async def _reap(proc: asyncio.subprocess.Process) -> None:
    """Make sure a helper process is gone, whatever the test did."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


async def _wait_for(
    condition: Callable[[], bool], timeout_s: float, proc: asyncio.subprocess.Process, log: Path, what: str
) -> None:
    """Poll `condition` until true; fail early with the process's output if it died."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if proc.returncode is not None:
            output = await asyncio.to_thread(log.read_text)
            pytest.fail(f"consumer exited with {proc.returncode} before {what}:\n{output[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")
        await asyncio.sleep(0.1)
