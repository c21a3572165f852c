"""The sinks' engine: records in, per-stream builders, finalization, and the commit rule.

`SinkCore` (no Kafka) routes records to builders, finalizes streams and says how far a partition may be
committed (never past an unfinalized stream's first record); `SinkService` is its consumer-group shell,
with dead letters, pausing, /health and recovery from unwritable storage (docs/DESIGN.md, "Sinks")."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from prometheus_client import Counter, Gauge, Histogram

from rtmsflow.clock import now_ms
from rtmsflow.kafka_client import make_consumer, make_producer
from rtmsflow.logs import Throttle, get_logger
from rtmsflow.service import RebalanceListener, Stage
from rtmsflow.settings import Settings
from schemas.codec import Codec, CodecError
from schemas.limits import MAX_DEAD_LETTER_PAYLOAD_BYTES, clip_payload, implausible
from schemas.markers import MarkerError, read_marker
from schemas.records import StreamEnd as MarkerEnd
from schemas.topics import DEADLETTER, VIDEO, spec_for
from sinks.layout import LayoutError, StreamLayout
from sinks.mp4_recorder import MediaFrameError
from sinks.outage import Outage
from sinks.storage import DiskStorage, Storage
from sinks.stream_files import EndHow, Finalized, StreamFiles
from sinks.transcript_files import TranscriptError
from sinks.wav_writer import WavError

log = get_logger(__name__)

TP = tuple[str, int]  # (broker topic name, partition)
StreamKey = tuple[str, str]  # (meeting uuid, rtms stream id)
_FINISHED_MEMORY = 100_000
# A stream's records of every topic a sink reads (the media sink: audio and video) share a partition
# number, and one member must get them all. The range assignor hands each member the same partition
# numbers of every topic (topics of a tier have one partition count); aiokafka's default round robin
# deals topic-partitions out in turn, which splits a meeting's audio from its video as soon as the
# member count does not divide the partition count (3 sinks, 4 partitions: no stream ever finalized).
SINK_ASSIGNORS = (RangePartitionAssignor,)
SOURCE_OFFSET = "_source_offset"  # added to a decoded record: its offset, for a later dead letter
# Errors of one record: its payload cannot be written. The record is dead-lettered, the stream goes on.
RECORD_ERRORS = (MediaFrameError, WavError, TranscriptError, KeyError, TypeError, ValueError)

OPEN_STREAMS = Gauge("rtmsflow_sink_open_streams", "Streams being written, by sink.", ["sink"])
FILES_OPEN = Gauge("rtmsflow_sink_files_open", "Output files open, by sink.", ["sink"])
FINALIZE_SECONDS = Histogram(
    "rtmsflow_sink_finalize_seconds",
    "Time to finalize a stream (close, fsync, rename, manifest) once its last marker is in.",
    ["sink"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0),
)
FINALIZED = Counter("rtmsflow_sink_streams_finalized", "Streams finalized, by sink and how.", ["sink", "how"])
BYTES_WRITTEN = Counter("rtmsflow_sink_bytes_written", "Bytes of published files, by sink.", ["sink"])
RECORDS = Counter("rtmsflow_sink_records", "Records consumed, by sink and topic.", ["sink", "topic"])
DEAD_LETTERS = Counter(
    "rtmsflow_sink_dead_letters", "Records sent to rtms.deadletter, by error.", ["sink", "error"]
)
LAG = Gauge("rtmsflow_sink_lag", "Records behind the partition's end (consumer lag).", ["sink", "topic"])
STORAGE_FAILURES = Counter(
    "rtmsflow_sink_storage_failures",
    "Times files could not be written (disk full, I/O error), by sink.",
    ["sink"],
)
STORAGE_OK = Gauge("rtmsflow_sink_storage_ok", "1 while the sink can write its files, else 0.", ["sink"])
PROBE_BYTES = 1 << 20  # written, synced and removed to see whether the data directory takes files again
RETRY_MAX_S = 30.0
_STORAGE_LOG_INTERVAL_S = 60.0

BuilderFactory = Callable[[StreamLayout], StreamFiles]


@dataclass
class _Open:
    files: StreamFiles
    partition: int
    first_offsets: dict[TP, int] = field(default_factory=dict)
    last_seen: float = 0.0


class ImplausibleRecord(ValueError):
    """A record with values it cannot truly have (`schemas.limits.implausible`)."""


class SinkCore:
    """Routes a sink's records to per-stream builders and says how far each partition may be committed:

        committable(tp) = min(first offset in tp of every stream not yet finalized, position in tp)

    A record that cannot be decoded or written is logged, counted and queued for `rtms.deadletter`
    (stage "sinks"); its stream's other files still finalize.

    `topics` maps the sink's base topic names to broker names. `factory` makes a stream's builder;
    `is_finalized(layout)` says whether a stream is already done (None: rebuild everything, as
    replay does). `accept(meeting_uuid)` filters meetings (replay of one meeting). `clock` is
    monotonic seconds, for the idle timeout only (never in an output). `storage` is where the
    builders' groups publish (default: `data_dir` on disk); its `outage` blocks the core while
    storage is unavailable (see `sinks.outage`).
    """

    def __init__(
        self,
        name: str,
        topics: Mapping[str, str],
        data_dir: Path,
        codec: Codec,
        factory: BuilderFactory,
        *,
        is_finalized: Callable[[StreamLayout], bool] | None = None,
        idle_timeout_s: float = 600.0,
        accept: Callable[[str], bool] | None = None,
        clock: Callable[[], float] = time.monotonic,
        storage: Storage | None = None,
    ) -> None:
        self.name = name
        self.storage: Storage = storage or DiskStorage(data_dir, Outage(name))
        self.outage = self.storage.outage  # storage unavailable: shown on /health, retried
        self.topics = dict(topics)
        self._base = {broker: base for base, broker in self.topics.items()}
        self.data_dir = data_dir
        self.codec = codec
        self.factory = factory
        self.is_finalized = is_finalized
        self.idle_timeout_s = idle_timeout_s
        self.accept = accept
        self.clock = clock
        self.open: dict[StreamKey, _Open] = {}
        self.positions: dict[TP, int] = {}
        self.finished: OrderedDict[StreamKey, None] = OrderedDict()
        self.dead_letters: list[dict[str, Any]] = []
        self.finalized: list[Finalized] = []
        self.finalize_seconds: list[float] = []  # per finalize, for benchmarks and logs
        self.records = 0

    # -- input ------------------------------------------------------------------------------------

    def feed(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        headers: Iterable[tuple[str, bytes]] | None,
    ) -> None:
        """One record of one of the sink's topics (broker name), in partition order."""
        tp = (topic, partition)
        self.positions[tp] = offset + 1
        self.records += 1
        base = self._base[topic]
        if self.accept is not None and key is not None and not self.accept(key.decode("utf-8", "replace")):
            return
        record: dict[str, Any] | None = None
        marker: MarkerEnd | None = None
        if value is None:
            try:
                marker = read_marker(list(headers or ()))
            except MarkerError as exc:
                self._dead(tp, offset, key, b"", "unreadable end-of-stream marker", exc)
                return
            if marker is None:
                return  # a tombstone: nothing to write
            if (why := implausible(marker)) is not None:
                self._dead(tp, offset, key, b"", why, ImplausibleRecord(why), marker["meeting_uuid"])
                return
            meeting, stream, origin = (
                marker["meeting_uuid"],
                marker["rtms_stream_id"],
                marker["stream_started_ms"],
            )
        else:
            try:
                record = self.codec.decode(topic, value)
            except CodecError as exc:
                self._dead(tp, offset, key, value, exc.reason, exc)
                return
            if (why := implausible(record)) is not None:
                self._dead(tp, offset, key, value, why, ImplausibleRecord(why), record["meeting_uuid"])
                return
            meeting, stream, origin = (
                record["meeting_uuid"],
                record["rtms_stream_id"],
                record["stream_started_ms"],
            )
        if self.accept is not None and not self.accept(meeting):
            return
        skey = (meeting, stream)
        if skey in self.finished:
            return  # a finalized stream: its repeated marker or a straggler is a no-op
        entry = self.open.get(skey)
        if entry is None:
            try:
                entry = self._open(skey, origin, partition, tp, offset, key, value)
            except BaseException:  # storage gone (or stopping) at the stream's start: not consumed
                self.positions[tp] = offset
                raise
            if entry is None:
                return
        entry.first_offsets.setdefault(tp, offset)
        entry.last_seen = self.clock()
        if marker is not None:
            entry.files.end_topic(base, marker)
        elif record is not None:
            record[SOURCE_OFFSET] = offset  # where a record rejected later (queued video) came from
            try:
                entry.files.add(base, record)
            except OSError:
                raise  # the files, not the record: the service stops and retries (SinkService)
            except Exception as exc:  # RECORD_ERRORS, or one nobody foresaw: it costs this record only
                if not isinstance(exc, RECORD_ERRORS):
                    log.exception(
                        "unexpected error on a record", extra={"sink": self.name, "meeting": meeting}
                    )
                self._dead(tp, offset, key, value or b"", str(exc) or repr(exc), exc, meeting, stream)
        for bad_topic, bad, error in entry.files.take_rejected():
            # the rejected record may be of another topic than the one being fed (queued video)
            bad_tp = (self.topics[bad_topic], partition)
            original = {k: v for k, v in bad.items() if k != SOURCE_OFFSET}
            try:
                payload = self.codec.encode(bad_tp[0], original)
            except CodecError:
                payload = b""
            self._dead(
                bad_tp, bad.get(SOURCE_OFFSET, offset), key, payload, str(error), error, meeting, stream
            )
        if entry.files.ready:
            self._finalize(skey, "marker")

    def _open(
        self,
        skey: StreamKey,
        origin: int,
        partition: int,
        tp: TP,
        offset: int,
        key: bytes | None,
        value: bytes | None,
    ) -> _Open | None:
        try:
            layout = StreamLayout(self.data_dir, skey[0], skey[1], origin)
            layout.stream_dir  # noqa: B018 - validates both ids as path components
        except LayoutError as exc:
            self._dead(tp, offset, key, value or b"", str(exc), exc, *skey)
            return None
        if self.is_finalized is not None and self.is_finalized(layout):
            self._remember(skey)
            log.info(
                "stream already finalized: skipped", extra={"meeting": skey[0], "rtms_stream_id": skey[1]}
            )
            return None
        files = self.factory(layout)
        try:
            files.begin()
        except OSError:
            raise
        except Exception as exc:  # not a storage failure: this stream cannot be written, the rest can
            log.exception("stream cannot be opened", extra={"sink": self.name, "meeting": skey[0]})
            with contextlib.suppress(OSError):
                files.abort()
            self._remember(skey)
            self._dead(tp, offset, key, value or b"", f"stream cannot be opened: {exc!r}", exc, *skey)
            return None
        entry = self.open[skey] = _Open(files, partition)
        log.info(
            "stream opened",
            extra={"sink": self.name, "meeting": skey[0], "rtms_stream_id": skey[1], "offset": offset},
        )
        return entry

    # -- finalization -------------------------------------------------------------------------------

    def expire_idle(self) -> list[Finalized]:
        """Finalize streams that had no record for `idle_timeout_s` (their manifest says so)."""
        now = self.clock()
        idle = [k for k, e in self.open.items() if now - e.last_seen >= self.idle_timeout_s]
        return [f for k in idle if (f := self._finalize(k, "idle_timeout")) is not None]

    def finish_all(self, how: EndHow = "idle_timeout") -> list[Finalized]:
        """Finalize every open stream (replay at the end of its range: no marker will come)."""
        return [f for k in list(self.open) if (f := self._finalize(k, how)) is not None]

    def _finalize(self, skey: StreamKey, how: EndHow) -> Finalized | None:
        # the stream stays open (its first offsets pin the commit) until its files are published:
        # a finalize that waits for storage, or fails, never lets a commit pass the stream
        entry = self.open[skey]
        started = time.monotonic()
        try:
            done = entry.files.finalize(how)
        except OSError as exc:  # storage, not the stream: the service stops, logs (throttled), retries
            log.info(
                "finalize failed; the stream will be rebuilt", extra={"meeting": skey[0], "error": repr(exc)}
            )
            raise  # still open: the shell's abort_all drops its files after committing below it
        except Exception as exc:  # this stream's records cannot make files: it is given up, not retried
            log.exception(
                "stream cannot be finalized: dead-lettered", extra={"sink": self.name, "meeting": skey[0]}
            )
            with contextlib.suppress(OSError):
                entry.files.abort()
            del self.open[skey]
            self._remember(skey)
            tp, first = min(entry.first_offsets.items(), key=lambda kv: kv[1], default=(("", -1), -1))
            self._dead(tp, first, skey[0].encode(), b"", f"stream cannot be finalized: {exc!r}", exc, *skey)
            return None
        del self.open[skey]
        self._remember(skey)
        elapsed = time.monotonic() - started
        FINALIZE_SECONDS.labels(self.name).observe(elapsed)
        self.finalize_seconds.append(elapsed)
        FINALIZED.labels(self.name, how).inc()
        BYTES_WRITTEN.labels(self.name).inc(done.bytes_written)
        self.finalized.append(done)
        log.info(
            "stream finalized",
            extra={
                "sink": self.name,
                "meeting": skey[0],
                "rtms_stream_id": skey[1],
                "how": how,
                "matched": done.matched,
                "bytes": done.bytes_written,
                "seconds": round(elapsed, 3),
            },
        )
        return done

    def _remember(self, skey: StreamKey) -> None:
        self.finished[skey] = None
        while len(self.finished) > _FINISHED_MEMORY:
            self.finished.popitem(last=False)

    def abort_all(self) -> None:
        """Drop every unfinished stream and the positions (a rebalance, a stop, a storage failure)."""
        for skey, entry in self.open.items():
            try:
                entry.files.abort()
            except OSError as exc:  # a full disk can fail a close too: the files are dropped anyway
                log.warning("abort: %r", exc, extra={"sink": self.name, "meeting": skey[0]})
        self.open.clear()
        self.positions.clear()

    # -- the commit rule and back-pressure ----------------------------------------------------------

    def committable(self) -> dict[TP, int]:
        """How far each fed topic-partition may be committed (the rule: `SinkCore`)."""
        out = dict(self.positions)
        for entry in self.open.values():
            for tp, first in entry.first_offsets.items():
                if tp in out:
                    out[tp] = min(out[tp], first)
        return out

    def buffered_by_partition(self) -> dict[int, int]:
        """Bytes held in memory per partition by its open streams (media waiting for another
        topic), in one pass over the streams."""
        out: dict[int, int] = {}
        for e in self.open.values():
            out[e.partition] = out.get(e.partition, 0) + e.files.buffered_bytes()
        return out

    def waiting_topic(self) -> str:
        """The broker topic whose records wait in memory (the media sink's video)."""
        return self.topics.get(VIDEO.name, next(iter(self.topics.values())))

    def open_files(self) -> int:
        # a snapshot (list() holds the GIL): /health reads it while the worker thread feeds
        return sum(e.files.open_files for e in list(self.open.values()))

    # -- dead letters -------------------------------------------------------------------------------

    def _dead(
        self,
        tp: TP,
        offset: int,
        key: bytes | None,
        payload: bytes,
        reason: str,
        exc: Exception,
        meeting: str | None = None,
        stream: str | None = None,
    ) -> None:
        error = type(exc).__name__
        if len(payload) > MAX_DEAD_LETTER_PAYLOAD_BYTES:  # a dead letter always fits its topic
            reason = f"{reason} (payload: its first {MAX_DEAD_LETTER_PAYLOAD_BYTES} of {len(payload)} bytes)"
            payload = clip_payload(payload)
        if meeting is None and key is not None:
            meeting = key.decode("utf-8", "replace")
        DEAD_LETTERS.labels(self.name, error).inc()
        log.error(
            "record dead-lettered",
            extra={"sink": self.name, "meeting": meeting, "topic": tp[0], "offset": offset, "reason": reason},
        )
        self.dead_letters.append(
            {
                "meeting_uuid": meeting,
                "rtms_stream_id": stream,
                "stage": "sinks",
                "source": self._base.get(tp[0], tp[0]),
                "reason": reason,
                "error": error,
                "payload": payload,
                "received_at_ms": now_ms(),  # the dead letter's own time, not a file's
                "source_partition": tp[1],
                "source_offset": offset,
            }
        )


class SinkService(Stage):
    """A sink as a service: a consumer group over the core's topics.

    Pauses a partition whose streams hold too much media waiting for another topic, commits after each
    batch, produces dead letters, serves `/health` and `/metrics`. Shutdown: stop taking records, commit
    what is finalized, drop unfinished streams (the next owner rebuilds them), close. Files that cannot
    be written (an `OSError`) are not about one record: every unfinished stream is dropped, the consumer
    seeks back to its last commit and pauses, `/health` answers 503; a probe of the data directory (1 MiB
    written, synced, removed) backs off up to 30 s and the service resumes by itself once it succeeds."""

    def __init__(
        self,
        settings: Settings,
        core: SinkCore,
        *,
        group_id: str,
        buffer_bytes: int = 64 << 20,
        session_timeout_ms: int = 10_000,
        fetch_min_bytes: int = 1,
        fetch_max_wait_ms: int = 500,
    ) -> None:
        self.settings = settings
        self.core = core
        self.group_id = group_id
        self.buffer_bytes = buffer_bytes
        self.session_timeout_ms = session_timeout_ms
        self.fetch_min_bytes = fetch_min_bytes
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        self.deadletter_topic = DEADLETTER.full_name(settings.topic_prefix)
        self._lock = asyncio.Lock()
        self._committed: dict[TP, int] = {}
        self.storage_error: str | None = None  # why files cannot be written now (None: they can)
        self._storage_log = Throttle(_STORAGE_LOG_INTERVAL_S)
        self._retry_s = 0.0
        self._probe_at = 0.0
        self._inflight: asyncio.Future[None] | None = None
        # one thread of its own for the core (its builders, PyAV's contexts) all its life
        self._worker = ThreadPoolExecutor(1, thread_name_prefix=f"sink-{core.name}")

    async def start(self) -> None:
        await self.core.codec.prepare([*self.core.topics.values(), self.deadletter_topic])
        self.producer = make_producer(self.settings)
        await self.producer.start()
        self.consumer = make_consumer(
            group_id=self.group_id,
            settings=self.settings,
            session_timeout_ms=self.session_timeout_ms,
            heartbeat_interval_ms=1_000,
            max_poll_interval_ms=600_000,
            partition_assignment_strategy=SINK_ASSIGNORS,
            fetch_min_bytes=self.fetch_min_bytes,
            fetch_max_wait_ms=self.fetch_max_wait_ms,
        )
        self.consumer.subscribe(list(self.core.topics.values()), listener=RebalanceListener(self))
        await self.consumer.start()
        log.info("sink started", extra={"sink": self.core.name, "group": self.group_id})

    async def run(self) -> None:
        """Consume until cancelled."""
        consumer = self._consumer()
        STORAGE_OK.labels(self.core.name).set(1)
        while True:
            if self.storage_error is not None and time.monotonic() >= self._probe_at:
                async with self._lock:
                    self._probe()
            batch = await consumer.getmany(timeout_ms=200, max_records=2000)
            async with self._lock:
                # on a worker thread: a bucket outage blocks it (retrying) while /health answers
                # and the group's heartbeats go on; nothing is committed until the batch is done
                loop = asyncio.get_running_loop()
                self._inflight = asyncio.ensure_future(loop.run_in_executor(self._worker, self._take, batch))
                try:
                    await asyncio.shield(self._inflight)
                except OSError as exc:  # the files, not a record: stop, go back, wait (class docstring)
                    self._inflight = None
                    await self._storage_failed(exc)
                    continue
                self._inflight = None
                await self._flush_dead_letters()
                self._back_pressure()
                await self._commit()
                self._gauges()

    async def _storage_failed(self, exc: OSError) -> None:
        """Drop the unfinished streams, seek back to the last commit, pause, report (lock held)."""
        STORAGE_FAILURES.labels(self.core.name).inc()
        STORAGE_OK.labels(self.core.name).set(0)
        self._wait_longer(exc)
        self.core.abort_all()
        consumer = self._consumer()
        for tp in consumer.assignment():
            committed = await consumer.committed(tp)
            if committed is None:
                await consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, committed)
            consumer.pause(tp)

    def _wait_longer(self, exc: OSError) -> None:
        """Note the error, double the wait before the next probe (1 s to 30 s), log (throttled)."""
        self.storage_error = f"{type(exc).__name__}: {exc}"
        self._retry_s = min(RETRY_MAX_S, max(1.0, self._retry_s * 2))
        self._probe_at = time.monotonic() + self._retry_s
        if self._storage_log.ready(time.monotonic()):
            log.error(
                "cannot write files: not committing, retrying",
                extra={"sink": self.core.name, "error": self.storage_error, "errno": exc.errno,
                       "retry_s": self._retry_s, "suppressed": self._storage_log.take_suppressed()},
            )  # fmt: skip

    def _probe(self) -> None:
        """Resume when the data directory takes a file again, else wait longer (lock held)."""
        try:
            probe_storage(self.core.data_dir)
        except OSError as exc:
            self._wait_longer(exc)
            return
        log.info(
            "files can be written again: resuming", extra={"sink": self.core.name, "was": self.storage_error}
        )
        self.storage_error = None  # the wait stays until a commit: a failure again soon waits longer
        STORAGE_OK.labels(self.core.name).set(1)
        consumer = self._consumer()
        consumer.resume(*consumer.assignment())  # the back-pressure pauses again what needs it

    def _take(self, batch: Mapping[TopicPartition, list[Any]]) -> None:
        for tp, records in batch.items():
            for r in records:
                self.core.feed(tp.topic, tp.partition, r.offset, r.key, r.value, r.headers)
            RECORDS.labels(self.core.name, tp.topic).inc(len(records))
        self.core.expire_idle()

    async def stop(self) -> None:
        """Stop taking records, commit what is finalized, drop unfinished streams, leave the group."""
        self.core.outage.stop()  # a batch waiting for storage gives up (its streams are rebuilt)
        if self._inflight is not None:
            await asyncio.gather(self._inflight, return_exceptions=True)
            self._inflight = None
        async with self._lock:
            if self.consumer is not None:
                with contextlib.suppress(Exception):
                    await self._flush_dead_letters()
                    await self._commit()
                self.core.abort_all()
                await self.consumer.stop()
                self.consumer = None
            if self.producer is not None:
                await self.producer.stop()
                self.producer = None
            self.core.storage.close()
        self._worker.shutdown(wait=False)
        log.info("sink stopped", extra={"sink": self.core.name})

    def _consumer(self) -> AIOKafkaConsumer:
        if self.consumer is None:
            raise RuntimeError("SinkService not started")
        return self.consumer

    async def _flush_dead_letters(self) -> None:
        if not self.core.dead_letters or self.producer is None:
            return
        letters = list(self.core.dead_letters)
        futures = []
        for letter in letters:
            value = self.core.codec.encode(self.deadletter_topic, letter)
            key = letter["meeting_uuid"].encode() if letter["meeting_uuid"] else None
            futures.append(await self.producer.send(self.deadletter_topic, value=value, key=key))
        await asyncio.gather(*futures)  # durable before the offsets that dropped them are committed
        del self.core.dead_letters[: len(letters)]  # only now: a cancel in between loses none

    def _back_pressure(self) -> None:
        """Pause a partition of the waiting topic whose streams hold more than `buffer_bytes`."""
        consumer = self._consumer()
        topic = self.core.waiting_topic()
        paused = consumer.paused()
        buffered = self.core.buffered_by_partition()  # one pass over the streams, not one per partition
        for tp in consumer.assignment():
            if tp.topic != topic:
                continue
            over = buffered.get(tp.partition, 0) > self.buffer_bytes
            if over and tp not in paused:
                consumer.pause(tp)
            elif not over and tp in paused:
                consumer.resume(tp)

    async def _commit(self) -> None:
        consumer = self._consumer()
        assigned = consumer.assignment()
        offsets = {
            TopicPartition(*tp): off
            for tp, off in self.core.committable().items()
            if TopicPartition(*tp) in assigned and self._committed.get(tp) != off
        }
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
        except Exception as exc:  # a rebalance in between: the next owner resumes from the last commit
            log.info("commit skipped", extra={"sink": self.core.name, "error": repr(exc)})
            return
        for tp, off in offsets.items():
            self._committed[(tp.topic, tp.partition)] = off
        self._retry_s = 0.0  # progress: a later storage failure waits 1 s again, not the last wait doubled

    def _gauges(self) -> None:
        consumer = self._consumer()
        OPEN_STREAMS.labels(self.core.name).set(len(self.core.open))
        FILES_OPEN.labels(self.core.name).set(self.core.open_files())
        lag: dict[str, int] = {}
        for tp in consumer.assignment():
            high = consumer.highwater(tp)
            if high is not None:
                position = self.core.positions.get((tp.topic, tp.partition), high)
                lag[tp.topic] = lag.get(tp.topic, 0) + max(0, high - position)
        for topic, value in lag.items():
            LAG.labels(self.core.name, spec_for(topic, self.settings.topic_prefix).name).set(value)

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        # Eager rebalancing takes every partition away: commit what is finalized, drop the rest;
        # whoever gets a partition resumes from its commit and rebuilds the unfinished streams.
        async with self._lock:
            with contextlib.suppress(Exception):
                await self._flush_dead_letters()
                await self._commit()
            self.core.abort_all()
            self._committed.clear()

    async def on_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info("partitions assigned", extra={"sink": self.core.name, "count": len(assigned)})

    def health(self) -> dict[str, Any]:
        outage = self.core.outage.current()
        ok = self.consumer is not None and self.storage_error is None and outage is None
        body: dict[str, Any] = {
            "status": "ok"
            if ok
            else ("storage_error" if self.storage_error else "storage unavailable" if outage else "stopped"),
            "sink": self.core.name,
            "storage": {"where": self.core.storage.where, "outage": outage},
            "open_streams": len(self.core.open),
            "files_open": self.core.open_files(),
        }
        if self.storage_error is not None:
            body["error"] = self.storage_error
        return body


def probe_storage(data_dir: Path) -> None:
    """Write, sync and remove `PROBE_BYTES` in `data_dir`; the OSError if it cannot take them."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / ".storage-probe.partial"
    try:
        with open(path, "wb") as f:
            f.write(bytes(PROBE_BYTES))
            f.flush()
            os.fsync(f.fileno())
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
