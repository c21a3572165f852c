"""`ingest.batching` without a broker: the lanes' linger (one timer for every lane), a lane shipped
full before its linger, a lane whose partition still has a batch at the producer; and
`FrameProducer` queueing records at once, or in order behind one that waits."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

from aiokafka.record.default_records import DefaultRecordBatch

from ingest.backend import EventData, StreamSession
from ingest.batching import SWEEP_S, Batcher
from ingest.producer import FrameProducer
from ingest.record_batch import RecordBatch
from rtmsflow.settings import Settings
from schemas.codec import Codec

LINGER_S = 0.02


def records(batch: RecordBatch) -> list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]]:
    """A shipped batch's records (key, value, headers), read back by aiokafka's own batch reader."""
    data = bytes(batch._build())
    read = DefaultRecordBatch(data)
    assert read.validate_crc()
    return [(r.key, r.value, list(r.headers)) for r in read]


class BatchingProducer:
    """aiokafka's batch API: each shipped batch's future is resolved by the test (or at once)."""

    def __init__(self, partitions: int = 4, auto_ack: bool = False) -> None:
        self.partitions = partitions
        self.auto_ack = auto_ack
        self.shipped: list[tuple[str, int, RecordBatch, asyncio.Future[Any], float]] = []

    async def send_batch(self, batch: RecordBatch, topic: str, *, partition: int) -> asyncio.Future[Any]:
        assert batch.closed
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.auto_ack:
            fut.set_result(None)
        self.shipped.append((topic, partition, batch, fut, time.perf_counter()))
        return fut

    async def send(self, topic: str, value: Any = None, key: Any = None, **kw: Any) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.auto_ack:
            fut.set_result(None)
        batch = RecordBatch(1 << 20)  # the record as a batch of one, to read like the others
        batch.append(timestamp=None, key=key, value=value, headers=kw.get("headers"))
        batch.close()
        self.shipped.append((topic, kw.get("partition", -1), batch, fut, time.perf_counter()))
        return fut

    async def partitions_for(self, topic: str) -> set[int]:
        return set(range(self.partitions))

    async def flush(self) -> None:
        pass

    def ack_all(self) -> None:
        for *_, fut, _ in self.shipped:
            if not fut.done():
                fut.set_result(None)


class Owner:
    def __init__(self) -> None:
        self.pending: set[asyncio.Future[None]] = set()
        self.acked = self.failed = 0

    def settled(self, records: int, size: int, ok: bool) -> None:
        if ok:
            self.acked += records
        else:
            self.failed += records


def make_batcher(producer: BatchingProducer, max_batch_bytes: int = 1 << 20) -> Batcher:
    return Batcher(lambda: producer, LINGER_S, max_batch_bytes, lambda topic, seconds, records: None)


async def append(batcher: Batcher, owner: Owner, topic: str, key: bytes, value: bytes = b"v") -> int:
    """Append one record; its partition."""
    waiting = batcher.append(owner, topic, key, value, len(value))
    if waiting is not None:
        await waiting
    return batcher.partition_of[(topic, key)]


async def until(condition: Any, timeout_s: float = 30.0) -> None:
    """Wait until `condition` holds, looking every loop turn (the lanes' timer runs meanwhile); the
    deadline only catches a hang."""
    async with asyncio.timeout(timeout_s):
        for _ in itertools.count():
            if condition():
                return
            await asyncio.sleep(0.001)


async def spin(seconds: float) -> None:
    """Let the loop turn for `seconds` without sleeping (timers fire as they are due)."""
    until_at = time.perf_counter() + seconds
    for _ in range(1_000_000):
        if time.perf_counter() >= until_at:
            return
        await asyncio.sleep(0)


async def test_each_lane_ships_its_linger_after_its_first_record_in_the_order_they_opened() -> None:
    producer = BatchingProducer(auto_ack=True)
    batcher = make_batcher(producer)
    owner = Owner()
    keys = [b"meeting-%d==" % i for i in range(40)]
    opened: dict[int, float] = {}  # id of a lane's batch -> when the lane opened
    for i, key in enumerate(keys):
        topic = ("t.audio", "t.video")[i % 2]
        part = await append(batcher, owner, topic, key)
        opened.setdefault(id(batcher.lanes[(topic, part)].batch), time.perf_counter())
        assert batcher.lingering.timer is not None  # one timer, however many lanes are open
        await asyncio.sleep(0.002)  # lanes open over ~80 ms: several lingers
    await until(lambda: owner.acked == len(keys))
    assert not batcher.lanes
    assert sorted(id(batch) for _, _, batch, _, _ in producer.shipped) == sorted(opened)
    for _, _, batch, _, at in producer.shipped:
        assert at - opened[id(batch)] >= LINGER_S * 0.95  # not before its linger
    order = [opened[id(batch)] for _, _, batch, _, _ in producer.shipped]
    assert order == sorted(order)  # in the order they opened
    await until(lambda: batcher.lingering.timer is None)  # nothing left: the timer is not re-armed
    assert not batcher.lingering.lanes
    await batcher.stop()


async def test_lanes_whose_linger_ends_within_a_sweep_ship_on_one_timer() -> None:
    producer = BatchingProducer(partitions=64, auto_ack=True)
    batcher = make_batcher(producer)
    owner = Owner()
    sweeps = 0
    sweep = batcher.lingering.sweep

    def counted() -> None:
        nonlocal sweeps
        sweeps += 1
        sweep()

    batcher.lingering.sweep = counted  # type: ignore[method-assign]
    started = time.perf_counter()
    for i in range(240):  # a lane opened every ~0.15 ms (~36 ms), the loop turning meanwhile
        await append(batcher, owner, f"t.{i % 4}", b"meeting-%d==" % i)
        await spin(0.00015)
    spread = time.perf_counter() - started
    await until(lambda: owner.acked == 240)
    assert sweeps <= spread / SWEEP_S + 5  # not one per lane
    await batcher.stop()


async def test_a_lane_shipped_full_leaves_the_next_lane_of_its_partition_its_own_linger() -> None:
    producer = BatchingProducer(partitions=1, auto_ack=True)
    # a header and two of these records (11-12 bytes each: key "m==", value "v") fit; a third not
    batcher = make_batcher(producer, max_batch_bytes=90)
    owner = Owner()
    for _ in range(2):
        await append(batcher, owner, "t.audio", b"m==")
    await asyncio.sleep(LINGER_S / 2)
    opened = time.perf_counter()
    await append(batcher, owner, "t.audio", b"m==")  # full: the first lane ships, a new one opens
    await until(lambda: len(producer.shipped) == 1)
    assert producer.shipped[0][2].record_count() == 2
    await until(lambda: len(producer.shipped) == 2)
    # the first lane's linger passing did not ship the second lane early
    assert producer.shipped[1][4] - opened >= LINGER_S * 0.95
    await until(lambda: owner.acked == 3)
    await batcher.stop()


async def test_a_lingered_lane_waits_for_its_partitions_batch_at_the_producer() -> None:
    producer = BatchingProducer(partitions=1)
    batcher = make_batcher(producer)
    owner = Owner()
    await append(batcher, owner, "t.audio", b"m==")
    await until(lambda: len(producer.shipped) == 1)  # lingered, shipped, not acknowledged
    await append(batcher, owner, "t.audio", b"m==", b"second")
    await append(batcher, owner, "t.audio", b"m==", b"third")
    lane = batcher.lanes[("t.audio", 0)]
    await until(lambda: lane.due)  # its linger is over...
    assert len(producer.shipped) == 1  # ...but the partition has one out: it waits
    producer.ack_all()
    await until(lambda: len(producer.shipped) == 2)
    assert records(producer.shipped[1][2]) == [(b"m==", b"second", []), (b"m==", b"third", [])]
    producer.ack_all()
    await until(lambda: owner.acked == 3)
    assert owner.failed == 0 and not owner.pending
    await batcher.stop()


async def test_a_marker_goes_in_its_lanes_batch_between_the_records_around_it() -> None:
    producer = BatchingProducer(partitions=1, auto_ack=True)
    batcher = make_batcher(producer)
    owner = Owner()
    await append(batcher, owner, "t.audio", b"m==", b"before")
    marker = [("rtmsflow.control", b"progress")]
    assert batcher.append(owner, "t.audio", b"m==", None, 0, marker) is None
    await append(batcher, owner, "t.audio", b"m==", b"after")
    await until(lambda: owner.acked == 3)
    assert len(producer.shipped) == 1  # one batch, not the lane cut in two around a send()
    batch = producer.shipped[0][2]
    assert records(batch) == [(b"m==", b"before", []), (b"m==", None, marker), (b"m==", b"after", [])]
    await batcher.stop()


SESSION = StreamSession(
    "meet==", "stream-b", "wss://x.zoom.us", started_ms=900, fresh=True, media_origin_ms=900
)


def event(body_bytes: int) -> EventData:
    return EventData(6, "active_speaker", 999, "x" * body_bytes, 2, 16778240, "Ann")


async def test_a_record_that_need_not_wait_does_not_pass_one_that_waits_for_room() -> None:
    """With batches: the third record fits the window at once, the second must wait for room;
    the third is not queued before it (the quick path stays out while the ordered one waits)."""
    settings = Settings(kafka_bootstrap="unused:9092", topic_prefix="p.")
    producer = BatchingProducer()
    codec = Codec(settings.schema_registry_url, settings.topic_prefix)
    frames = FrameProducer(
        settings, producer=producer, codec=codec, max_in_flight=10, max_in_flight_bytes=3_000,  # type: ignore[arg-type]
        linger_s=LINGER_S,
    )  # fmt: skip
    await frames.start()
    await frames.event(SESSION, event(2_000))  # in flight: ~2 KB of the 3 KB
    large = asyncio.create_task(frames.event(SESSION, event(1_500)))
    small = asyncio.create_task(frames.event(SESSION, event(10)))
    await asyncio.sleep(0)  # both started: the large one waits for room, the small one behind it
    await until(lambda: len(producer.shipped) == 1)
    assert not large.done() and not small.done()
    producer.auto_ack = True
    producer.ack_all()
    await asyncio.wait_for(asyncio.gather(large, small), 10)
    await frames.flush()
    topic = frames._topics["rtms.raw.events"]
    values = [
        v
        for t, _, batch, _, _ in producer.shipped
        if t == topic
        for _, v, _ in records(batch)
        if v is not None
    ]
    seqs = [codec.decode(topic, v)["ingest_seq"] for v in values]
    assert seqs == [0, 1, 2]  # the small one went behind the large one, not before it
    await frames.stop()


async def test_a_flush_waits_until_its_streams_batches_are_acknowledged() -> None:
    settings = Settings(kafka_bootstrap="unused:9092", topic_prefix="p.")
    producer = BatchingProducer()
    frames = FrameProducer(settings, producer=producer, linger_s=LINGER_S)  # type: ignore[arg-type]
    await frames.start()
    await frames.event(SESSION, event(10))
    flushing = asyncio.create_task(frames.flush(SESSION))
    await until(lambda: len(producer.shipped) == 1)  # shipped at once by the flush
    await asyncio.sleep(LINGER_S)
    assert not flushing.done()  # not acknowledged yet
    producer.ack_all()
    await asyncio.wait_for(flushing, 2)
    await frames.event(SESSION, event(10))
    frames._batcher.ship_all()
    await until(lambda: len(producer.shipped) == 2)
    producer.ack_all()
    await until(lambda: not any(stream.pending for stream in frames._streams.values()))
    flush = frames.flush(SESSION)
    try:  # settled before anyone waited: the flush returns without suspending once
        flush.send(None)
    except StopIteration:
        pass
    else:
        raise AssertionError("the flush waited for batches already acknowledged")
    finally:
        flush.close()
    await frames.stop()
