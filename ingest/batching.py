"""Batches per (topic, partition) for `FrameProducer`, shipped in order by one task.

`producer.send()` costs ~14 µs of CPU per record (a future, a metadata lookup, the partitioner
and the accumulator per record); appending to a `BatchBuilder` and handing the whole batch to
`producer.send_batch()` costs ~3 µs. So the producer keeps one open `Lane` per (topic, partition):
records are appended to its batch, and the lane is shipped when the batch is full or `linger_s`
after its first record. Shipping puts the lane on the `Shipper`'s queue (the producer keeps at most one
shipment per partition at the producer, the next ones wait behind it); its single task calls
`send_batch` (or `send` for a record too large for a batch) in queue order, so the batches of one
partition reach the producer in the order they were filled. The idempotent producer assigns
their sequence numbers when it drains them, exactly as for records given to `send()`.

A lane remembers, per owner (the producer's per-stream state), how many records and bytes it holds;
when the batch is acknowledged, or fails, `Shipment.settle` reports that to the owner once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Protocol

from rtmsflow.logs import get_logger

log = get_logger(__name__)


class Owner(Protocol):
    """Who gets told when its records are acknowledged (the producer's per-stream state)."""

    pending: set[asyncio.Future[None]]

    def settled(self, records: int, size: int, ok: bool) -> None: ...


class Shipment:
    """Records handed to the producer together, with who owns them. `done` resolves (always with
    None) once they are acknowledged or have failed; failures are reported to the owners."""

    __slots__ = ("topic", "partition", "done", "owners", "records", "first_at", "on_settled")

    def __init__(self, topic: str, partition: int, on_settled: Callable[[Shipment, bool], None]) -> None:
        self.topic = topic
        self.partition = partition
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.owners: dict[Owner, list[int]] = {}  # owner -> [records, bytes]
        self.records = 0
        self.first_at = time.perf_counter()
        self.on_settled = on_settled

    def add(self, owner: Owner, size: int) -> None:
        self.records += 1
        counts = self.owners.get(owner)
        if counts is None:
            self.owners[owner] = [1, size]
            owner.pending.add(self.done)
        else:
            counts[0] += 1
            counts[1] += size

    def settle(self, ok: bool) -> None:
        if self.done.done():
            return
        for owner, (records, size) in self.owners.items():
            owner.pending.discard(self.done)
            owner.settled(records, size, ok)
        self.done.set_result(None)
        self.on_settled(self, ok)


class Lane(Shipment):
    """The open batch of one (topic, partition)."""

    __slots__ = ("batch", "timer", "due")

    def __init__(self, topic: str, partition: int, batch: Any, on_settled: Callable[[Shipment, bool], None]):
        super().__init__(topic, partition, on_settled)
        self.batch = batch
        self.timer: asyncio.TimerHandle | None = None
        self.due = False  # lingered long enough, waits for its partition's outstanding batch


class Single(Shipment):
    """One record sent with `producer.send()` (too large for a batch, or a marker with headers), in
    its lane's order."""

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
