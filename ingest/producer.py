"""`FrameProducer`: the `FrameHandler` that puts every frame, event and dead letter on its raw topic.

Each value becomes one Avro record keyed by the meeting, stamped with its identity, t = 0, `ingest_epoch`
and `ingest_seq`; it fixes each stream's t = 0, writes progress marks and the end-of-stream markers, and
bounds memory with a per-stream in-flight window (docs/DESIGN.md, "Media time", "Ingest")."""

from __future__ import annotations

import asyncio
import random
import time
import weakref
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer

from ingest import metrics
from ingest.backend import (
    AudioData,
    AudioParams,
    ChatData,
    DeadLetterData,
    EventData,
    MediaLost,
    StreamSession,
    TranscriptData,
    VideoData,
    VideoParams,
)
from ingest.batching import Batcher, Shipment
from ingest.chat_record import ChatRefused, chat_content
from ingest.record_bytes import SAMPLES, Prepared, RecordEncoder
from rtmsflow.clock import now_ms
from rtmsflow.h264 import H264Error, inspect_access_unit
from rtmsflow.kafka_client import make_producer
from rtmsflow.logs import get_logger
from rtmsflow.settings import Settings
from schemas.codec import Codec, EncodeError
from schemas.limits import MAX_DEAD_LETTER_PAYLOAD_BYTES, MAX_VALUE_BYTES, clip_payload
from schemas.markers import marker_headers, progress_headers
from schemas.topics import DEADLETTER, RAW_AUDIO, RAW_CHAT, RAW_EVENTS, RAW_TRANSCRIPT, RAW_VIDEO, TopicSpec

log = get_logger(__name__)

_ENDED_MEMORY = 10_000  # streams whose end-of-stream was written, remembered to stay idempotent
# t = 0 (docs/DECISIONS.md "Media time"): a stream's records wait until the first-packet event, at
# most this long after its first media record, or until this many are waiting
ORIGIN_WAIT_S = 0.5
ORIGIN_WAIT_RECORDS = 1_000
MARK_EVERY_MS = 250  # progress marks: at least one per this much media time, per topic that needs them


class ProduceFailed(RuntimeError):
    """Records of a stream were not acknowledged by Kafka (after the producer's own retries)."""


class _Window:
    """Bounds what one stream has in flight, in records and bytes."""

    def __init__(self, max_records: int, max_bytes: int) -> None:
        self.max_records = max_records
        self.max_bytes = max_bytes
        self.records = 0
        self.bytes = 0
        self._room = asyncio.Event()

    def has_room(self, records: int, size: int) -> bool:
        """Whether `records` more records of `size` bytes in all would be taken without waiting."""
        return not self.records or (
            self.records + records <= self.max_records and self.bytes + size <= self.max_bytes
        )

    async def acquire(self, size: int) -> None:
        # a record larger than the byte budget still goes, alone
        while self.records and (self.records >= self.max_records or self.bytes + size > self.max_bytes):
            self._room.clear()
            await self._room.wait()
        self.records += 1
        self.bytes += size

    def acquire_now(self, size: int) -> None:
        """`acquire` where `has_room` said it would not wait."""
        self.records += 1
        self.bytes += size

    def release(self, size: int, records: int = 1) -> None:
        self.records -= records
        self.bytes -= size
        self._room.set()


@dataclass(eq=False)  # hashed by identity: batches count records per stream
class _Stream:
    """What the producer keeps per (meeting, stream id): one ingest epoch (holding) of the stream."""

    window: _Window
    epoch: int = 0
    started_ms: int = 0  # t = 0 of the stream's media time, once fixed (0: not yet, see `waiting`)
    # records waiting for t = 0, in arrival order (None once it is fixed and they are written)
    waiting: deque[tuple[Callable[..., Awaitable[None]], Any]] | None = None
    first_packet_ms: int | None = None  # RTMS's first-packet timestamp, when it came
    earliest_ms: int | None = None  # the earliest media timestamp among the waiting records
    fixing: bool = False  # t = 0 is being fixed and what waited written (`written` is set after)
    unparsed_logged: bool = False
    written: asyncio.Event = field(default_factory=asyncio.Event)  # set once nothing waits
    # progress marks: each topic's media clock (its latest frame), where its last mark was, the
    # kinds seen on the video topic, and the media time a dropped socket's topic stopped at
    clock: dict[str, int] = field(default_factory=dict)
    marked: dict[str, int] = field(default_factory=dict)
    per_participant: bool = False
    video_kinds: set[str] = field(default_factory=set)
    lost_at: dict[str, int] = field(default_factory=dict)
    fresh: bool = False
    # the size the last SPS declared (the granted size until one is seen), and its `media` dict
    sps_size: tuple[int, int] | None = None
    seqs: dict[str, int] = field(default_factory=dict)
    pending: set[Any] = field(default_factory=set)  # its `Shipment`s (or `send()` futures) not settled
    last_ts: dict[str, int] = field(default_factory=dict)  # topic base name -> last RTMS timestamp
    failures: int = 0
    key: bytes = b""  # the meeting UUID as the record key
    # the last granted params seen and their record `media` dict (FrameProducer.audio/video)
    media_of: AudioParams | None = None
    media: dict[str, Any] = field(default_factory=dict)
    video_media_of: VideoParams | None = None
    video_media: dict[str, Any] = field(default_factory=dict)
    # the stream's records by what they share but their per-record longs and payload (`_value`);
    # cleared when a `media` dict is replaced
    prepared: dict[tuple[Any, ...], Prepared | None] = field(default_factory=dict)
    # records go to Kafka in the order they got their ingest_seq: `_send` holds this (FIFO) from
    # asking for room until the record is queued. Without it a record that had to wait (for room,
    # or for the topic's partitions on its first record) was passed by one that did not: events
    # of one stream come from its sockets and from the worker, and under load rtms.raw.events
    # held ingest_seq 2 before 1. `ordered` counts the `_send`s holding or waiting for it: with
    # none, a record that need not wait is queued at once without it (`FrameProducer._send_now`)
    order: asyncio.Lock = field(default_factory=asyncio.Lock)
    ordered: int = 0

    def next_seq(self, kind: str) -> int:
        seq = self.seqs.get(kind, 0)
        self.seqs[kind] = seq + 1
        return seq

    def settled(self, records: int, size: int, ok: bool) -> None:
        """A batch holding `records` of this stream was acknowledged (or failed)."""
        self.window.release(size, records)
        if not ok:
            self.failures += records


class FrameProducer:
    """`FrameHandler` on Kafka. `start()` starts the producer (unless one was given), `stop()`
    flushes and stops it."""

    def __init__(
        self,
        settings: Settings,
        *,
        producer: AIOKafkaProducer | None = None,
        codec: Codec | None = None,
        max_in_flight: int = 2_000,
        max_in_flight_bytes: int = 16 << 20,
        linger_s: float = 0.040,  # at 5 ms a lane held 1-2 records at live rates: aiokafka's per-batch work ruled
        max_batch_bytes: int = 1 << 20,
    ) -> None:
        self.settings = settings
        self.codec = codec or Codec(settings.schema_registry_url, settings.topic_prefix)
        self._own_producer = producer is None
        self.producer = producer
        self.max_in_flight = max_in_flight
        self.max_in_flight_bytes = max_in_flight_bytes
        self._streams: dict[tuple[str, str], _Stream] = {}
        self._sessions: dict[tuple[str, str], StreamSession] = {}
        # called once a stream's t = 0 is fixed from its media clock, before any record carries it
        # (the worker stores it on rtms.sessions for a worker that takes the stream over)
        self.origin_listener: Callable[[StreamSession, int], Awaitable[None]] | None = None
        self._ended: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._ending: dict[tuple[str, str], asyncio.Future[None]] = {}
        self._topics = {spec.name: spec.full_name(settings.topic_prefix) for spec in (*_RAW, DEADLETTER)}
        self._labels = {full: name.rsplit(".", 1)[-1] for name, full in self._topics.items()}
        # Prometheus children looked up once, not per record; FRAMES and BYTES added once a loop turn
        self._queued = metrics.QueuedCounts()
        self._latency = {
            label: metrics.PRODUCE_LATENCY.labels(topic=label) for label in self._labels.values()
        }
        # raw audio/video values joined from cached pieces (`ingest.record_bytes`), built on first use
        self._encoders: dict[str, RecordEncoder | None] = {}
        # batching (`ingest.batching`); records over max_batch_bytes go alone with send()
        self._batching = False
        self._batcher = Batcher(self._producer, linger_s, max_batch_bytes, self._acknowledged)
        ref = weakref.ref(self)
        metrics.IN_FLIGHT.set_function(lambda: float(s.in_flight()) if (s := ref()) is not None else 0.0)
        self._use(producer)

    async def start(self) -> None:
        await self.codec.prepare(self._topics.values())
        if self.producer is None:
            self.producer = make_producer(self.settings)
            await self.producer.start()
            self._use(self.producer)

    async def stop(self) -> None:
        if self.producer is None:
            return
        try:
            await self.flush()
        finally:
            await self._batcher.stop()
            if self._own_producer:
                await self.producer.stop()
                self.producer = None

    # --- FrameHandler ---------------------------------------------------------------------------

    # audio and video are most of the records: each is built as one dict literal, and the `media`
    # dict is built once per granted params object (the stream keeps it) instead of per frame;
    # the encoder only reads records, so sharing it is safe.
    async def audio(self, session: StreamSession, frame: AudioData) -> None:
        await self._submit(session, self._audio, frame, frame.timestamp_ms)

    async def video(self, session: StreamSession, frame: VideoData) -> None:
        await self._submit(session, self._video, frame, frame.timestamp_ms)

    async def transcript(self, session: StreamSession, frame: TranscriptData) -> None:
        await self._submit(session, self._transcript, frame, None)

    async def event(self, session: StreamSession, event: EventData) -> None:
        stream = self._stream(session)
        if stream.waiting is not None:
            first_packet = event.name == "first_packet" and event.timestamp_ms > 0
            if first_packet and stream.first_packet_ms is None:
                stream.first_packet_ms = event.timestamp_ms
            await self._wait(session, stream, self._event, event, None)
            if first_packet:
                await self._fix_origin(session, stream)
            return
        await self._event(session, stream, event)

    async def chat(self, session: StreamSession, message: ChatData) -> None:
        await self._submit(session, self._chat, message, None)

    def _submit(
        self, session: StreamSession, write: Callable[[StreamSession, _Stream, Any], Awaitable[None]],
        item: Any, media_ts: int | None,
    ) -> Awaitable[None]:  # fmt: skip
        """`write` the item now, or queue it behind the stream's records waiting for t = 0."""
        stream = self._stream(session)
        if stream.waiting is not None:
            return self._wait(session, stream, write, item, media_ts)
        return write(session, stream, item)

    async def media_lost(self, session: StreamSession, lost: MediaLost) -> None:
        """A working media socket dropped: the media its topic misses until the socket is back is
        listed in band (a progress mark with `losses`) before the next frame on that topic."""
        stream = self._stream(session)
        spec = _LOSS_TOPICS.get(lost.channel)
        if spec is not None and spec.name in stream.clock and spec.name not in stream.lost_at:
            stream.lost_at[spec.name] = stream.clock[spec.name]

    async def _audio(self, session: StreamSession, stream: _Stream, frame: AudioData) -> None:
        params = frame.params
        if stream.media_of is not params:
            stream.media_of, stream.media = params, _audio_params(params)
            stream.prepared.clear()
            stream.per_participant = not params.mixed
        seqs = stream.seqs
        seq = seqs.get("AUDIO", 0)
        seqs["AUDIO"] = seq + 1
        if not stream.started_ms:
            stream.started_ms = frame.timestamp_ms
        record = {
            "meeting_uuid": session.meeting_uuid,
            "rtms_stream_id": session.rtms_stream_id,
            "stream_kind": "AUDIO",
            "participant_id": frame.participant_id,
            "timestamp_ms": frame.timestamp_ms,
            "stream_started_ms": stream.started_ms,
            "ingest_epoch": stream.epoch,
            "ingest_seq": seq,
            "received_at_ms": now_ms(),
            "participant_name": frame.participant_name,
            "channel_id": frame.channel_id,
            "payload": frame.payload,
            "media": stream.media,
        }
        shared = ("AUDIO", frame.participant_id, frame.participant_name, frame.channel_id, stream.started_ms)
        value = self._value(stream, RAW_AUDIO, record, shared)
        await self._send(session, stream, RAW_AUDIO, record, "audio", len(frame.payload), value)

    async def _video(self, session: StreamSession, stream: _Stream, frame: VideoData) -> None:
        params = frame.params
        keyframe, parameter_sets, parsed = True, False, True
        if params.codec == "H264":
            try:
                info = inspect_access_unit(frame.payload)
            except H264Error as exc:
                # the raw topic keeps every frame Zoom sent: what cannot be derived is unknown
                keyframe, parsed = False, False
                metrics.UNPARSED_VIDEO.inc()
                if not stream.unparsed_logged:
                    stream.unparsed_logged = True
                    log.warning(
                        "video frame not parsed: keyframe and parameter sets unknown (logged once a stream)",
                        extra={"meeting": session.meeting_uuid, "rtms_stream_id": session.rtms_stream_id,
                               "error": str(exc)},
                    )  # fmt: skip
            else:
                keyframe, parameter_sets = info.keyframe, info.has_parameter_sets
                if info.width and info.height and (info.width, info.height) != stream.sps_size:
                    # a new encoder (speaker switch) or a resolution change: the record says so here
                    stream.sps_size = (info.width, info.height)
                    stream.video_media_of = None
        if stream.video_media_of is not params:
            stream.video_media_of, stream.video_media = params, _video_params(params, stream.sps_size)
            stream.prepared.clear()
        kind = frame.kind
        seqs = stream.seqs
        seq = seqs.get(kind, 0)
        seqs[kind] = seq + 1
        if not stream.started_ms:
            stream.started_ms = frame.timestamp_ms
        record = {
            "meeting_uuid": session.meeting_uuid,
            "rtms_stream_id": session.rtms_stream_id,
            "stream_kind": kind,
            "participant_id": frame.participant_id,
            "timestamp_ms": frame.timestamp_ms,
            "stream_started_ms": stream.started_ms,
            "ingest_epoch": stream.epoch,
            "ingest_seq": seq,
            "received_at_ms": now_ms(),
            "participant_name": frame.participant_name,
            "channel_id": None,  # every field present: `RecordEncoder`'s quicker path
            "payload": frame.payload,
            "keyframe": keyframe,
            "has_parameter_sets": parameter_sets,
            "media": stream.video_media,
            "access_unit_parsed": parsed,
        }
        stream.video_kinds.add(kind)
        shared = (
            kind,
            frame.participant_id,
            frame.participant_name,
            stream.started_ms,
            keyframe,
            parameter_sets,
            parsed,
        )
        value = self._value(stream, RAW_VIDEO, record, shared)
        await self._send(session, stream, RAW_VIDEO, record, _KIND_LABELS[kind], len(frame.payload), value)

    async def _transcript(self, session: StreamSession, stream: _Stream, frame: TranscriptData) -> None:
        record = self._identity(session, stream, "TRANSCRIPT", frame.timestamp_ms, frame.participant_id)
        record.update(
            participant_name=frame.participant_name,
            channel_id=frame.channel_id,
            text=frame.text,
            language=frame.language,
            start_time_ms=frame.start_time_ms or None,
            end_time_ms=frame.end_time_ms or None,
        )
        await self._send(session, stream, RAW_TRANSCRIPT, record, "transcript", len(frame.text.encode()))

    async def _event(self, session: StreamSession, stream: _Stream, event: EventData) -> None:
        record = self._identity(session, stream, "EVENT", event.timestamp_ms, event.participant_id)
        if not event.timestamp_ms:  # Zoom sent none: order by when we received it, and say so
            record["timestamp_ms"] = record["received_at_ms"]
        record.update(
            zoom_timestamp=bool(event.timestamp_ms),
            participant_name=event.participant_name,
            msg_type=event.msg_type,
            event_type=event.event_type,
            name=event.name,
            participants=[{"user_id": p.user_id, "user_name": p.user_name} for p in event.participants],
            state=event.state,
            reason=event.reason,
            rtms_session_id=event.rtms_session_id,
            body=event.body,
        )
        await self._send(session, stream, RAW_EVENTS, record, "event", len(event.body))

    async def _chat(self, session: StreamSession, stream: _Stream, message: ChatData) -> None:
        try:
            content = chat_content(message, self.settings.chat_private)
        except ChatRefused as exc:
            letter = DeadLetterData(
                f"ingest:{RAW_CHAT.name}", str(exc), exc.error, message.text.encode("utf-8", "replace")
            )
            await self.dead_letter(session, letter)
            return
        if content is None:  # a private message the privacy setting does not keep
            metrics.CHAT_PRIVATE_DROPPED.inc()
            return
        record = self._identity(session, stream, "CHAT", message.timestamp_ms, message.participant_id)
        record.update(participant_name=message.participant_name, channel_id=None, **content)
        await self._send(session, stream, RAW_CHAT, record, "chat", len(content["text"].encode()))

    async def dead_letter(self, session: StreamSession | None, letter: DeadLetterData) -> None:
        reason, payload = letter.reason, letter.payload
        if len(payload) > MAX_DEAD_LETTER_PAYLOAD_BYTES:  # a dead letter always fits its topic
            reason = f"{reason} (payload: its first {MAX_DEAD_LETTER_PAYLOAD_BYTES} of {len(payload)} bytes)"
            payload = clip_payload(payload)
        record = {
            "meeting_uuid": session.meeting_uuid if session else None,
            "rtms_stream_id": session.rtms_stream_id if session else None,
            "stage": "ingest",
            "source": letter.source,
            "reason": reason,
            "error": letter.error,
            "payload": payload,
            "received_at_ms": now_ms(),
            "ingest_seq": None,
        }
        metrics.DEAD_LETTERS.labels(error=letter.error).inc()
        log.warning(
            "dead letter",
            extra={
                "meeting": record["meeting_uuid"],
                "rtms_stream_id": record["rtms_stream_id"],
                "source": letter.source,
                "reason": reason,
                "error": letter.error,
                "bytes": len(letter.payload),
            },
        )
        topic = self._topics[DEADLETTER.name]
        value = self.codec.encode(topic, record)
        key = session.meeting_uuid.encode() if session else None
        if session is None:
            await self._producer().send_and_wait(topic, value=value, key=key)
            return
        stream = self._stream(session)
        await stream.window.acquire(len(value))
        await self._track(stream, topic, key, value, len(value), "deadletter")

    async def flush(self, session: StreamSession | None = None) -> None:
        """Ship the open batches holding records of `session` (of every stream if None), wait until
        they are acknowledged, and raise `ProduceFailed` if any of them were not."""
        if session is not None:
            found = self._streams.get((session.meeting_uuid, session.rtms_stream_id))
            if found is not None and found.waiting is not None:
                await self._fix_origin(session, found)
        else:
            for key, waiting in list(self._streams.items()):
                if waiting.waiting is not None:
                    await self._fix_origin(self._sessions[key], waiting)
        if session is None:
            self._batcher.ship_all()
            streams = list(self._streams.values())
        else:
            found = self._streams.get((session.meeting_uuid, session.rtms_stream_id))
            streams = [found] if found else []
            if found is not None:
                self._batcher.ship_owned(found)
        self._queued.report()
        for stream in streams:
            if stream.pending:
                await asyncio.wait([p.done if isinstance(p, Shipment) else p for p in stream.pending])
        if session is None:
            await self._producer().flush()
        for stream in streams:
            if stream.failures:
                failed, stream.failures = stream.failures, 0
                raise ProduceFailed(f"{failed} records were not acknowledged by Kafka")

    async def end_of_stream(
        self, session: StreamSession, stop_reason: int | None, *, ended: str = "STOPPED"
    ) -> None:
        key = (session.meeting_uuid, session.rtms_stream_id)
        if key in self._ended:
            return
        running = self._ending.get(key)
        if running is not None:
            await asyncio.shield(running)
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._ending[key] = done
        try:
            await self.flush(session)
            stream = self._stream(session)
            for spec in _RAW:
                end = {
                    "meeting_uuid": session.meeting_uuid,
                    "rtms_stream_id": session.rtms_stream_id,
                    "topic": spec.name,
                    "ended": ended,
                    "stop_reason": stop_reason,
                    "stream_started_ms": stream.started_ms or session.started_ms,
                    "last_timestamp_ms": stream.last_ts.get(spec.name),
                    "ingest_epoch": stream.epoch,
                    "counts": {
                        kind: stream.seqs[kind] for kind in _KINDS_OF[spec.name] if stream.seqs.get(kind)
                    },
                    "complete": stream.fresh,
                }
                topic = self._topics[spec.name]
                await stream.window.acquire(0)
                await self._track(
                    stream, topic, stream.key, None, 0, self._labels[topic], marker_headers(end)
                )
            await self.flush(session)
            metrics.EOS_MARKERS.inc(len(_RAW))
            self._ended[key] = None
            while len(self._ended) > _ENDED_MEMORY:
                self._ended.popitem(last=False)
            self._streams.pop(key, None)
            self._sessions.pop(key, None)
            log.info(
                "end of stream written",
                extra={
                    "meeting": session.meeting_uuid,
                    "rtms_stream_id": session.rtms_stream_id,
                    "stop_reason": stop_reason,
                    "ended": ended,
                },
            )
            done.set_result(None)
        except BaseException as exc:
            done.set_exception(exc)
            done.exception()  # retrieved: waiters re-raise it themselves
            raise
        finally:
            self._ending.pop(key, None)

    def forget(self, session: StreamSession) -> None:
        """Drop what the producer keeps for a stream this worker no longer holds (call after `flush`).
        Its `ingest_seq` counters start again at 0 if it ever comes back: a new connection."""
        stream = self._streams.get((session.meeting_uuid, session.rtms_stream_id))
        if stream is not None and not stream.pending and stream.waiting is None:
            del self._streams[(session.meeting_uuid, session.rtms_stream_id)]
            self._sessions.pop((session.meeting_uuid, session.rtms_stream_id), None)

    # --- internals ----------------------------------------------------------------------------

    def in_flight(self) -> int:
        """Records queued or sent but not yet acknowledged (the IN_FLIGHT gauge, read on scrape)."""
        return sum(stream.window.records for stream in self._streams.values())

    def _use(self, producer: AIOKafkaProducer | None) -> None:
        self._batching = producer is not None and all(
            callable(getattr(producer, name, None)) for name in ("send_batch", "partitions_for")
        )

    def _acknowledged(self, topic: str, seconds: float, records: int) -> None:
        """`records` of `topic` were acknowledged `seconds` after the first was queued."""
        metrics.observe_many(self._latency[self._labels[topic]], seconds, records)  # one per record

    def _producer(self) -> AIOKafkaProducer:
        if self.producer is None:
            raise RuntimeError("FrameProducer not started")
        return self.producer

    def _stream(self, session: StreamSession) -> _Stream:
        key = (session.meeting_uuid, session.rtms_stream_id)
        stream = self._streams.get(key)
        if stream is None:
            stream = self._streams[key] = _Stream(
                _Window(self.max_in_flight, self.max_in_flight_bytes),
                epoch=random.getrandbits(63),
                started_ms=session.media_origin_ms,
                fresh=session.fresh,
                key=session.meeting_uuid.encode(),
            )
            self._sessions[key] = session
            if not session.media_origin_ms:  # a takeover knows it; otherwise the media clock tells
                stream.waiting = deque()
            else:
                stream.written.set()
        return stream

    # --- t = 0 ----------------------------------------------------------------------------------

    async def _wait(
        self,
        session: StreamSession,
        stream: _Stream,
        write: Callable[..., Awaitable[None]],
        item: Any,
        media_ms: int | None,
    ) -> None:
        """Keep a record until the stream's t = 0 is fixed (the first-packet event, or
        `ORIGIN_WAIT_S` after its first media record): no record may carry a t = 0 that later
        media is stamped before."""
        assert stream.waiting is not None
        stream.waiting.append((write, item))
        if media_ms is not None:
            if stream.earliest_ms is None:
                loop = asyncio.get_running_loop()
                loop.call_later(ORIGIN_WAIT_S, self._fix_origin_soon, session, stream)
            if stream.earliest_ms is None or media_ms < stream.earliest_ms:
                stream.earliest_ms = media_ms
        if len(stream.waiting) >= ORIGIN_WAIT_RECORDS:  # bounded: fix it now (or wait for the writer)
            await self._fix_origin(session, stream)

    def _fix_origin_soon(self, session: StreamSession, stream: _Stream) -> None:
        if stream.waiting is not None and not stream.fixing:
            task = asyncio.get_running_loop().create_task(self._fix_origin(session, stream))
            task.add_done_callback(_log_failure)

    async def _fix_origin(self, session: StreamSession, stream: _Stream) -> None:
        """Fix t = 0 (the earliest of the first-packet timestamp and the waiting media), store it
        for a worker that may take the stream over, then write what waited, in order."""
        if stream.fixing:
            await stream.written.wait()
            return
        if stream.waiting is None:
            return
        stream.fixing = True
        try:
            candidates = [t for t in (stream.first_packet_ms, stream.earliest_ms) if t is not None]
            origin = min(candidates) if candidates else session.started_ms
            stream.started_ms = origin or now_ms()
            if candidates and self.origin_listener is not None:
                await self.origin_listener(session, stream.started_ms)
            waiting = stream.waiting
            assert waiting is not None
            while waiting:
                write, item = waiting.popleft()
                await write(session, stream, item)
            stream.waiting = None
            stream.written.set()
        finally:
            stream.fixing = False

    def _identity(
        self, session: StreamSession, stream: _Stream, kind: str, ts: int, participant: int
    ) -> dict[str, Any]:
        received = now_ms()
        if not stream.started_ms:
            stream.started_ms = ts or received
        return {
            "meeting_uuid": session.meeting_uuid,
            "rtms_stream_id": session.rtms_stream_id,
            "stream_kind": kind,
            "participant_id": participant,
            "timestamp_ms": ts,
            "stream_started_ms": stream.started_ms,
            "ingest_epoch": stream.epoch,
            "ingest_seq": stream.next_seq(kind),
            "received_at_ms": received,
        }

    async def _send(
        self,
        session: StreamSession,
        stream: _Stream,
        spec: TopicSpec,
        record: dict[str, Any],
        kind: str | None,
        size: int,
        encoded: bytes | None = None,
    ) -> None:
        """Queue one record (`encoded`: its value, when the caller has it already)."""
        topic = self._topics[spec.name]
        try:
            value = encoded or self._fast_encode(topic, spec, record) or self.codec.encode(topic, record)
            refused = None
            if len(value) > MAX_VALUE_BYTES:  # the broker would refuse it: the frame would vanish
                refused = (f"record of {len(value)} bytes over the raw topics' limit of {MAX_VALUE_BYTES}",
                           "RecordTooLarge")  # fmt: skip
        except EncodeError as exc:
            refused = (str(exc), "EncodeError")
        if refused is not None:
            # give the sequence number back: ingest_seq stays without holes and the marker's counts
            # count records written (this record goes to the dead-letter topic instead)
            stream.seqs[record["stream_kind"]] -= 1
            payload = record.get("payload") or str(record.get("text") or record.get("body") or "").encode()
            letter = DeadLetterData(f"ingest:{spec.name}", refused[0], refused[1], bytes(payload))
            await self.dead_letter(session, letter)
            return
        ts = record["timestamp_ms"]
        stream.last_ts[spec.name] = ts
        # no await between the seq and here: the order is the seq's
        clocked = kind is not None and spec is not RAW_EVENTS and spec is not RAW_CHAT
        if not self._send_now(stream, spec, topic, value):
            stream.ordered += 1
            try:
                async with stream.order:
                    if stream.lost_at and spec.name in stream.lost_at:
                        await self._mark(session, stream, spec, stream.lost_at.pop(spec.name), ts)
                    await stream.window.acquire(len(value))
                    await self._track(stream, topic, stream.key, value, len(value), self._labels[topic])
                    if clocked:
                        for due in self._progress(stream, spec, ts):
                            await self._mark(session, stream, due, ts)
            finally:
                stream.ordered -= 1
        elif clocked and (marks := self._progress(stream, spec, ts)):
            stream.ordered += 1  # nobody else holds or waits for the lock: taken without waiting
            try:
                async with stream.order:
                    for due in marks:
                        await self._mark(session, stream, due, ts)
            finally:
                stream.ordered -= 1
        if kind is not None:
            self._queued.add(kind, size)

    def _send_now(self, stream: _Stream, spec: TopicSpec, topic: str, value: bytes) -> bool:
        """Queue the record at once if that is what `_send`'s ordered path would do without waiting
        for anything: no other `_send` of the stream under way, no loss to mark first, room in the
        window (for it and the progress marks it may bring) and its partition known. False (nothing
        done) otherwise: the ordered path takes it."""
        key = stream.key
        if (
            stream.ordered
            or not self._batching
            or (stream.lost_at and spec.name in stream.lost_at)
            or not stream.window.has_room(3, len(value))
            or (topic, key) not in self._batcher.partition_of
        ):
            return False
        stream.window.acquire_now(len(value))
        try:
            self._batcher.append_known(stream, topic, key, value, len(value))
        except BaseException:
            stream.window.release(len(value))
            raise
        return True

    def _encoder(self, topic: str, spec: TopicSpec) -> RecordEncoder | None:
        encoder = self._encoders.get(topic, _NO_ENCODER)
        if encoder is _NO_ENCODER:
            samples = SAMPLES.get(spec.name)
            encoder = RecordEncoder.for_topic(self.codec, topic, samples) if samples else None
            self._encoders[topic] = encoder
        return encoder

    def _fast_encode(self, topic: str, spec: TopicSpec, record: dict[str, Any]) -> bytes | None:
        """The value by `RecordEncoder` where the topic has one and the record is in its subset,
        else None (the codec encodes it: same bytes, or the EncodeError)."""
        encoder = self._encoder(topic, spec)
        return encoder.encode(record) if encoder is not None else None

    def _value(
        self, stream: _Stream, spec: TopicSpec, record: dict[str, Any], shared: tuple[Any, ...]
    ) -> bytes | None:
        """A media record's value from what the stream's records with the same `shared` values (every
        field but the per-record longs, the payload and the stream's constants) have prepared; None
        where there is no quicker path (`_send` encodes it)."""
        prepared = stream.prepared.get(shared, _NO_ENCODER)
        if prepared is _NO_ENCODER:
            if len(stream.prepared) >= _PREPARED_PER_STREAM:
                stream.prepared.clear()
            encoder = self._encoder(self._topics[spec.name], spec)
            prepared = stream.prepared[shared] = encoder.prepare(record) if encoder is not None else None
        if prepared is None:
            return None
        return prepared.encode(
            record["timestamp_ms"], record["ingest_seq"], record["received_at_ms"], record["payload"]
        )

    def _progress(self, stream: _Stream, spec: TopicSpec, ts: int) -> tuple[TopicSpec, ...]:
        """Advance the topic's media clock to a record just queued; the topics whose progress marks
        are due now (to write in this order, at `ts`): the transcript topic (the stream's clock: it
        closes utterances) once the stream has transcripts, and a media topic only where it has
        several lanes (per-participant audio; video with deskshare), since a lane is released by
        its own frames otherwise."""
        name = spec.name
        clock = stream.clock
        if spec is RAW_TRANSCRIPT:
            clock.setdefault(name, max(clock.get(RAW_AUDIO.name, ts), clock.get(RAW_VIDEO.name, ts)))
            return ()
        if ts <= clock.get(name, ts - 1):
            return ()
        clock[name] = ts
        own = (stream.per_participant if spec is RAW_AUDIO else len(stream.video_kinds) > 1) and (
            ts - stream.marked.get(name, 0) >= MARK_EVERY_MS
        )
        stream_clock = (
            RAW_TRANSCRIPT.name in clock and ts - stream.marked.get(RAW_TRANSCRIPT.name, 0) >= MARK_EVERY_MS
        )
        if own:
            return (spec, RAW_TRANSCRIPT) if stream_clock else (spec,)
        return (RAW_TRANSCRIPT,) if stream_clock else ()

    async def _mark(
        self,
        session: StreamSession,
        stream: _Stream,
        spec: TopicSpec,
        media_ms: int,
        lost_to: int | None = None,
    ) -> None:
        """Queue a progress mark on `spec`'s topic (with the loss [media_ms, lost_to) if given)."""
        stream.marked[spec.name] = media_ms
        mark = {
            "meeting_uuid": session.meeting_uuid,
            "rtms_stream_id": session.rtms_stream_id,
            "topic": spec.name,
            "stream_started_ms": stream.started_ms,
            "ingest_epoch": stream.epoch,
            "media_ms": media_ms,
            "losses": []
            if lost_to is None or lost_to <= media_ms
            else [{"start_ms": media_ms, "end_ms": lost_to}],
        }
        topic = self._topics[spec.name]
        await stream.window.acquire(0)
        await self._track(stream, topic, stream.key, None, 0, self._labels[topic], progress_headers(mark))
        metrics.PROGRESS_MARKS.inc()

    async def _track(
        self,
        stream: _Stream,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        size: int,
        label: str,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        """Queue one record whose `size` the stream's window already holds; the window is released
        when Kafka acknowledges it. `value` None with `headers` is a control record (a marker)."""
        if self._batching and key is not None:
            try:
                waiting = self._batcher.append(stream, topic, key, value, size, headers)
                if waiting is not None:  # its partition looked up first
                    await waiting
            except BaseException:
                stream.window.release(size)
                raise
            return
        started = time.perf_counter()
        try:
            fut = await self._producer().send(topic, value=value, key=key, headers=headers)
        except BaseException:
            stream.window.release(size)
            raise
        stream.pending.add(fut)

        def done(f: asyncio.Future[Any]) -> None:
            stream.pending.discard(f)
            stream.window.release(size)
            if f.cancelled() or f.exception() is not None:
                stream.failures += 1
                log.error(
                    "record not acknowledged",
                    extra={"topic": topic, "error": repr(None if f.cancelled() else f.exception())},
                )
            else:
                self._latency[label].observe(time.perf_counter() - started)

        fut.add_done_callback(done)


_KIND_LABELS = {"VIDEO": "video", "DESKSHARE": "deskshare"}
_NO_ENCODER: Any = object()  # `_encoders` (`prepared`) has no entry for the topic (values) yet
_PREPARED_PER_STREAM = 256  # prepared records a stream keeps (participants x frame flags), cleared when full
# the raw topic whose media a dropped media socket (by its RTMS media type) loses
_LOSS_TOPICS = {"audio": RAW_AUDIO, "video": RAW_VIDEO, "deskshare": RAW_VIDEO}


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("writing a stream's first records failed", exc_info=task.exception())


_RAW = (RAW_AUDIO, RAW_VIDEO, RAW_TRANSCRIPT, RAW_EVENTS, RAW_CHAT)
_KINDS_OF: dict[str, tuple[str, ...]] = {
    RAW_AUDIO.name: ("AUDIO",),
    RAW_VIDEO.name: ("VIDEO", "DESKSHARE"),
    RAW_TRANSCRIPT.name: ("TRANSCRIPT",),
    RAW_EVENTS.name: ("EVENT",),
    RAW_CHAT.name: ("CHAT",),
}


def _audio_params(p: AudioParams) -> dict[str, Any]:
    return {
        "codec": p.codec,
        "sample_rate": p.sample_rate,
        "channels": p.channels,
        "send_rate_ms": p.send_rate_ms,
        "mixed": p.mixed,
    }


def _video_params(p: VideoParams, sps_size: tuple[int, int] | None) -> dict[str, Any]:
    width, height = sps_size or (p.width, p.height)
    return {"codec": p.codec, "width": width, "height": height, "fps": p.fps, "mode": p.mode}
