"""The processors' output: records gathered into one aiokafka batch per output topic partition.

`add` places records (a `Loc`), `send` hands the batches over, `offset_of` gives a record's offset once
acknowledged, `take_last` what a commit cycle waits for, and `check` raises a failed batch so no state is
written past a missing record."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.producer.message_accumulator import BatchBuilder
from prometheus_client import Counter


@dataclass(slots=True, eq=False)
class Batch:
    """One producer batch for an output topic partition; `future` resolves to the metadata of its
    first record once the broker has the batch."""

    topic: str  # base name
    partition: int
    builder: BatchBuilder
    count: int = 0
    future: asyncio.Future[Any] | None = None


Loc = tuple[Batch, int]  # a record sent: its batch and index in it


def offset_of(loc: Loc) -> int:
    """The offset of a sent record (its batch acknowledged; raises if the send failed)."""
    batch, index = loc
    assert batch.future is not None
    return int(batch.future.result().offset) + index


class Outbox:
    """Batches being filled and sent for one producer (see the module docstring). `prefix` turns
    base topic names into the broker's; `counted` is a Counter labelled by base topic."""

    def __init__(self, producer: AIOKafkaProducer, prefix: str, counted: Counter) -> None:
        self.producer = producer
        self.prefix = prefix
        self.counted = counted
        self.filling: dict[tuple[str, int], Batch] = {}  # output partition -> batch being filled
        self.to_send: list[Batch] = []  # started since the last `send`, in order
        self.last: dict[tuple[str, int], Loc] = {}  # last record sent per output partition
        self.error: BaseException | None = None  # the first batch that failed at the broker

    def add(
        self, topic: str, partition: int, key: bytes | None, value: bytes | None, headers: list[Any] | None
    ) -> Loc:
        """Put a record (base topic name) into its partition's batch; where it will be."""
        slot = (topic, partition)
        batch = self.filling.get(slot)
        headers = headers or []
        if (
            batch is None
            or batch.builder.append(timestamp=None, key=key, value=value, headers=headers) is None
        ):
            batch = self.filling[slot] = Batch(topic, partition, self.producer.create_batch())
            self.to_send.append(batch)
            if batch.builder.append(timestamp=None, key=key, value=value, headers=headers) is None:
                raise ValueError(f"a record for {topic} larger than the producer's max_batch_size")
        loc = (batch, batch.count)
        batch.count += 1
        return loc

    async def send(self) -> None:
        """Hand the batches `add` filled to the producer, in the order they were started. A batch
        leaves `to_send` only once the producer has it: a cancelled `send` leaves the rest for the
        next (the loop's stop sends them before its last cycle, whose state accounts for them)."""
        self.check()
        self.filling.clear()
        while self.to_send:
            b = self.to_send[0]
            b.builder.close()  # nothing else may join it: a record's offset is base + its index
            b.future = await self.producer.send_batch(b.builder, self.prefix + b.topic, partition=b.partition)
            b.future.add_done_callback(self._watch)
            del self.to_send[0]
            self.last[(b.topic, b.partition)] = (b, b.count - 1)
            self.counted.labels(b.topic).inc(b.count)

    def _watch(self, sent: asyncio.Future[Any]) -> None:
        if self.error is None:
            if sent.cancelled():
                self.error = RuntimeError("the producer cancelled a batch")
            elif sent.exception() is not None:
                self.error = sent.exception()

    def check(self) -> None:
        """Raise the first failed batch's error, if any."""
        if self.error is not None:
            raise self.error

    def take_last(self) -> dict[tuple[str, int], Loc]:
        """The last record sent per output partition since the previous call."""
        last, self.last = self.last, {}
        return last
