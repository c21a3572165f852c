"""`rtmsflow ingest worker`: holds the live RTMS streams of the `rtms.sessions` partitions it owns.

`SessionWorker` rebuilds each assigned partition's streams from its start, applies lifecycle records
idempotently, writes HELD before connecting and, when a stream ends, its end-of-stream markers and ENDED.
Ownership, rebalances and takeovers: docs/DESIGN.md, "Ingest"."""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.coordinator.assignors.sticky.sticky_assignor import StickyPartitionAssignor
from aiokafka.errors import IllegalStateError
from aiokafka.structs import ConsumerRecord

from ingest import metrics
from ingest.allowlist import DisallowedUrl, check_server_urls
from ingest.backend import EventData, FrameHandler, Product, SessionBackend, StreamSession, load_backend
from ingest.producer import FrameProducer
from rtmsflow.clock import now_ms
from rtmsflow.kafka_client import make_consumer
from rtmsflow.logs import get_logger
from rtmsflow.service import RebalanceListener, Stage
from rtmsflow.settings import Settings
from schemas.codec import Codec, CodecError
from schemas.topics import SESSIONS, partition_for, session_key

log = get_logger(__name__)

DEFAULT_GROUP = "rtmsflow-ingest"
BackendFactory = Callable[[Settings, FrameHandler], SessionBackend]
StreamKey = tuple[str, str]  # (meeting uuid, rtms stream id)
_LIFECYCLE_NAMES = {"STARTED": "rtms_started", "INTERRUPTED": "rtms_interrupted", "STOPPED": "rtms_stopped"}
_LIVE = ("STARTED", "INTERRUPTED", "HELD")  # latest record of a stream someone should hold
_ENDED_MEMORY = 100_000


@dataclass
class _Held:
    """A stream this worker holds."""

    session: StreamSession
    backend: SessionBackend
    partition: int
    watcher: asyncio.Task[None] | None = None
    leaving: bool = False


@dataclass
class _Rebuild:
    """A partition being read from its start: nothing is applied until `end` is reached."""

    end: int
    latest: dict[StreamKey, dict[str, Any]] = field(default_factory=dict)
    urls: dict[StreamKey, str] = field(default_factory=dict)  # last server_urls of each stream
    started: dict[StreamKey, int] = field(default_factory=dict)  # event_ts of each stream's first STARTED
    held_before: set[StreamKey] = field(default_factory=set)  # streams some worker held (a HELD record)
    origins: dict[StreamKey, int] = field(default_factory=dict)  # t = 0 a holding fixed (HELD records)
    ended: set[StreamKey] = field(default_factory=set)  # streams with an ENDED record: done


class SessionWorker(Stage):
    """The ingest worker. `start()` joins the group, `run()` consumes until cancelled, `stop()`
    leaves every meeting (flush, no end-of-stream), commits and leaves the group."""

    def __init__(
        self,
        settings: Settings,
        *,
        group_id: str = DEFAULT_GROUP,
        backend_factory: BackendFactory | None = None,
        frames: FrameProducer | None = None,
        session_timeout_ms: int = 8_000,
        heartbeat_interval_ms: int = 1_000,
    ) -> None:
        self.settings = settings
        self.group_id = group_id
        self.backend_factory = backend_factory or load_backend(settings.ingest_backend)
        self.frames = frames or FrameProducer(settings)
        self.frames.origin_listener = self._store_origin
        self.codec = Codec(settings.schema_registry_url, settings.topic_prefix)
        self.topic = SESSIONS.full_name(settings.topic_prefix)
        self.session_timeout_ms = session_timeout_ms
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.consumer: AIOKafkaConsumer | None = None
        self.held: dict[StreamKey, _Held] = {}
        self.owned: set[int] = set()
        self.rebuilding: dict[TopicPartition, _Rebuild] = {}
        self.connections_opened = 0  # backends started, for tests and logs
        self._lock = asyncio.Lock()
        self._commit: dict[TopicPartition, int] = {}
        # streams known to be over (an ENDED record read or written), remembered so that a stop
        # webhook arriving after the stream already ended on its own writes no second set of markers
        self._ended: OrderedDict[StreamKey, None] = OrderedDict()

    # --- lifecycle ----------------------------------------------------------------------------------

    async def start(self) -> None:
        await self.codec.prepare([self.topic])
        await self.frames.start()
        self.consumer = make_consumer(
            group_id=self.group_id,
            settings=self.settings,
            partition_assignment_strategy=(StickyPartitionAssignor,),
            session_timeout_ms=self.session_timeout_ms,
            heartbeat_interval_ms=self.heartbeat_interval_ms,
            rebalance_timeout_ms=max(self.session_timeout_ms, 10_000),
            metadata_max_age_ms=5_000,
        )
        self.consumer.subscribe([self.topic], listener=RebalanceListener(self))
        await self.consumer.start()
        log.info("ingest worker started", extra={"group": self.group_id, "topic": self.topic})

    async def run(self) -> None:
        """Consume `rtms.sessions` until cancelled."""
        consumer = self._consumer()
        while True:
            batch = await consumer.getmany(timeout_ms=200, max_records=500)
            async with self._lock:
                for tp, records in batch.items():
                    for record in records:
                        await self._on_record(tp, record)
                        self._commit[tp] = record.offset + 1
                await self._finish_rebuilds()
            await self._commit_offsets()

    async def stop(self) -> None:
        """Leave every stream (flush, no end-of-stream: another worker takes it over), commit, leave
        the group, stop the producer. With `Settings.ingest_end_streams_on_stop` (an operator
        stopping the whole stack, `rtmsflow up`) each stream is closed at Zoom instead and ends with
        its markers."""
        async with self._lock:
            for key in list(self.held):
                if self.settings.ingest_end_streams_on_stop:
                    await self._close(key)
                else:
                    await self._leave(key, "worker stopping")
        if self.consumer is not None:
            with contextlib.suppress(Exception):
                await self._commit_offsets()
            await self.consumer.stop()
            self.consumer = None
        await self.frames.stop()
        log.info("ingest worker stopped", extra={"group": self.group_id})

    def health(self) -> dict[str, Any]:
        return {
            "status": "ok" if self.consumer is not None else "stopped",
            "meetings": len(self.held),
            "partitions": sorted(self.owned),
        }

    def _consumer(self) -> AIOKafkaConsumer:
        if self.consumer is None:
            raise RuntimeError("SessionWorker not started")
        return self.consumer

    async def _commit_offsets(self) -> None:
        if not self._commit or self.consumer is None:
            return
        offsets, self._commit = self._commit, {}
        assigned = self.consumer.assignment()
        offsets = {tp: off for tp, off in offsets.items() if tp in assigned}
        if offsets:
            try:
                await self.consumer.commit(offsets)
            except Exception as exc:  # a rebalance in between: harmless, ownership is rebuilt anyway
                log.info("commit skipped", extra={"error": repr(exc)})

    # --- rebalance ----------------------------------------------------------------------------------

    async def on_assigned(self, assigned: set[TopicPartition]) -> None:
        consumer = self._consumer()
        async with self._lock:
            partitions = {tp.partition for tp in assigned}
            for key, held in list(self.held.items()):
                if held.partition not in partitions:
                    await self._leave(key, "partition moved to another worker")
            self.owned = partitions
            self.rebuilding = {}
            if assigned:
                begins = await consumer.beginning_offsets(list(assigned))
                ends = await consumer.end_offsets(list(assigned))
                for tp in assigned:
                    consumer.seek(tp, begins[tp])
                    self.rebuilding[tp] = _Rebuild(end=ends[tp])
            log.info(
                "partitions assigned",
                extra={"partitions": sorted(partitions), "held": len(self.held), "group": self.group_id},
            )

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        # Eager protocol: everything is revoked on every rebalance; meetings are left in
        # on_assigned once we know which partitions really moved.
        log.info("partitions revoked", extra={"partitions": sorted(tp.partition for tp in revoked)})

    async def _finish_rebuilds(self) -> None:
        consumer = self._consumer()
        for tp, rebuild in list(self.rebuilding.items()):
            try:
                position = await consumer.position(tp)
            except IllegalStateError:
                self.rebuilding.pop(tp, None)
                continue
            if position < rebuild.end:
                continue
            del self.rebuilding[tp]
            live = 0
            for key in rebuild.ended:
                self._remember_ended(key)
            for key, record in rebuild.latest.items():
                if record["server_urls"] is None:
                    record = {**record, "server_urls": rebuild.urls.get(key)}
                if record["action"] in _LIVE and key not in rebuild.ended:
                    live += 1
                started = rebuild.started.get(key, record["event_ts_ms"])
                fresh = record["action"] == "STARTED" and key not in rebuild.held_before
                await self._apply(
                    tp.partition,
                    record,
                    fresh=fresh,
                    started_ms=started,
                    origin_ms=rebuild.origins.get(key, 0),
                )
            log.info(
                "partition rebuilt",
                extra={"partition": tp.partition, "streams": len(rebuild.latest), "live": live},
            )

    # --- records ------------------------------------------------------------------------------------

    async def _on_record(self, tp: TopicPartition, record: ConsumerRecord[Any, Any]) -> None:
        if record.value is None:
            return  # tombstone
        try:
            value = self.codec.decode(self.topic, record.value)
        except CodecError as exc:
            log.error(
                "undecodable session record skipped", extra={"offset": record.offset, "error": str(exc)}
            )
            return
        key = (value["meeting_uuid"], value["rtms_stream_id"])
        rebuild = self.rebuilding.get(tp)
        if rebuild is not None:
            rebuild.latest[key] = value
            if value.get("server_urls"):
                rebuild.urls[key] = value["server_urls"]
            if value["action"] == "STARTED":
                rebuild.started.setdefault(key, value["event_ts_ms"])
            elif value["action"] == "HELD":
                rebuild.held_before.add(key)
                rebuild.started.setdefault(key, value["event_ts_ms"])
                if value.get("media_origin_ms"):
                    rebuild.origins[key] = value["media_origin_ms"]
            elif value["action"] == "ENDED":
                rebuild.ended.add(key)
            return
        await self._apply(tp.partition, value, fresh=value["action"] == "STARTED")

    async def _apply(
        self,
        partition: int,
        record: dict[str, Any],
        *,
        fresh: bool = False,
        started_ms: int | None = None,
        origin_ms: int = 0,
    ) -> None:
        """Make the held set agree with one session record (idempotent). `fresh`: nobody held the
        stream before (a STARTED with no HELD before it); `started_ms`: the stream's first STARTED
        time when the caller knows it."""
        meeting, stream_id, action = record["meeting_uuid"], record["rtms_stream_id"], record["action"]
        key = (meeting, stream_id)
        urls: str | None = record.get("server_urls")
        ctx = {
            "meeting": meeting,
            "rtms_stream_id": stream_id,
            "action": action,
            "event": record.get("event"),
        }
        held = self.held.get(key)
        if action == "ENDED":
            self._remember_ended(key)
            if held is not None:  # another worker finished it: nothing more to do here
                await self._leave(key, "stream ended elsewhere")
            return
        if key in self._ended:
            log.info("record for a stream already ended ignored", extra=ctx)
            return
        if action == "STOPPED":
            if held is not None:
                await self.frames.event(held.session, _lifecycle_event(record))
                await self._end(key, record.get("stop_reason"), "rtms_stopped")
            else:  # its holder died before the markers, or nobody held it: finish it here
                await self._finish_unheld(record, started_ms, origin_ms)
            return
        if action not in _LIVE:
            log.error("session record with an unknown action ignored", extra=ctx)
            return
        if urls is not None:
            try:
                check_server_urls(urls, self.settings)
            except DisallowedUrl as exc:  # the webhook app checks too; this guards other writers
                log.error(
                    "session record with a disallowed server URL ignored", extra={**ctx, "error": str(exc)}
                )
                return
        if held is not None:
            if action == "HELD" or (action == "STARTED" and urls == held.session.server_urls):
                log.info("duplicate rtms_started or our own HELD: nothing to do", extra=ctx)
                return
            await self.frames.event(held.session, _lifecycle_event(record))
            if urls is not None and urls != held.session.server_urls:
                log.info("failover: reconnecting to new server_urls", extra={**ctx, "server_urls": urls})
                held.session = replace(held.session, server_urls=urls)
                await held.backend.reconnect(urls)
            elif action == "INTERRUPTED":
                await held.backend.reconnect(None, since_ms=record.get("event_ts_ms"))
            return
        if not urls:
            log.error("live stream without known server_urls; cannot connect", extra=ctx)
            return
        session = StreamSession(
            meeting,
            stream_id,
            urls,
            Product(record.get("product") or "UNKNOWN"),
            started_ms=started_ms or record["event_ts_ms"],
            fresh=fresh and action == "STARTED",
            media_origin_ms=origin_ms or record.get("media_origin_ms") or 0,
        )
        await self._hold(partition, session)
        if action != "HELD":
            await self.frames.event(session, _lifecycle_event(record))

    async def _finish_unheld(
        self, record: dict[str, Any], started_ms: int | None, origin_ms: int = 0
    ) -> None:
        """End-of-stream markers and ENDED for a stopped stream this worker does not hold."""
        session = StreamSession(
            record["meeting_uuid"],
            record["rtms_stream_id"],
            "",
            Product(record.get("product") or "UNKNOWN"),
            started_ms=started_ms or record["event_ts_ms"],
            media_origin_ms=origin_ms,
        )
        log.info(
            "finishing a stopped stream nobody finished",
            extra={"meeting": session.meeting_uuid, "rtms_stream_id": session.rtms_stream_id},
        )
        try:
            await self.frames.event(session, _lifecycle_event(record))
            await self.frames.end_of_stream(session, record.get("stop_reason"))
            await self._mark_ended(session)
        except Exception:
            log.exception("could not finish the stopped stream", extra={"meeting": session.meeting_uuid})

    async def _mark_ended(self, session: StreamSession) -> None:
        """Record on `rtms.sessions` that the stream's markers are stored: nothing left to do."""
        self._remember_ended((session.meeting_uuid, session.rtms_stream_id))
        await self._write_session(session, "ENDED", now_ms())

    def _remember_ended(self, key: StreamKey) -> None:
        self._ended[key] = None
        while len(self._ended) > _ENDED_MEMORY:
            self._ended.popitem(last=False)

    async def _store_origin(self, session: StreamSession, origin_ms: int) -> None:
        """A held stream's t = 0 is fixed: a HELD record carrying it, before any record does."""
        await self._write_session(session, "HELD", session.started_ms, media_origin_ms=origin_ms)

    async def _write_session(
        self, session: StreamSession, action: str, event_ts_ms: int, *, media_origin_ms: int | None = None
    ) -> None:
        """Write one of ingest's own records (HELD, ENDED) to `rtms.sessions` and await its ack."""
        producer = self.frames.producer
        if producer is None:
            raise RuntimeError("the frame producer's aiokafka producer is not started")
        record = {
            "meeting_uuid": session.meeting_uuid,
            "rtms_stream_id": session.rtms_stream_id,
            "product": session.product.value,
            "action": action,
            "event": f"rtmsflow.{action.lower()}",
            "server_urls": session.server_urls if action == "HELD" else None,
            "event_ts_ms": event_ts_ms,
            "received_at_ms": now_ms(),
            "media_origin_ms": media_origin_ms,
        }
        partitions = len(await producer.partitions_for(self.topic))
        await producer.send_and_wait(
            self.topic,
            value=self.codec.encode(self.topic, record),
            key=session_key(session.meeting_uuid, session.rtms_stream_id),
            partition=partition_for(session.meeting_uuid, partitions),
        )

    async def _hold(self, partition: int, session: StreamSession) -> None:
        # HELD is stored before the first frame can be: whoever holds the stream next knows that
        # records of an earlier holding may exist
        await self._write_session(
            session, "HELD", session.started_ms, media_origin_ms=session.media_origin_ms or None
        )
        backend = self.backend_factory(self.settings, self.frames)
        held = _Held(session, backend, partition)
        self.held[(session.meeting_uuid, session.rtms_stream_id)] = held
        self.connections_opened += 1
        metrics.ACTIVE_MEETINGS.set(len(self.held))
        await backend.start(session)
        held.watcher = asyncio.create_task(
            self._watch(held), name=f"watch:{session.meeting_uuid}:{session.rtms_stream_id}"
        )
        log.info(
            "stream held",
            extra={
                "meeting": session.meeting_uuid,
                "rtms_stream_id": session.rtms_stream_id,
                "partition": partition,
                "fresh": session.fresh,
            },
        )

    async def _watch(self, held: _Held) -> None:
        """When a backend ends on its own, write end-of-stream: STOPPED when Zoom ended the stream
        (terminated, or closed at our request), UNEXPECTED otherwise (fatal handshake status,
        reconnect budget spent, a failure): the stream may be truncated, and the markers say so."""
        outcome = await held.backend.wait()
        if held.leaving:
            return
        key = (held.session.meeting_uuid, held.session.rtms_stream_id)
        async with self._lock:
            if held.leaving or self.held.get(key) is not held:
                return
            del self.held[key]
            metrics.ACTIVE_MEETINGS.set(len(self.held))
            stopped = outcome.ended and outcome.stop_reason is not None
            ctx = {
                "meeting": held.session.meeting_uuid,
                "rtms_stream_id": held.session.rtms_stream_id,
                "detail": outcome.detail,
            }
            if not stopped:
                log.error("RTMS session ended unexpectedly; end-of-stream marked UNEXPECTED", extra=ctx)
            try:
                await self.frames.end_of_stream(
                    held.session, outcome.stop_reason, ended="STOPPED" if stopped else "UNEXPECTED"
                )
                await self._mark_ended(held.session)
            except Exception:
                log.exception("could not finish the stream's records", extra=ctx)

    async def _end(self, key: StreamKey, stop_reason: int | None, why: str) -> None:
        """The stream is over: disconnect, flush, write the end-of-stream markers, then ENDED."""
        held = await self._release(key)
        if held is None:
            return
        try:
            await self.frames.end_of_stream(held.session, stop_reason)
            await self._mark_ended(held.session)
        except Exception:
            log.exception("end-of-stream not written", extra={"meeting": key[0], "rtms_stream_id": key[1]})
        log.info(
            "stream ended",
            extra={"meeting": key[0], "rtms_stream_id": key[1], "why": why, "stop_reason": stop_reason},
        )

    async def _leave(self, key: StreamKey, why: str) -> None:
        """Stop holding a stream that goes on elsewhere: disconnect and flush, no end-of-stream."""
        held = await self._release(key)
        if held is None:
            return
        try:
            await self.frames.flush(held.session)
            self.frames.forget(held.session)
        except Exception:
            log.exception("flush on leave failed", extra={"meeting": key[0], "rtms_stream_id": key[1]})
        log.info("stream left", extra={"meeting": key[0], "rtms_stream_id": key[1], "why": why})

    async def _close(self, key: StreamKey) -> None:
        """Ask Zoom to end the stream (STREAM_CLOSE_REQ), then write its markers and ENDED."""
        held = self.held.pop(key, None)
        if held is None:
            return
        held.leaving = True
        metrics.ACTIVE_MEETINGS.set(len(self.held))
        ctx = {"meeting": key[0], "rtms_stream_id": key[1]}
        try:
            await held.backend.stop(close_stream=True)
            outcome = await held.backend.wait()
            await self.frames.end_of_stream(held.session, outcome.stop_reason, ended="STOPPED")
            await self._mark_ended(held.session)
        except Exception:
            log.exception("stream not closed cleanly on stop", extra=ctx)
        finally:
            if held.watcher is not None:
                held.watcher.cancel()
        log.info("stream closed on stop", extra=ctx)

    async def _release(self, key: StreamKey) -> _Held | None:
        held = self.held.pop(key, None)
        if held is None:
            return None
        held.leaving = True
        metrics.ACTIVE_MEETINGS.set(len(self.held))
        await held.backend.stop(close_stream=False)
        if held.watcher is not None:
            held.watcher.cancel()
        return held


def _lifecycle_event(record: dict[str, Any]) -> EventData:
    """A lifecycle session record (STARTED / INTERRUPTED / STOPPED) as a `rtms.raw.events` value."""
    return EventData(
        msg_type=0,
        name=_LIFECYCLE_NAMES[record["action"]],
        timestamp_ms=record["event_ts_ms"],
        body=record.get("payload_json") or "",
        reason=record.get("stop_reason"),
    )
