"""The processors' restart state: written to `rtms.processor.state`, read back on assignment.

A partition's state (`ProcessorState`, schemas/avro/processor_state.avsc) is one compacted record
keyed `<group>|<partition>`, rewritten at each commit cycle once every output it accounts for is
acknowledged. `StateStore.restore` gives a new owner everything it needs to go on exactly:

* the state itself (None: the partition was never processed by this group), whose `commits` say
  where to re-read each raw topic from (the beginning when there is no state);
* per ordered topic, the records written after the state's `ends` (a crashed run's output after its
  last state), as `output_signature`s the loop checks its first outputs against instead of
  writing them again;
* per side topic (`rtms.late`, `rtms.deadletter`), the source offsets written after `ends`;
* the partition's `rtms.meetings` records, so the index goes on from what it said.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import ConsumerRecord

from processors.lanes import DEADLETTER, LATE, RAW_TOPICS
from rtmsflow.settings import Settings
from schemas.codec import Codec
from schemas.markers import read_marker
from schemas.topics import MEETINGS, PROCESSOR_STATE

_BACK_STEP = 64  # records read per step backwards when looking for the partition's latest state


def output_signature(value: dict[str, Any] | None, headers: Any) -> tuple[Any, ...]:
    """What identifies an ordered record for the restart check: lane, seq and time (utterance id
    for transcripts; stream and topic for a marker)."""
    if value is None:
        end = read_marker(headers)
        assert end is not None
        return ("end_of_stream", end["meeting_uuid"], end["rtms_stream_id"], end["topic"])
    if "utterance_id" in value:
        return ("utterance", value["meeting_uuid"], value["utterance_id"], value["seq"])
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
    tails: dict[str, list[tuple[Any, ...]]] = field(default_factory=dict)
    sources: set[tuple[str, str, int]] = field(default_factory=set)
    meetings: list[dict[str, Any]] = field(default_factory=list)


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

    async def start(self) -> None:
        self.reader = AIOKafkaConsumer(
            bootstrap_servers=self.settings.bootstrap(),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            max_partition_fetch_bytes=8 << 20,
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
        """Send one MeetingIndex record (key = meeting)."""
        value = self.codec.encode(self.meetings_topic, index)
        key = index["meeting_uuid"].encode()
        return await self.producer.send(self.meetings_topic, value, key=key, partition=partition)

    # -- restore -----------------------------------------------------------------------------------

    async def restore(self, partition: int, outputs: tuple[str, ...]) -> Restored:
        """Everything a new owner of `partition` needs (see the module docstring)."""
        snapshot = await self._latest_state(partition)
        raw = [TopicPartition(self.prefix + t, partition) for t in RAW_TOPICS]
        outs = [TopicPartition(self.prefix + t, partition) for t in outputs]
        reader = self._reader()
        begins = await reader.beginning_offsets(raw + outs)
        ends = await reader.end_offsets(outs)
        commits = {t: begins[tp] for t, tp in zip(RAW_TOPICS, raw, strict=True)}
        written = {t: begins[tp] for t, tp in zip(outputs, outs, strict=True)}
        if snapshot is not None:
            for t in RAW_TOPICS:
                commits[t] = max(commits[t], snapshot["commits"].get(t, commits[t]))
            for t in outputs:
                written[t] = max(written[t], snapshot["ends"].get(t, written[t]))
        restored = Restored(snapshot, commits, written)
        for t, tp in zip(outputs, outs, strict=True):
            records = await self._read(tp, written[t], ends[tp])
            if t in (LATE, DEADLETTER):
                for r in records:
                    v = self.codec.decode(tp.topic, r.value)
                    source = v["source_topic"] if t == LATE else v["source"]
                    restored.sources.add((t, source, v["source_offset"]))
            else:
                restored.tails[t] = [
                    output_signature(
                        None if r.value is None else self.codec.decode(tp.topic, r.value), r.headers
                    )
                    for r in records
                ]
        restored.meetings = await self._meetings(partition)
        return restored

    async def _latest_state(self, partition: int) -> dict[str, Any] | None:
        tp = TopicPartition(self.state_topic, partition)
        reader = self._reader()
        begin = (await reader.beginning_offsets([tp]))[tp]
        end = (await reader.end_offsets([tp]))[tp]
        key = self.key(partition)
        while end > begin:
            start = max(begin, end - _BACK_STEP)
            found = None
            for r in await self._read(tp, start, end):
                if r.key == key and r.value is not None:
                    found = r
            if found is not None:
                return self.codec.decode(self.state_topic, found.value)
            end = start
        return None

    async def _meetings(self, partition: int) -> list[dict[str, Any]]:
        tp = TopicPartition(self.meetings_topic, partition)
        reader = self._reader()
        begin = (await reader.beginning_offsets([tp]))[tp]
        end = (await reader.end_offsets([tp]))[tp]
        latest: dict[bytes, dict[str, Any]] = {}
        for r in await self._read(tp, begin, end):
            if r.key is not None and r.value is not None:
                latest[r.key] = self.codec.decode(self.meetings_topic, r.value)
        return list(latest.values())

    async def _read(self, tp: TopicPartition, start: int, end: int) -> list[ConsumerRecord[Any, Any]]:
        """Records of `tp` in [start, end)."""
        out: list[ConsumerRecord[Any, Any]] = []
        if end <= start:
            return out
        reader = self._reader()
        reader.assign([tp])
        reader.seek(tp, start)
        while await reader.position(tp) < end:
            batch = await reader.getmany(tp, timeout_ms=500)
            for r in batch.get(tp, ()):
                if r.offset < end:
                    out.append(r)
        return out

    def _reader(self) -> AIOKafkaConsumer:
        if self.reader is None:
            raise RuntimeError("StateStore not started")
        return self.reader
