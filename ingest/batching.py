"""Batches per (topic, partition) for `FrameProducer`, shipped in order by one task.

A `Lane` ships when full or `linger_s` after its first record (one timer for all lanes: `Lingering`);
the `Shipper`'s task hands batches to `send_batch` in fill order, and `Shipment.settle` tells each
owner once how many records and bytes were acknowledged or failed."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiokafka.partitioner import DefaultPartitioner

from ingest.record_batch import RecordBatch
from rtmsflow.logs import get_logger

log = get_logger(__name__)


class Owner(Protocol):
    """Who gets told when its records are acknowledged (the producer's per-stream state)."""

    pending: set[Any]  # its shipments not settled yet (and whatever else its owner waits for)

    def settled(self, records: int, size: int, ok: bool) -> None: ...


class Shipment:
    """Records handed to the producer together, with who owns them. `done` resolves (always with
    None) once they are acknowledged or have failed; failures are reported to the owners."""

    __slots__ = ("topic", "partition", "over", "_done", "owners", "records", "first_at", "on_settled")

    def __init__(self, topic: str, partition: int, on_settled: Callable[[Shipment, bool], None]) -> None:
        self.topic = topic
        self.partition = partition
        self.over = False  # settled
        self._done: asyncio.Future[None] | None = None  # made when first asked for (a flush)
        self.owners: dict[Owner, list[int]] = {}  # owner -> [records, bytes]
        self.records = 0
        self.first_at = time.perf_counter()
        self.on_settled = on_settled

    @property
    def done(self) -> asyncio.Future[None]:
        """Resolves once the shipment is settled. Made on demand: most shipments settle with
        nobody waiting for them (a future each, and the running loop's lookup, cost more)."""
        if self._done is None:
            self._done = asyncio.get_running_loop().create_future()
            if self.over:
                self._done.set_result(None)
        return self._done

    def add(self, owner: Owner, size: int) -> None:
        self.records += 1
        counts = self.owners.get(owner)
        if counts is None:
            self.owners[owner] = [1, size]
            owner.pending.add(self)
        else:
            counts[0] += 1
            counts[1] += size

    def settle(self, ok: bool) -> None:
        if self.over:
            return
        self.over = True
        for owner, (records, size) in self.owners.items():
            owner.pending.discard(self)
            owner.settled(records, size, ok)
        if self._done is not None:
            self._done.set_result(None)
        self.on_settled(self, ok)


class Lane(Shipment):
    """The open batch of one (topic, partition)."""

    __slots__ = ("batch", "linger_until", "due")

    def __init__(
        self,
        topic: str,
        partition: int,
        batch: RecordBatch,
        on_settled: Callable[[Shipment, bool], None],
        linger_s: float = 0.0,
    ):
        super().__init__(topic, partition, on_settled)
        self.batch = batch
        self.linger_until = self.first_at + linger_s  # on the perf_counter clock
        self.due = False  # lingered long enough, waits for its partition's outstanding batch


SWEEP_S = 0.001  # `Lingering`'s timer fires at most this often: a lane ships 0-1 ms after its linger


class Lingering:
    """The lanes' linger with one timer: lanes in the order they opened, which is the order their
    linger ends (they all linger alike), and one TimerHandle armed for the oldest one, firing at
    most every `SWEEP_S`. A TimerHandle per lane (made when it opens, cancelled when it ships full
    or flushed, each a turn of the loop when it fires) cost more than the lane's records. `expired(lane)` is called for each lane whose linger is over and that `is_open(lane)`
    still says is open; a lane shipped before that is dropped from the queue when its time comes."""

    def __init__(self, is_open: Callable[[Lane], bool], expired: Callable[[Lane], None]) -> None:
        self.is_open = is_open
        self.expired = expired
        self.lanes: deque[Lane] = deque()
        self.timer: asyncio.TimerHandle | None = None

    def add(self, lane: Lane) -> None:
        self.lanes.append(lane)
        if self.timer is None:
            self._arm(lane.linger_until)

    def cancel(self) -> None:
        """Stop the timer and forget the lanes (they ship no more by themselves)."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.lanes.clear()

    def sweep(self) -> None:
        """Expire every lane whose linger is over, oldest first; re-arm for the next one."""
        self.timer = None
        now = time.perf_counter()
        lanes = self.lanes
        while lanes:
            lane = lanes[0]
            if not self.is_open(lane):
                lanes.popleft()  # shipped already (full or flushed)
            elif lane.linger_until <= now:
                lanes.popleft()
                self.expired(lane)
            else:  # not before its linger; lanes due within SWEEP_S of each other ship together
                self._arm(max(lane.linger_until, now + SWEEP_S), now)
                return

    def _arm(self, at: float, now: float | None = None) -> None:
        delay = at - (time.perf_counter() if now is None else now)
        self.timer = asyncio.get_running_loop().call_later(max(delay, 0.0), self.sweep)


class Single(Shipment):
    """One record sent with `producer.send()` (too large for a batch), in its lane's order."""

    __slots__ = ("headers", "key", "value")

    def __init__(
        self,
        topic: str,
        partition: int,
        key: bytes | None,
        value: bytes | None,
        on_settled: Callable[[Shipment, bool], None],
        headers: list[tuple[str, bytes]] | None = None,
    ):
        super().__init__(topic, partition, on_settled)
        self.key = key
        self.value = value
        self.headers = headers or []


class Shipper:
    """The one task that hands shipments to the producer, in the order they were queued."""

    def __init__(self, producer: Any) -> None:
        self.producer = producer
        self.queue: asyncio.Queue[Shipment] = asyncio.Queue()
        self.task = asyncio.create_task(self._run(), name="kafka-frames-shipper")
        self.stopped = False

    def put(self, shipment: Shipment) -> None:
        self.queue.put_nowait(shipment)

    async def stop(self) -> None:
        self.stopped = True
        self.task.cancel()
        try:
            await self.task
        except asyncio.CancelledError:
            pass
        while not self.queue.empty():  # nothing will send these any more
            self.queue.get_nowait().settle(False)

    async def _run(self) -> None:
        while True:
            item = await self.queue.get()
            try:
                if isinstance(item, Lane):
                    fut = await self.producer.send_batch(item.batch, item.topic, partition=item.partition)
                else:
                    assert isinstance(item, Single)
                    fut = await self.producer.send(
                        item.topic,
                        value=item.value,
                        key=item.key,
                        partition=item.partition,
                        headers=item.headers,
                    )
            except asyncio.CancelledError:
                item.settle(False)
                raise
            except Exception as exc:
                log.error("batch not queued", extra={"topic": item.topic, "error": repr(exc)})
                item.settle(False)
                continue
            fut.add_done_callback(lambda f, item=item: _settle(item, f))


def _settle(item: Shipment, fut: asyncio.Future[Any]) -> None:
    ok = not fut.cancelled() and fut.exception() is None
    if not ok:
        log.error(
            "records not acknowledged",
            extra={
                "topic": item.topic,
                "records": item.records,
                "error": repr(None if fut.cancelled() else fut.exception()),
            },
        )
    item.settle(ok)


_PARTITION_MEMORY = 100_000  # (topic, meeting key) -> partition, cleared when larger
_PARTITIONER = DefaultPartitioner()


class Batcher:
    """`FrameProducer`'s batches: one open `Lane` per (topic, partition), at most one shipment per
    partition at the producer (the next ones wait behind it), one `Shipper` task. `producer` is
    called for the started producer; `on_acked(topic, seconds, records)` hears of every shipment
    Kafka acknowledged, timed from its first record."""

    def __init__(
        self,
        producer: Callable[[], Any],
        linger_s: float,
        max_batch_bytes: int,
        on_acked: Callable[[str, float, int], None],
    ) -> None:
        self.producer = producer
        self.linger_s = linger_s
        self.max_batch_bytes = max_batch_bytes  # records over it go alone with send()
        self.on_acked = on_acked
        self.lanes: dict[tuple[str, int], Lane] = {}
        self.shipper: Shipper | None = None
        # at most one shipment per (topic, partition) at the producer; the next ones wait here
        self.outstanding: dict[tuple[str, int], Shipment] = {}
        self.waiting: dict[tuple[str, int], deque[Shipment]] = {}
        self.partitions: dict[str, list[int]] = {}
        self.partition_of: dict[tuple[str, bytes], int] = {}
        self.lingering = Lingering(self._is_open, self.lingered)

    async def stop(self) -> None:
        """Stop the shipper; what it had not handed to the producer fails."""
        if not self.lanes:  # only shipped lanes left in the linger queue: no timer needed
            self.lingering.cancel()
        if self.shipper is not None:
            await self.shipper.stop()
            self.shipper = None

    def append(
        self,
        owner: Owner,
        topic: str,
        key: bytes,
        value: bytes | None,
        size: int,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> Awaitable[None] | None:
        """Append a record to the open batch of its (topic, partition), opening one if needed.
        A record with headers (a marker) goes in the batch like the others. Done at once (None)
        once the partition of (topic, key) is known; the first time, an awaitable that looks it up
        and appends (await it before appending anything else)."""
        part = self.partition_of.get((topic, key))
        if part is None:
            return self._append_later(owner, topic, key, value, size, headers)
        self.append_to(part, owner, topic, key, value, size, headers)
        return None

    async def _append_later(
        self,
        owner: Owner,
        topic: str,
        key: bytes,
        value: bytes | None,
        size: int,
        headers: list[tuple[str, bytes]] | None,
    ) -> None:
        part = await self.partition(topic, key)
        self.append_to(part, owner, topic, key, value, size, headers)

    def append_known(self, owner: Owner, topic: str, key: bytes, value: bytes, size: int) -> None:
        """`append` of a record without headers whose partition is known (in `partition_of`)."""
        self.append_to(self.partition_of[(topic, key)], owner, topic, key, value, size)

    def append_to(
        self,
        part: int,
        owner: Owner,
        topic: str,
        key: bytes,
        value: bytes | None,
        size: int,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        """`append` with the record's partition known."""
        lane = self.lanes.get((topic, part))
        size_in_batch = len(key) + len(value or b"")
        if headers:
            size_in_batch += sum(len(name) + len(data) for name, data in headers)
        if size_in_batch > self.max_batch_bytes:
            if lane is not None:  # what came before it goes first
                self.ship(lane)
            single = Single(topic, part, key, value, self.settled, headers or [])
            single.add(owner, size)
            self.dispatch(single)
            return
        if lane is None:
            lane = self.open(topic, part)
        if value is not None and not headers:  # a frame
            if not lane.batch.append_plain(key, value):  # full
                self.ship(lane)
                lane = self.open(topic, part)
                lane.batch.append_plain(key, value)  # a first record always fits
        elif lane.batch.append(timestamp=None, key=key, value=value, headers=headers) is None:  # a marker
            self.ship(lane)
            lane = self.open(topic, part)
            lane.batch.append(timestamp=None, key=key, value=value, headers=headers)
        lane.add(owner, size)

    def ship_all(self) -> None:
        """Ship every open lane now (a flush)."""
        for lane in list(self.lanes.values()):
            self.ship(lane)

    def ship_owned(self, owner: Owner) -> None:
        """Ship the open lanes that hold records of `owner` (a flush of one stream)."""
        for lane in list(self.lanes.values()):
            if owner in lane.owners:
                self.ship(lane)

    async def partition(self, topic: str, key: bytes) -> int:
        """The producer's default partition for `key` (murmur2 like the Java client), cached:
        topics keep the partition count they were created with."""
        parts = self.partitions.get(topic)
        if parts is None:
            parts = self.partitions[topic] = sorted(await self.producer().partitions_for(topic))
        part: int = _PARTITIONER(key, parts, parts)
        if len(self.partition_of) >= _PARTITION_MEMORY:
            self.partition_of.clear()
        self.partition_of[(topic, key)] = part
        return part

    def open(self, topic: str, part: int) -> Lane:
        lane = Lane(topic, part, RecordBatch(self.max_batch_bytes), self.settled, self.linger_s)
        self.lanes[(topic, part)] = lane
        self.lingering.add(lane)
        return lane

    def _is_open(self, lane: Lane) -> bool:
        return self.lanes.get((lane.topic, lane.partition)) is lane

    def lingered(self, lane: Lane) -> None:
        """The lane's linger is over: ship it, unless its partition still has a batch at the
        producer; then it keeps filling and ships when that one settles."""
        if (lane.topic, lane.partition) in self.outstanding:
            lane.due = True
        else:
            self.ship(lane)

    def ship(self, lane: Lane) -> None:
        """Close the lane's batch and dispatch it (linger over, full, or flushed)."""
        if self.lanes.get((lane.topic, lane.partition)) is not lane:
            return  # already shipped
        del self.lanes[(lane.topic, lane.partition)]
        lane.batch.close()
        self.dispatch(lane)

    def dispatch(self, shipment: Shipment) -> None:
        """Hand a shipment to the shipper, or queue it behind its partition's outstanding one.

        One at a time per partition: `send_batch` would otherwise wait, inside the one shipper
        task, for the previous batch of the partition to drain (a broker round trip), stalling
        every other partition behind it."""
        tp = (shipment.topic, shipment.partition)
        if tp in self.outstanding:
            self.waiting.setdefault(tp, deque()).append(shipment)
            return
        self.outstanding[tp] = shipment
        if self.shipper is None or self.shipper.task.done():
            self.shipper = Shipper(self.producer())
        self.shipper.put(shipment)

    def settled(self, shipment: Shipment, ok: bool) -> None:
        """A shipment was acknowledged or failed: send what waited behind it on its partition."""
        tp = (shipment.topic, shipment.partition)
        if self.outstanding.get(tp) is shipment:
            del self.outstanding[tp]
            waiting = self.waiting.get(tp)
            if self.shipper is None or self.shipper.stopped:
                pass  # stopping: nothing more goes out
            elif waiting:
                nxt = waiting.popleft()
                if not waiting:
                    del self.waiting[tp]
                self.dispatch(nxt)
            else:
                lane = self.lanes.get(tp)
                if lane is not None and lane.due:
                    self.ship(lane)
        if ok:
            self.on_acked(shipment.topic, time.perf_counter() - shipment.first_at, shipment.records)
