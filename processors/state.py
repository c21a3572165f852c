"""The processors' restart state: written to `rtms.processor.state`, read back on assignment.

`StateStore.restore` gives a partition's new owner its latest `ProcessorState` (where to re-read the raw
topics), what each output topic got after the state's `ends` (to check instead of rewriting) and the
partition's `rtms.meetings` records."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import ConsumerRecord

from processors.lanes import DEADLETTER, LATE, RAW_TOPICS, Output
from processors.meetings import fit_index
from rtmsflow.kafka_client import bootstrap_servers
from rtmsflow.logs import get_logger
from rtmsflow.settings import Settings
from schemas.codec import Codec
from schemas.limits import MAX_INDEX_BYTES
from schemas.markers import read_marker
from schemas.records import StreamEnd
from schemas.topics import MEETINGS, PROCESSOR_STATE

log = get_logger(__name__)

_BACK_STEP = 64
_CUT_MEMORY = 10_000  # records read per step backwards when looking for the partition's latest state


def output_signature(value: dict[str, Any] | None, end: StreamEnd | None) -> tuple[Any, ...]:
    """What identifies an ordered record for the restart check: lane, seq and time (utterance id
    for transcripts; stream and topic for a marker, `value` None and `end` its StreamEnd)."""
    if value is None:
        assert end is not None
        return ("end_of_stream", end["meeting_uuid"], end["rtms_stream_id"], end["topic"])
    if "utterance_id" in value:  # a partial and its final share the id
        return (
            "utterance",
            value["meeting_uuid"],
            value["utterance_id"],
            value["final"],
            value["piece_count"],
        )
    return (
        value["meeting_uuid"],
        value["rtms_stream_id"],
        value.get("stream_kind"),
        value.get("participant_id"),
        value.get("channel_id"),
        value["seq"],
        value["timestamp_ms"],
    )


@dataclass
class Restored:
    """What `StateStore.restore` found for one partition."""

    snapshot: dict[str, Any] | None
    commits: dict[str, int]
    ends: dict[str, int]
    # per ordered topic: (output_signature, offset) of each record written after the state's end
    tails: dict[str, list[tuple[tuple[Any, ...], int]]] = field(default_factory=dict)
    sources: set[tuple[str, str, int]] = field(default_factory=set)
    meetings: list[dict[str, Any]] = field(default_factory=list)


class RestartCheck:
    """Where each output topic partition ends as acknowledged (`ends`, for the next state) and, after
    a restart, what a crashed run wrote past its last state: `already_written` checks those outputs
    instead of writing them again (docs/DESIGN.md, "Processors")."""

    def __init__(self) -> None:
        self.ends: dict[tuple[str, int], int] = {}  # (output topic base, partition) -> offset after acked
        # outputs a crashed run already wrote, in order: (signature, offset)
        self.skips: dict[tuple[str, int], list[tuple[tuple[Any, ...], int]]] = {}
        self.written: dict[int, set[tuple[str, str, int]]] = {}  # late/dead-letter sources already written

    def load(self, partition: int, restored: Restored, outputs: tuple[str, ...]) -> None:
        """Take what `StateStore.restore` found for a newly assigned partition."""
        for t in outputs:
            self.ends[(t, partition)] = restored.ends[t]
            if t not in (LATE, DEADLETTER) and restored.tails[t]:
                self.skips[(t, partition)] = list(restored.tails[t])
        self.written[partition] = set(restored.sources)

    def forget(self, partition: int, outputs: tuple[str, ...]) -> None:
        """The partition was revoked: its restart checks go (its `ends` stay until it is loaded again)."""
        self.written.pop(partition, None)
        for t in outputs:
            self.skips.pop((t, partition), None)

    def acknowledged(self, topic: str, partition: int, end: int) -> None:
        """The output topic partition holds acknowledged records up to `end` (exclusive)."""
        if end > self.ends.get((topic, partition), -1):
            self.ends[(topic, partition)] = end

    def already_written(self, partition: int, out: Output) -> bool:
        """True for an output a crashed run wrote after its last state: the caller skips it."""
        if out.source is not None:
            seen = self.written.get(partition)
            return seen is not None and (out.topic, *out.source) in seen
        skip = self.skips.get((out.topic, partition))
        if not skip:
            return False
        expected, offset = skip.pop(0)
        got = output_signature(out.value, out.end)
        if got != expected:
            # Determinism broken (a bug): keep writing rather than lose records, and say so loudly.
            log.error(
                "restart: output differs from what the crashed run wrote; writing it",
                extra={"topic": out.topic, "partition": partition, "expected": expected, "got": got},
            )
            skip.clear()
            return False
        # the record is in the topic already: the next state must account for it, or a restart
        # after that state would expect it again from raw offsets it has committed past
        self.ends[(out.topic, partition)] = offset + 1
        return True


class StateStore:
    """Writes and reads back the state and index records of a processors group."""

    def __init__(self, settings: Settings, codec: Codec, producer: AIOKafkaProducer, group: str) -> None:
        self.settings = settings
        self.codec = codec
        self.producer = producer
        self.group = group
        self.prefix = settings.topic_prefix
        self.state_topic = PROCESSOR_STATE.full_name(self.prefix)
        self.meetings_topic = MEETINGS.full_name(self.prefix)
        self.reader: AIOKafkaConsumer | None = None
        self._cut: OrderedDict[str, None] = OrderedDict()  # meetings whose index was cut (logged once)

    async def start(self) -> None:
        self.reader = AIOKafkaConsumer(
            bootstrap_servers=bootstrap_servers(self.settings),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            max_partition_fetch_bytes=8 << 20,
            fetch_max_wait_ms=20,  # reads end at a known offset: no point waiting for more
        )
        await self.reader.start()

    async def stop(self) -> None:
        if self.reader is not None:
            await self.reader.stop()
            self.reader = None

    def key(self, partition: int) -> bytes:
        return f"{self.group}|{partition}".encode()

    async def write(self, partition: int, snapshot: dict[str, Any]) -> asyncio.Future[Any]:
        """Send the partition's state; the returned future resolves when the broker has it."""
        record = {"group": self.group, "partition": partition, **snapshot}
        value = self.codec.encode(self.state_topic, record)
        return await self.producer.send(self.state_topic, value, key=self.key(partition), partition=partition)

    async def write_index(self, partition: int, index: dict[str, Any]) -> asyncio.Future[Any]:
        """Send one MeetingIndex record (key = meeting), cut to fit the topic (`fit_index`)."""
        encoded: list[bytes] = []

        def size_of(record: dict[str, Any]) -> int:
            encoded[:] = [self.codec.encode(self.meetings_topic, record)]
            return len(encoded[0])

        fitted = fit_index(index, MAX_INDEX_BYTES, size_of)
        if fitted.record is index:  # it fits: encoded once, by the check
            return await self._send_index(partition, index, encoded[0])
        value = self.codec.encode(self.meetings_topic, fitted.record)
        if index["meeting_uuid"] not in self._cut:  # one line per meeting, not one per rewrite
            self._cut[index["meeting_uuid"]] = None
            while len(self._cut) > _CUT_MEMORY:
                self._cut.popitem(last=False)
            log.warning(
                "meetings index record cut to fit",
                extra={"meeting": index["meeting_uuid"], "bytes": len(value), "max_bytes": MAX_INDEX_BYTES,
                       "participants_dropped": fitted.participants_dropped,
                       "streams_dropped": fitted.streams_dropped},
            )  # fmt: skip
        return await self._send_index(partition, index, value)

    async def _send_index(self, partition: int, index: dict[str, Any], value: bytes) -> asyncio.Future[Any]:
        key = index["meeting_uuid"].encode()
        return await self.producer.send(self.meetings_topic, value, key=key, partition=partition)

    # -- restore -----------------------------------------------------------------------------------

    async def restore(self, partition: int, outputs: tuple[str, ...]) -> Restored:
        """Everything a new owner of `partition` needs: the latest state (None: never processed by
        this group; its `commits` say where to re-read each raw topic), per ordered topic the records
        written after the state's `ends` as `output_signature`s to check instead of rewriting, per
        side topic the source offsets written after `ends`, and the partition's `rtms.meetings` records."""
        reader = self._reader()
        state_tp = TopicPartition(self.state_topic, partition)
        meetings_tp = TopicPartition(self.meetings_topic, partition)
        raw = [TopicPartition(self.prefix + t, partition) for t in RAW_TOPICS]
        outs = [TopicPartition(self.prefix + t, partition) for t in outputs]
        begins = await reader.beginning_offsets([*raw, *outs, state_tp, meetings_tp])
        ends = await reader.end_offsets([*outs, state_tp, meetings_tp])
        # the state and the index first (one fetch round for both); the state is the newest record
        # with our key, normally among the last few of the partition
        found = await self._read_many(
            {
                state_tp: (max(begins[state_tp], ends[state_tp] - _BACK_STEP), ends[state_tp]),
                meetings_tp: (begins[meetings_tp], ends[meetings_tp]),
            }  # fmt: skip
        )
        snapshot = self._newest_state(found[state_tp], partition)
        if snapshot is None and ends[state_tp] - _BACK_STEP > begins[state_tp]:
            snapshot = await self._latest_state_backwards(
                state_tp, begins[state_tp], ends[state_tp] - _BACK_STEP
            )
        latest: dict[bytes, dict[str, Any]] = {}
        for r in found[meetings_tp]:
            if r.key is not None and r.value is not None:
                latest[r.key] = self.codec.decode(self.meetings_topic, r.value)
        commits = {t: begins[tp] for t, tp in zip(RAW_TOPICS, raw, strict=True)}
        written = {t: begins[tp] for t, tp in zip(outputs, outs, strict=True)}
        if snapshot is not None:
            for t in RAW_TOPICS:
                commits[t] = max(commits[t], snapshot["commits"].get(t, commits[t]))
            for t in outputs:
                written[t] = max(written[t], snapshot["ends"].get(t, written[t]))
        restored = Restored(snapshot, commits, written, meetings=list(latest.values()))
        tails = await self._read_many(
            {tp: (written[t], ends[tp]) for t, tp in zip(outputs, outs, strict=True)}
        )
        for t, tp in zip(outputs, outs, strict=True):
            records = tails[tp]
            if t in (LATE, DEADLETTER):
                for r in records:
                    v = self.codec.decode(tp.topic, r.value)
                    source = v["source_topic"] if t == LATE else v["source"]
                    restored.sources.add((t, source, v["source_offset"]))
            else:
                restored.tails[t] = [
                    (
                        output_signature(
                            None if r.value is None else self.codec.decode(tp.topic, r.value),
                            read_marker(r.headers) if r.value is None else None,
                        ),
                        r.offset,
                    )
                    for r in records
                ]
        return restored

    def _newest_state(self, records: list[ConsumerRecord[Any, Any]], partition: int) -> dict[str, Any] | None:
        key = self.key(partition)
        for r in reversed(records):
            if r.key == key and r.value is not None:
                return self.codec.decode(self.state_topic, r.value)
        return None

    async def _latest_state_backwards(
        self, tp: TopicPartition, begin: int, end: int
    ) -> dict[str, Any] | None:
        """The newest state with our key below `end` (other groups wrote after it): step back."""
        while end > begin:
            start = max(begin, end - _BACK_STEP)
            snapshot = self._newest_state((await self._read_many({tp: (start, end)}))[tp], tp.partition)
            if snapshot is not None:
                return snapshot
            end = start
        return None

    async def _read_many(
        self, ranges: dict[TopicPartition, tuple[int, int]]
    ) -> dict[TopicPartition, list[ConsumerRecord[Any, Any]]]:
        """Records of each partition in its [start, end), fetched together."""
        out: dict[TopicPartition, list[ConsumerRecord[Any, Any]]] = {tp: [] for tp in ranges}
        todo = {tp: r for tp, r in ranges.items() if r[1] > r[0]}
        if not todo:
            return out
        reader = self._reader()
        reader.assign(list(todo))
        for tp, (start, _) in todo.items():
            reader.seek(tp, start)
        remaining = set(todo)
        while remaining:
            batch = await reader.getmany(*remaining, timeout_ms=200)
            for tp, records in batch.items():
                end = todo[tp][1]
                out[tp].extend(r for r in records if r.offset < end)
            for tp in list(remaining):
                if await reader.position(tp) >= todo[tp][1]:
                    remaining.discard(tp)
        return out

    def _reader(self) -> AIOKafkaConsumer:
        if self.reader is None:
            raise RuntimeError("StateStore not started")
        return self.reader
