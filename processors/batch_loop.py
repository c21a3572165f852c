"""The processors' consumer loop: raw topics in, ordered topics out, nothing lost or doubled.

One aiokafka consumer over the four raw topics, a `PartitionCore` per partition, one idempotent producer;
a commit cycle writes restart states only after their output is acknowledged and commits offsets only
after the states, and a restart checks what is already written (docs/DESIGN.md, "Processors")."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from prometheus_client import Counter, Gauge, Histogram

from processors.fetch_pace import FetchPace
from processors.frame_splice import FrameSplicer
from processors.lanes import (
    DEADLETTER,
    LATE,
    ORDERED_OF,
    RAW_TOPICS,
    TRANSCRIPT_PARTIAL,
    LaneConfig,
    Output,
    PartitionCore,
)
from processors.meetings import MeetingBook, Read, Sent
from processors.outbox import Loc, Outbox, offset_of
from processors.state import RestartCheck, StateStore
from rtmsflow.clock import now_ms
from rtmsflow.kafka_client import make_consumer, make_producer
from rtmsflow.logs import get_logger
from rtmsflow.service import RebalanceListener, Stage
from rtmsflow.settings import Settings
from schemas.codec import Codec
from schemas.limits import MAX_DEAD_LETTER_PAYLOAD_BYTES, clip_payload
from schemas.markers import marker_headers
from schemas.topics import MEETINGS, PROCESSOR_STATE

log = get_logger(__name__)

DEFAULT_GROUP = "rtmsflow-processors"
FETCH_PARTITION_BYTES = 512 << 10  # per raw topic partition and fetch: ~700 audio frames
FETCH_BYTES = 4 << 20  # per fetch: a few consumer batches of 5,000 records
OUTPUTS = (*ORDERED_OF.values(), TRANSCRIPT_PARTIAL, LATE, DEADLETTER)

EVENTS_IN = Counter("rtmsflow_processors_events_in", "Raw records read, by raw topic.", ["topic"])
EVENTS_OUT = Counter("rtmsflow_processors_events_out", "Records written, by output topic.", ["topic"])
LATE_FRAMES = Counter("rtmsflow_processors_late", "Raw records sent to rtms.late.")
DUPLICATES = Counter("rtmsflow_processors_duplicates", "Repeated raw records dropped.")
GAPS = Counter("rtmsflow_processors_gaps", "Gap records written.")
DEAD = Counter("rtmsflow_processors_dead_letters", "Raw records sent to rtms.deadletter.")
REWRITES_SKIPPED = Counter(
    "rtmsflow_processors_restart_skipped", "Outputs not written again after a restart (already there)."
)
REFETCHED = Counter(
    "rtmsflow_processors_refetched", "Raw records delivered again by the consumer after a seek (ignored)."
)
REORDER_DEPTH = Gauge("rtmsflow_processors_reorder_depth", "Frames held in reorder buffers.")
STREAMS = Gauge("rtmsflow_processors_streams", "Live streams in this worker's partitions.")
LAG = Gauge("rtmsflow_processors_lag", "Raw records not yet read, summed over assigned partitions.")
CYCLE = Histogram(
    "rtmsflow_processors_cycle_seconds",
    "Commit cycle: acks awaited, state written, offsets committed.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)


# A partition number's four raw topics belong to one member (its PartitionCore reads them all). The
# range assignor gives each member the same partition numbers of every topic; aiokafka's sticky
# assignor balances topic-partitions without regard to that, and gave one of two members every
# partition of rtms.raw.audio and rtms.raw.events and the other those of video and transcripts.
PROCESSOR_ASSIGNORS = (RangePartitionAssignor,)
_ORDERED_OUTPUTS = frozenset(ORDERED_OF.values())


@dataclass(slots=True)
class _Snapshot:
    """What one cycle writes, taken between two consumer batches (see `ProcessorLoop._snapshot`)."""

    t0: float
    pending: dict[tuple[str, int], Loc]  # last record sent per output partition
    ends: dict[tuple[str, int], int]  # output partition -> offset after acknowledged, before `pending`
    states: dict[int, dict[str, Any]]  # partition -> its core's snapshot (ends added when settled)
    sent: dict[int, Sent[Loc]]  # partition -> where its ordered records went, for the meetings index


def output_value(
    out: Output, splicer: FrameSplicer, codec: Codec, topic: str, clock: Callable[[], int]
) -> bytes | None:
    """The bytes of an output record's value on `topic` (its broker name): a frame spliced from its
    raw bytes when it can be, else encoded; a dead letter stamped with `clock()` (ms) first; None
    for a marker."""
    if out.value is None:
        return None
    if out.raw is not None and out.value["gap"] is None:
        value = splicer.splice(out.topic, out.raw, out.value)
        if value is not None:
            return value
    if out.topic == DEADLETTER:
        out.value["received_at_ms"] = clock()
        payload = out.value.get("payload") or b""
        if len(payload) > MAX_DEAD_LETTER_PAYLOAD_BYTES:  # a dead letter always fits its topic
            out.value["reason"] = (
                f"{out.value['reason']} (payload: its first {MAX_DEAD_LETTER_PAYLOAD_BYTES} of {len(payload)} bytes)"
            )
            out.value["payload"] = clip_payload(payload)
    return codec.encode(topic, out.value)


class ProcessorLoop(Stage):
    """`start()` joins the group, `run()` processes until cancelled, `stop()` runs a last cycle
    (acks, state, commit) and leaves. One loop per worker process."""

    def __init__(
        self, settings: Settings, group_id: str = DEFAULT_GROUP, *, session_timeout_ms: int = 10_000
    ):
        self.settings = settings
        self.group_id = group_id
        self.session_timeout_ms = session_timeout_ms
        self.prefix = settings.topic_prefix
        self.codec = Codec(settings.schema_registry_url, settings.topic_prefix)
        self.config = LaneConfig(settings.reorder_window_ms, settings.dedupe_horizon_ms)
        self.interval_s = settings.process_commit_interval_ms / 1000
        self.cores: dict[int, PartitionCore] = {}
        self.splicer = FrameSplicer(0, {}, {}, {})  # none until start(): the codec is prepared there
        self.books: dict[int, MeetingBook[Loc]] = {}
        self.restarts = RestartCheck()  # where the outputs end, and what a crashed run wrote already
        self.outbox: Outbox | None = None
        self.cycle_task: asyncio.Task[None] | None = None  # the background cycle (see `_snapshot`)
        self.dirty: set[int] = set()
        self.consumer: AIOKafkaConsumer | None = None
        self.pace: FetchPace | None = None  # the fetches' wait at the broker (live or idle)
        self.producer: AIOKafkaProducer | None = None
        self.state_producer: AIOKafkaProducer | None = None
        self.store: StateStore | None = None
        self.lock = asyncio.Lock()
        self.last_cycle = time.monotonic()
        self.started = False
        # per raw topic partition: the next offset to feed its core (set where it was seeked)
        self.next_offsets: dict[TopicPartition, int] = {}

    def topic(self, base: str) -> str:
        return self.prefix + base

    def _decode(self, base: str, data: bytes) -> dict[str, Any]:
        return self.codec.decode(self.prefix + base, data)

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        await self.codec.prepare(
            [self.topic(t) for t in (*RAW_TOPICS, *OUTPUTS, MEETINGS.name, PROCESSOR_STATE.name)]
        )
        self.splicer = FrameSplicer.for_codec(self.codec)
        # linger and a large batch: the cycle awaits acks anyway, so batching costs no correctness
        self.producer = make_producer(self.settings, linger_ms=5)
        await self.producer.start()
        self.outbox = Outbox(self.producer, self.prefix, EVENTS_OUT)
        # the state and index records on a producer of their own: aiokafka keeps one produce
        # request in flight per broker and producer, so a cycle's state writes queued behind (or
        # ahead of) the ordered batches and the loop's next send waited for them (0.3-0.9 s stalls
        # at times: processor_bench's latency p99 up to 882 ms, ~360 ms on their own). Order
        # between the two is kept by the cycle: outputs acknowledged, then state, then commit.
        self.state_producer = make_producer(self.settings, linger_ms=0)
        await self.state_producer.start()
        self.store = StateStore(self.settings, self.codec, self.state_producer, self.group_id)
        await self.store.start()
        self.consumer = make_consumer(
            group_id=self.group_id,
            settings=self.settings,
            partition_assignment_strategy=PROCESSOR_ASSIGNORS,
            session_timeout_ms=self.session_timeout_ms,
            heartbeat_interval_ms=1_000,
            rebalance_timeout_ms=max(self.session_timeout_ms, 10_000),
            metadata_max_age_ms=5_000,
            max_poll_interval_ms=300_000,
            # what aiokafka holds fetched but not yet handed over is bounded by these, not by the
            # backlog: 8 MB per partition / 64 MB per fetch (the shared defaults) let RSS grow with
            # how much raw input was waiting
            max_partition_fetch_bytes=FETCH_PARTITION_BYTES,
            fetch_max_bytes=FETCH_BYTES,
        )
        self.consumer.subscribe([self.topic(t) for t in RAW_TOPICS], listener=RebalanceListener(self))
        await self.consumer.start()
        self.pace = FetchPace(self.consumer)
        self.started = True
        log.info(
            "processors started",
            extra={"group": self.group_id, "window_ms": self.config.window_ms,
                   "spliced": sorted(self.splicer.topics)},
        )  # fmt: skip

    async def run(self) -> None:
        """Process until cancelled."""
        consumer = self._consumer()
        pace = self.pace
        assert pace is not None
        prefix_len = len(self.prefix)
        while True:
            batch = await consumer.getmany(timeout_ms=100, max_records=5_000)
            pace.polled(bool(batch))
            async with self.lock:
                for tp, records in batch.items():
                    core = self.cores.get(tp.partition)
                    if core is None:
                        continue  # revoked while the batch was in flight
                    base = tp.topic[prefix_len:]
                    EVENTS_IN.labels(base).inc(len(records))
                    expected = self.next_offsets.get(tp, 0)
                    for r in records:
                        if r.offset < expected:
                            # fed already: after a seek in the rebalance callback aiokafka can
                            # deliver a fetch made before it (from the group's commit) and then
                            # the same records again; a core must see each input once, in order
                            REFETCHED.inc()
                            continue
                        expected = r.offset + 1
                        outs = core.feed(base, r.offset, r.key, r.value, r.headers)
                        if outs:
                            self._queue(tp.partition, outs)
                    self.next_offsets[tp] = expected
                    self.dirty.add(tp.partition)
                await self._outbox().send()
                self._maybe_cycle()

    async def stop(self) -> None:
        """Last cycle, then leave the group and close the clients. Idempotent."""
        if self.consumer is not None:
            with contextlib.suppress(Exception):
                async with self.lock:
                    await self._outbox().send()
                    await self._cycle()
            await self.consumer.stop()
            self.consumer = None
        if self.store is not None:
            await self.store.stop()
            self.store = None
        if self.producer is not None:
            await self.producer.stop()
            self.producer = None
        if self.state_producer is not None:
            await self.state_producer.stop()
            self.state_producer = None
        self.started = False
        log.info("processors stopped", extra={"group": self.group_id})

    def _consumer(self) -> AIOKafkaConsumer:
        if self.consumer is None:
            raise RuntimeError("ProcessorLoop not started")
        return self.consumer

    # -- output ----------------------------------------------------------------------------------

    def _queue(self, partition: int, outs: list[Output]) -> None:
        """Encode `outs` (frames spliced from their raw bytes, `processors/frame_splice.py`) into
        the outbox's batches; the loop sends them after the consumer batch."""
        outbox, book = self._outbox(), self.books[partition]
        already_written = self.restarts.already_written
        for out in outs:
            if already_written(partition, out):
                REWRITES_SKIPPED.inc()
                continue
            value = output_value(out, self.splicer, self.codec, self.topic(out.topic), now_ms)
            headers = None if out.end is None else marker_headers(out.end)
            loc = outbox.add(out.topic, partition, out.key, value, headers)
            if out.stream is not None and out.topic in _ORDERED_OUTPUTS:
                if out.end is not None:
                    book.sent_marker(out.topic, loc, out.end)
                elif out.value is not None:
                    book.sent(out.stream, out.topic, loc, out.value.get("timestamp_ms"))
            elif out.topic == LATE:
                LATE_FRAMES.inc()
            elif out.topic == DEADLETTER:
                DEAD.inc()
            if out.value is not None and out.value.get("gap"):
                GAPS.inc()

    def _outbox(self) -> Outbox:
        if self.outbox is None:
            raise RuntimeError("ProcessorLoop not started")
        return self.outbox

    # -- cycle -----------------------------------------------------------------------------------
    #
    # A cycle is taken in two steps so that input never waits for the broker: `_snapshot` (no
    # awaits, with the lock held, between two consumer batches) takes each changed partition's core
    # snapshot and the location of the last record sent to every output partition; `_settle` (a
    # background task, one at a time) awaits those records' acks, then writes the state and commits
    # the raw offsets it names. The snapshot is exact for the outputs sent before it, so writing it
    # once they are acknowledged is what the blocking cycle did, while the loop goes on reading and
    # sending. A failed send or state write ends `run()` (the worker restarts from the last state).

    def _maybe_cycle(self) -> None:
        """Start a background cycle when one is due and none is running (call with the lock held)."""
        task = self.cycle_task
        if task is not None:
            if not task.done():
                return
            self.cycle_task = None
            task.result()  # raises what the cycle raised
        if time.monotonic() - self.last_cycle >= self.interval_s:
            self.cycle_task = asyncio.create_task(self._settle(self._snapshot()))

    async def _cycle(self, partitions: Iterable[int] | None = None) -> None:
        """A whole cycle, awaited: after any background one (call with the lock held)."""
        await self._await_cycle()
        await self._settle(self._snapshot(partitions))

    async def _await_cycle(self) -> None:
        task, self.cycle_task = self.cycle_task, None
        if task is not None:
            await task

    def _snapshot(self, partitions: Iterable[int] | None = None) -> _Snapshot:
        """Everything a cycle writes, as of now (no awaits: nothing is fed meanwhile)."""
        t0 = time.monotonic()
        self.last_cycle = t0
        pending = self._outbox().take_last()
        sent = {p: book.take(self.cores[p]) for p, book in self.books.items()}
        for p, book in self.books.items():
            self._log_read(p, book.read(self.cores[p]))
        targets = set(self.dirty if partitions is None else partitions) & set(self.cores)
        self.dirty -= targets
        states = {p: self.cores[p].snapshot() for p in sorted(targets)}
        return _Snapshot(t0, pending, dict(self.restarts.ends), states, sent)

    async def _settle(self, snap: _Snapshot) -> None:
        """Acks of the snapshot's outputs, then its state, then the commit (see above)."""
        consumer, store = self._consumer(), self.store
        assert store is not None
        futures = {id(loc[0]): loc[0].future for loc in snap.pending.values()}
        if futures:
            await asyncio.gather(*(f for f in futures.values() if f is not None))
        self._outbox().check()  # any batch failed, not only the last ones: no state past a hole
        ends = snap.ends
        for (topic, partition), loc in snap.pending.items():
            ends[(topic, partition)] = offset_of(loc) + 1  # raises if the send failed
            self.restarts.acknowledged(topic, partition, ends[(topic, partition)])
        for p, sent in snap.sent.items():  # acknowledged now: the meetings index may name them
            book = self.books.get(p)
            if book is not None:
                book.settle(sent, offset_of)
        offsets: dict[TopicPartition, int] = {}
        writes = []
        for p, state in snap.states.items():
            state["ends"] = {t: ends[(t, p)] for t in OUTPUTS if (t, p) in ends}
            writes.append(await store.write(p, state))
            for base, off in state["commits"].items():
                offsets[TopicPartition(self.topic(base), p)] = off
        for p in snap.states:
            book = self.books.get(p)
            for record in book.due() if book is not None else ():
                writes.append(await store.write_index(p, record))
        if writes:
            await asyncio.gather(*writes)
        if offsets:
            assigned = consumer.assignment()
            offsets = {tp: off for tp, off in offsets.items() if tp in assigned}
            if offsets:
                try:
                    await consumer.commit(offsets)
                except Exception as exc:  # a rebalance: the state written is what the next owner reads
                    log.info("commit skipped", extra={"error": repr(exc)})
        REORDER_DEPTH.set(sum(c.held for c in self.cores.values()))
        STREAMS.set(sum(len(c.streams) for c in self.cores.values()))
        CYCLE.observe(time.monotonic() - snap.t0)

    def _log_read(self, partition: int, read: Read) -> None:
        """Log the streams a core saw first and the raw-topic ends it read since the last cycle."""
        for st in read.streams:
            log.info(
                "stream seen",
                extra={"meeting_uuid": st.meeting_uuid, "rtms_stream_id": st.rtms_stream_id,
                       "stream_started_ms": st.started_ms, "partition": partition},
            )  # fmt: skip
        for raw_topic, _, end in read.ends:
            log.info(
                "stream ended on a raw topic",
                extra={"meeting_uuid": end.get("meeting_uuid"), "rtms_stream_id": end.get("rtms_stream_id"),
                       "topic": raw_topic, "ended": end.get("ended"), "counts": end.get("counts"),
                       "partition": partition},
            )  # fmt: skip

    # -- rebalance -------------------------------------------------------------------------------

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        partitions = {tp.partition for tp in revoked}
        async with self.lock:
            if self.producer is not None and self.cores:
                await self._outbox().send()
                await self._cycle(set(self.cores))
            for p in partitions:
                self._forget(p)
        log.info("partitions revoked", extra={"partitions": sorted(partitions)})

    async def on_assigned(self, assigned: set[TopicPartition]) -> None:
        consumer, store = self._consumer(), self.store
        assert store is not None
        partitions = sorted({tp.partition for tp in assigned})
        async with self.lock:
            for p in partitions:
                if p in self.cores:
                    continue
                restored = await store.restore(p, OUTPUTS)
                core = PartitionCore(p, self._decode, self.config, restored.snapshot)
                self.cores[p] = core
                book = self.books[p] = MeetingBook(p, self.settings.meetings_index_interval_ms)
                for index in restored.meetings:
                    book.load(index)
                self.restarts.load(p, restored, OUTPUTS)
                for base in RAW_TOPICS:
                    tp = TopicPartition(self.topic(base), p)
                    if tp in assigned:
                        consumer.seek(tp, restored.commits[base])
                        self.next_offsets[tp] = restored.commits[base]
                log.info(
                    "partition restored",
                    extra={
                        "partition": p,
                        "streams": len(core.streams),
                        "commits": restored.commits,
                        "already_written": {t: len(v) for t, v in restored.tails.items() if v},
                    },
                )
        log.info("partitions assigned", extra={"partitions": partitions, "group": self.group_id})

    def _forget(self, p: int) -> None:
        self.cores.pop(p, None)
        self.books.pop(p, None)
        self.restarts.forget(p, OUTPUTS)
        for tp in [tp for tp in self.next_offsets if tp.partition == p]:
            del self.next_offsets[tp]

    # -- observation -----------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """What /health reports."""
        return {
            "status": "ok" if self.started else "stopped",
            "group": self.group_id,
            "partitions": sorted(self.cores),
            "streams": sorted(f"{m}|{s}" for c in self.cores.values() for (m, s) in c.streams),
            "reorder_depth": sum(c.held for c in self.cores.values()),
        }

    async def update_lag(self) -> None:
        consumer = self.consumer
        if consumer is None:
            return
        assigned = list(consumer.assignment())
        if not assigned:
            LAG.set(0)
            return
        ends = await consumer.end_offsets(assigned)
        lag = 0
        for tp in assigned:
            with contextlib.suppress(Exception):
                lag += max(0, ends[tp] - await consumer.position(tp))
        LAG.set(lag)
