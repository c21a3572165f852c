"""`rtmsflow ingest worker`: holds the live RTMS streams of the `rtms.sessions` partitions it owns.

Ownership. Workers form one consumer group over the compacted `rtms.sessions` topic (key = meeting).
Whenever a partition is assigned, the worker rebuilds that partition's live set by reading it from
its start (latest record per meeting: STARTED / INTERRUPTED = live, STOPPED = not) and only then
applies it: it connects to live meetings it does not hold yet. Records that arrive later are
applied as they come. Applying is idempotent, so a rebuild over meetings already held changes
nothing: a repeated `rtms_started` with the same `server_urls` opens no second connection; new
`server_urls` for the held stream is a failover (full reconnect to the new URLs); `rtms_interrupted`
reconnects signaling + media unless the backend has already reconnected since the webhook's time;
`rtms_stopped` leaves, flushes and writes the end-of-stream markers.

Rebalances. aiokafka implements only the eager rebalance protocol (no cooperative-sticky), so the
group uses `StickyPartitionAssignor`: a partition keeps its owner unless the group changes. Because
eager revocation takes every partition away before the new assignment is known, a worker leaves
meetings only once the assignment shows which partitions it lost (flush, no end-of-stream: the
meeting is not over). The new owner may then briefly meet Zoom's "duplicate signal request"
(status 8) and retries with backoff until the old connection is gone.

Failure. A worker killed without leaving the group loses its partitions once the group session
times out (`session_timeout_ms`, 8 s by default, heartbeat every second); the new owner rebuilds and
reconnects within Zoom's 60 s reconnection window. Offsets are committed after records are applied,
for lag monitoring only: ownership is always rebuilt from the partition's start.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from aiohttp import web
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.coordinator.assignors.sticky.sticky_assignor import StickyPartitionAssignor
from aiokafka.errors import IllegalStateError
from aiokafka.structs import ConsumerRecord

from ingest import metrics
from ingest.allowlist import DisallowedUrl, check_server_urls
from ingest.backend import IngestSink, Product, SessionBackend, StreamSession, load_backend
from ingest.producer import KafkaSink
from ingest.webhook import handle_metrics
from rtmsflow.kafka_client import make_consumer
from rtmsflow.logs import get_logger
from rtmsflow.settings import Settings
from schemas.codec import Codec, CodecError
from schemas.topics import SESSIONS

log = get_logger(__name__)

DEFAULT_GROUP = "rtmsflow-ingest"
BackendFactory = Callable[[Settings, IngestSink], SessionBackend]


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
    latest: dict[str, dict[str, Any]] = field(default_factory=dict)
    urls: dict[tuple[str, str], str] = field(default_factory=dict)  # (meeting, stream) -> last server_urls


class SessionWorker:
    """The ingest worker. `start()` joins the group, `run()` consumes until cancelled, `stop()`
    leaves every meeting (flush, no end-of-stream), commits and leaves the group."""

    def __init__(
        self,
        settings: Settings,
        *,
        group_id: str = DEFAULT_GROUP,
        backend_factory: BackendFactory | None = None,
        sink: KafkaSink | None = None,
        session_timeout_ms: int = 8_000,
        heartbeat_interval_ms: int = 1_000,
    ) -> None:
        self.settings = settings
        self.group_id = group_id
        self.backend_factory = backend_factory or load_backend(settings.ingest_backend)
        self.sink = sink or KafkaSink(settings)
        self.codec = Codec.from_settings(settings)
        self.topic = SESSIONS.full_name(settings.topic_prefix)
        self.session_timeout_ms = session_timeout_ms
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.consumer: AIOKafkaConsumer | None = None
        self.held: dict[str, _Held] = {}
        self.owned: set[int] = set()
        self.rebuilding: dict[TopicPartition, _Rebuild] = {}
        self.connections_opened = 0  # backends started, for tests and logs
        self._lock = asyncio.Lock()
        self._commit: dict[TopicPartition, int] = {}

    # --- lifecycle ----------------------------------------------------------------------------------

    async def start(self) -> None:
        await self.codec.prepare([self.topic])
        await self.sink.start()
        self.consumer = make_consumer(
            group_id=self.group_id,
            settings=self.settings,
            partition_assignment_strategy=(StickyPartitionAssignor,),
            session_timeout_ms=self.session_timeout_ms,
            heartbeat_interval_ms=self.heartbeat_interval_ms,
            rebalance_timeout_ms=max(self.session_timeout_ms, 10_000),
            metadata_max_age_ms=5_000,
        )
        self.consumer.subscribe([self.topic], listener=_Listener(self))
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
        """Leave every meeting (flush, no end-of-stream), commit, leave the group, stop the sink."""
        async with self._lock:
            for meeting in list(self.held):
                await self._leave(meeting, "worker stopping")
        if self.consumer is not None:
            with contextlib.suppress(Exception):
                await self._commit_offsets()
            await self.consumer.stop()
            self.consumer = None
        await self.sink.stop()
        log.info("ingest worker stopped", extra={"group": self.group_id})

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
            for meeting, held in list(self.held.items()):
                if held.partition not in partitions:
                    await self._leave(meeting, "partition moved to another worker")
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
            for meeting, record in rebuild.latest.items():
                if record["server_urls"] is None:
                    record = {**record, "server_urls": rebuild.urls.get((meeting, record["rtms_stream_id"]))}
                if record["action"] != "STOPPED":
                    live += 1
                await self._apply(tp.partition, record)
            log.info(
                "partition rebuilt",
                extra={"partition": tp.partition, "meetings": len(rebuild.latest), "live": live},
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
        rebuild = self.rebuilding.get(tp)
        if rebuild is not None:
            rebuild.latest[value["meeting_uuid"]] = value
            if value.get("server_urls"):
                rebuild.urls[(value["meeting_uuid"], value["rtms_stream_id"])] = value["server_urls"]
            return
        await self._apply(tp.partition, value)

    async def _apply(self, partition: int, record: dict[str, Any]) -> None:
        """Make the held set agree with one session record (idempotent)."""
        meeting, stream_id, action = record["meeting_uuid"], record["rtms_stream_id"], record["action"]
        urls: str | None = record.get("server_urls")
        ctx = {
            "meeting": meeting,
            "rtms_stream_id": stream_id,
            "action": action,
            "event": record.get("event"),
        }
        held = self.held.get(meeting)
        same_stream = held is not None and held.session.rtms_stream_id == stream_id
        if action == "STOPPED":
            if held is not None and same_stream:
                await self._end(meeting, record.get("stop_reason"), "rtms_stopped")
            return
        if urls is not None:
            try:
                check_server_urls(urls, self.settings)
            except DisallowedUrl as exc:  # the webhook app checks too; this guards other writers
                log.error(
                    "session record with a disallowed server URL ignored", extra={**ctx, "error": str(exc)}
                )
                return
        if held is not None and same_stream:
            if action == "STARTED" and urls == held.session.server_urls:
                log.info("duplicate rtms_started ignored", extra=ctx)
            elif urls is not None and urls != held.session.server_urls:
                log.info("failover: reconnecting to new server_urls", extra={**ctx, "server_urls": urls})
                held.session = replace(held.session, server_urls=urls)
                await held.backend.reconnect(urls)
            elif action == "INTERRUPTED":
                await held.backend.reconnect(None, since_ms=record.get("event_ts_ms"))
            return
        if held is not None:  # a new stream for a meeting whose old stream we still hold
            await self._end(meeting, None, "superseded by a new stream")
        if not urls:
            log.error("live meeting without known server_urls; cannot connect", extra=ctx)
            return
        product = record.get("product") or "UNKNOWN"
        session = StreamSession(meeting, stream_id, urls, Product(product))
        await self._hold(partition, session)

    async def _hold(self, partition: int, session: StreamSession) -> None:
        backend = self.backend_factory(self.settings, self.sink)
        held = _Held(session, backend, partition)
        self.held[session.meeting_uuid] = held
        self.connections_opened += 1
        metrics.ACTIVE_MEETINGS.set(len(self.held))
        await backend.start(session)
        held.watcher = asyncio.create_task(self._watch(held), name=f"watch:{session.meeting_uuid}")
        log.info(
            "meeting held",
            extra={
                "meeting": session.meeting_uuid,
                "rtms_stream_id": session.rtms_stream_id,
                "partition": partition,
            },
        )

    async def _watch(self, held: _Held) -> None:
        """When a backend ends on its own (terminated, fatal, gave up), write end-of-stream."""
        outcome = await held.backend.wait()
        if held.leaving:
            return
        async with self._lock:
            if held.leaving or self.held.get(held.session.meeting_uuid) is not held:
                return
            del self.held[held.session.meeting_uuid]
            metrics.ACTIVE_MEETINGS.set(len(self.held))
            ctx = {
                "meeting": held.session.meeting_uuid,
                "rtms_stream_id": held.session.rtms_stream_id,
                "detail": outcome.detail,
            }
            try:
                if outcome.ended:
                    await self.sink.end_of_stream(held.session, outcome.stop_reason)
                else:
                    log.error("RTMS session ended unexpectedly; frames flushed, no end-of-stream", extra=ctx)
                    await self.sink.flush(held.session)
            except Exception:
                log.exception("could not finish the meeting's records", extra=ctx)

    async def _end(self, meeting: str, stop_reason: int | None, why: str) -> None:
        """The stream is over: disconnect, flush, write the end-of-stream markers."""
        held = await self._release(meeting)
        if held is None:
            return
        try:
            await self.sink.end_of_stream(held.session, stop_reason)
        except Exception:
            log.exception("end-of-stream not written", extra={"meeting": meeting})
        log.info("meeting ended", extra={"meeting": meeting, "why": why, "stop_reason": stop_reason})

    async def _leave(self, meeting: str, why: str) -> None:
        """Stop holding a meeting that goes on elsewhere: disconnect and flush, no end-of-stream."""
        held = await self._release(meeting)
        if held is None:
            return
        try:
            await self.sink.flush(held.session)
            self.sink.forget(held.session)
        except Exception:
            log.exception("flush on leave failed", extra={"meeting": meeting})
        log.info("meeting left", extra={"meeting": meeting, "why": why})

    async def _release(self, meeting: str) -> _Held | None:
        held = self.held.pop(meeting, None)
        if held is None:
            return None
        held.leaving = True
        metrics.ACTIVE_MEETINGS.set(len(self.held))
        await held.backend.stop(close_stream=False)
        if held.watcher is not None:
            held.watcher.cancel()
        return held


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: SessionWorker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.worker.on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self.worker.on_assigned(set(assigned))


async def serve_health(worker: SessionWorker, host: str, port: int) -> web.AppRunner:
    """/health and /metrics of a worker on `port`."""

    async def health(request: web.Request) -> web.Response:
        ok = worker.consumer is not None
        body = {
            "status": "ok" if ok else "stopped",
            "meetings": len(worker.held),
            "partitions": sorted(worker.owned),
        }
        return web.json_response(body, status=200 if ok else 503)

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", handle_metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


async def run_worker(settings: Settings, worker: SessionWorker, metrics_port: int) -> None:
    """Run a worker until cancelled, with its health endpoint when `metrics_port` is set."""
    runner = await serve_health(worker, settings.http_host, metrics_port) if metrics_port else None
    await worker.start()
    try:
        await worker.run()
    finally:
        await worker.stop()
        if runner is not None:
            await runner.cleanup()
