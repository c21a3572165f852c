"""`rtmsflow replay`: rebuild a meeting's files from the ordered topics, byte-identical to the sinks'.

Finds the meeting through `rtms.meetings` (or a scan of its partition), reads it group-less (assign +
seek) and feeds the live sinks' cores and builders, with each recording's muxer in a process of its own
(docs/DESIGN.md, "Replay, prune, forget, tail")."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from aiokafka import AIOKafkaConsumer, TopicPartition

from rtmsflow.kafka_client import bootstrap_servers
from rtmsflow.logs import get_logger
from rtmsflow.settings import Settings
from schemas.codec import Codec, CodecError
from schemas.records import MeetingIndex
from schemas.topics import AUDIO, CHAT, MEETINGS, TRANSCRIPT, VIDEO, partition_for
from sinks.bucket import parse_target
from sinks.kinds import MEDIA_SINK, TRANSCRIPT_SINK
from sinks.stream_files import Finalized
from sinks.stream_sink import SinkCore

log = get_logger(__name__)

REPLAYED_TOPICS = (AUDIO.name, VIDEO.name, TRANSCRIPT.name, CHAT.name)
_OPEN_END = (1 << 63) - 2  # a range's last offset that `read_ranges` cuts at the partition's end
Progress = Callable[[int], None]


@dataclass(frozen=True)
class ReadRange:
    """Offsets [start, end) of one topic's partition to read."""

    start: int
    end: int

    @property
    def size(self) -> int:
        return max(0, self.end - self.start)


def ranges_from_index(index: MeetingIndex, topics: Sequence[str] = REPLAYED_TOPICS) -> dict[str, ReadRange]:
    """Per topic (base name) the range covering every stream's records and marker, from the index.

    A topic no stream has offsets for is left out (the caller scans it). A stream whose marker the
    index does not list yet (the processors index a marker once it is acknowledged, after the sinks
    may have seen it) is read to the partition's current end: never a stream cut at a stale index."""
    out: dict[str, ReadRange] = {}
    for stream in index.get("streams") or []:
        for where in stream.get("offsets") or []:
            topic = where["topic"]
            if topic not in topics:
                continue
            marker = where.get("end_offset")
            last = _OPEN_END if marker is None else max(where["last_offset"], marker)
            old = out.get(topic)
            start = where["first_offset"] if old is None else min(old.start, where["first_offset"])
            end = last + 1 if old is None else max(old.end, last + 1)
            out[topic] = ReadRange(start, end)
    return out


def in_window(index: MeetingIndex, since_ms: int | None, until_ms: int | None) -> bool:
    """True when one of the meeting's streams started in [since, until)."""
    for stream in index.get("streams") or []:
        start = stream["started_at_ms"]
        if (since_ms is None or start >= since_ms) and (until_ms is None or start < until_ms):
            return True
    return False


@dataclass
class ReplayResult:
    """What a replay wrote."""

    meeting_uuid: str
    partition: int
    used_index: bool
    records: int = 0
    finalized: list[Finalized] = field(default_factory=list)
    finalize_seconds: float = 0.0  # the longest finalize (close, fsync, rename, manifest)


def groupless_consumer(settings: Settings) -> AIOKafkaConsumer:
    # group_id None: no group, no commits; assign + seek only.
    # Fetch sizes: what aiokafka holds fetched but not yet handed over is most of a rebuild's
    # memory. 1 MB a partition, 4 MB a fetch kept a 10- and a 60-minute rebuild at ~90 MB peak
    # RSS (8 MB / 64 MB: 120-153 MB, higher for longer meetings) at the same speed; a record
    # larger than that still comes (brokers return the first batch whatever its size).
    return AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers(settings),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        max_partition_fetch_bytes=2 << 20,
        fetch_max_bytes=8 << 20,
    )


async def partition_count(consumer: AIOKafkaConsumer, topic: str) -> int:
    """The topic's partition count, from the broker's metadata (not from the settings: a tool run
    against another deployment must still find the meeting's partition)."""
    # The consumer's own metadata only covers assigned topics; fetch the cluster's for this one.
    cluster = await consumer._client.fetch_all_metadata()
    parts = cluster.partitions_for_topic(topic)
    if not parts:
        raise RuntimeError(f"topic {topic} does not exist (wrong RTMSFLOW_TOPIC_PREFIX or broker?)")
    return len(parts)


async def read_indexes(settings: Settings, meeting_uuid: str | None = None) -> dict[str, MeetingIndex]:
    """The latest `rtms.meetings` entry of one meeting (its partition only) or of every meeting;
    a tombstone removes the entry."""
    topic = MEETINGS.full_name(settings.topic_prefix)
    codec = Codec(settings.schema_registry_url, settings.topic_prefix)
    consumer = groupless_consumer(settings)
    await consumer.start()
    try:
        count = await partition_count(consumer, topic)
        parts = [partition_for(meeting_uuid, count)] if meeting_uuid is not None else list(range(count))
        tps = [TopicPartition(topic, p) for p in parts]
        out: dict[str, MeetingIndex] = {}
        wanted = meeting_uuid.encode() if meeting_uuid is not None else None

        def take(key: bytes | None, value: bytes | None) -> None:
            if key is None or (wanted is not None and key != wanted):
                return
            if value is None:
                out.pop(key.decode(), None)
                return
            try:
                out[key.decode()] = cast(MeetingIndex, codec.decode(topic, value))
            except CodecError as exc:
                log.error("unreadable meetings index record skipped", extra={"error": str(exc)})

        await read_ranges(consumer, {tp: None for tp in tps}, lambda tp, r: take(r.key, r.value))
        return out
    finally:
        await consumer.stop()


async def read_ranges(
    consumer: AIOKafkaConsumer,
    ranges: Mapping[TopicPartition, ReadRange | None],
    handle: Callable[[TopicPartition, Any], None],
    *,
    hold: Callable[[], set[TopicPartition]] | None = None,
    progress: Progress | None = None,
) -> int:
    """Read each partition over its range (None: from the beginning to the current end), handing
    every record to `handle`; `hold()` names partitions to pause for now. Returns records read."""
    consumer.assign(list(ranges))
    begins = await consumer.beginning_offsets(list(ranges))
    ends = await consumer.end_offsets(list(ranges))
    bounds: dict[TopicPartition, ReadRange] = {}
    for tp, wanted in ranges.items():
        bound = wanted or ReadRange(begins[tp], ends[tp])
        bound = ReadRange(max(bound.start, begins[tp]), min(bound.end, ends[tp]))
        bounds[tp] = bound
        consumer.seek(tp, bound.start)
    remaining = {tp for tp, b in bounds.items() if b.size > 0}
    count = 0
    while remaining:
        held = (hold() if hold else set()) & remaining
        if held == remaining:
            held = set()  # never hold every partition: the one that is behind must move
        for tp in remaining:
            if tp in held:
                consumer.pause(tp)
            else:
                consumer.resume(tp)
        batch = await consumer.getmany(*(remaining - held), timeout_ms=500, max_records=2000)
        for tp, records in batch.items():
            before = count
            for record in records:
                if record.offset >= bounds[tp].end:
                    break
                handle(tp, record)
                count += 1
            if progress is not None and count > before:
                progress(count - before)
        for tp in list(remaining):
            if await consumer.position(tp) >= bounds[tp].end:
                remaining.discard(tp)
    return count


async def replay_meeting(
    settings: Settings,
    meeting_uuid: str,
    out: Path | str,
    *,
    index: MeetingIndex | None = None,
    use_index: bool = True,
    progress: Progress | None = None,
    on_total: Callable[[int], None] | None = None,
) -> ReplayResult:
    """Rebuild one meeting's files under `out`, a directory or `s3://bucket/prefix`; a bucket's files
    are spooled in a directory of this replay's own. A stream whose markers are not in the topics is
    finalized at the end of the range (`idle_timeout`); the video partition is paused while the
    meeting's video waits for audio."""
    if index is None and use_index:
        index = (await read_indexes(settings, meeting_uuid)).get(meeting_uuid)
    with _spool(settings, out) as spool:
        return await _replay_meeting(settings, meeting_uuid, out, spool, index, progress, on_total)


@contextmanager
def _spool(settings: Settings, out: Path | str) -> Iterator[Path | None]:
    """A private spool for a replay to a bucket (never the live sinks'), removed at the end."""
    if parse_target(out) is None:
        yield None
        return
    settings.spool_path().mkdir(parents=True, exist_ok=True)
    spool = Path(tempfile.mkdtemp(prefix="replay-", dir=settings.spool_path()))
    try:
        yield spool
    finally:
        shutil.rmtree(spool, ignore_errors=True)


async def _replay_meeting(
    settings: Settings,
    meeting_uuid: str,
    out: Path | str,
    spool: Path | None,
    index: MeetingIndex | None,
    progress: Progress | None,
    on_total: Callable[[int], None] | None,
) -> ReplayResult:
    media = MEDIA_SINK.core(
        settings, out, rebuild_all=True, accept=meeting_uuid.__eq__, muxer_process=True, spool=spool
    )
    transcripts = TRANSCRIPT_SINK.core(
        settings, out, rebuild_all=True, accept=meeting_uuid.__eq__, spool=spool
    )
    try:
        return await _read_meeting(settings, meeting_uuid, index, media, transcripts, progress, on_total)
    finally:
        media.storage.close()
        transcripts.storage.close()


async def _read_meeting(
    settings: Settings,
    meeting_uuid: str,
    index: MeetingIndex | None,
    media: SinkCore,
    transcripts: SinkCore,
    progress: Progress | None,
    on_total: Callable[[int], None] | None,
) -> ReplayResult:
    cores: dict[str, SinkCore] = {t: media for t in media.topics.values()}
    cores.update({t: transcripts for t in transcripts.topics.values()})
    consumer = groupless_consumer(settings)
    await consumer.start()
    try:
        broker = {base: settings.topic_prefix + base for base in REPLAYED_TOPICS}
        partition = (
            index["partition"]
            if index
            else partition_for(meeting_uuid, await partition_count(consumer, broker[AUDIO.name]))
        )
        wanted = ranges_from_index(index) if index else {}
        ranges = {TopicPartition(broker[t], partition): wanted.get(t) for t in REPLAYED_TOPICS}
        if on_total is not None:
            begins = await consumer.beginning_offsets(list(ranges))
            ends = await consumer.end_offsets(list(ranges))
            on_total(sum((r or ReadRange(begins[tp], ends[tp])).size for tp, r in ranges.items()))
        key = meeting_uuid.encode()
        video_tp = TopicPartition(broker[VIDEO.name], partition)

        def handle(tp: TopicPartition, record: Any) -> None:
            if record.key == key:
                cores[tp.topic].feed(
                    tp.topic, tp.partition, record.offset, record.key, record.value, record.headers
                )

        def hold() -> set[TopicPartition]:
            # video waits in memory for audio: let audio catch up before reading more video
            return (
                {video_tp}
                if media.buffered_by_partition().get(partition, 0) > settings.sink_buffer_bytes
                else set()
            )

        result = ReplayResult(meeting_uuid, partition, used_index=index is not None)
        result.records = await read_ranges(consumer, ranges, handle, hold=hold, progress=progress)
    finally:
        await consumer.stop()
    for core in (media, transcripts):
        core.finish_all("idle_timeout")
        result.finalized.extend(core.finalized)
        result.finalize_seconds = max([result.finalize_seconds, *core.finalize_seconds])
        if core.dead_letters:
            log.error(
                "records that could not be written",
                extra={"meeting": meeting_uuid, "count": len(core.dead_letters)},
            )
    return result


async def replay_window(
    settings: Settings,
    out: Path | str,
    since_ms: int | None,
    until_ms: int | None,
    *,
    progress: Progress | None = None,
    on_meeting: Callable[[str], None] | None = None,
) -> list[ReplayResult]:
    """Rebuild every meeting of the index with a stream started in [since, until)."""
    indexes = await read_indexes(settings)
    results = []
    for meeting_uuid in sorted(indexes):
        index = indexes[meeting_uuid]
        if not in_window(index, since_ms, until_ms):
            continue
        if on_meeting is not None:
            on_meeting(meeting_uuid)
        results.append(await replay_meeting(settings, meeting_uuid, out, index=index, progress=progress))
    return results


def describe(results: Iterable[ReplayResult]) -> list[str]:
    """One line per rebuilt stream, for the command's output."""
    lines = []
    for result in results:
        for done in result.finalized:
            lines.append(
                f"{done.meeting_uuid} {done.rtms_stream_id}: {len(done.paths)} files, "
                f"{done.bytes_written} bytes ({done.how}) in {done.paths[-1].parent}"
            )
    return lines
