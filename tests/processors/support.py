"""Raw input for the processors' tests: synthetic streams written straight to the raw topics, and
what an undisturbed run makes of them (the pure core fed the same records, no broker)."""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import aiohttp
from aiokafka import AIOKafkaProducer

from processors.batch_loop import ProcessorLoop
from processors.lanes import LaneConfig, PartitionCore
from rtmsflow.children import die_with_parent
from rtmsflow.kafka_client import bootstrap_servers
from rtmsflow.settings import Settings
from schemas.codec import Codec
from schemas.markers import marker_headers, progress_headers
from schemas.topics import partition_for
from tests.ingest.support import free_port, read_topic

T0 = 1_732_400_000_000
PCM = bytes(640)  # 20 ms of 16 kHz mono L16
AUDIO_MEDIA = {"codec": "L16", "sample_rate": 16000, "channels": 1, "send_rate_ms": 20, "mixed": True}
VIDEO_MEDIA = {"codec": "H264", "width": 640, "height": 360, "fps": 10, "mode": "ACTIVE_SPEAKER"}
RAW = ("rtms.raw.audio", "rtms.raw.video", "rtms.raw.transcript", "rtms.raw.events", "rtms.raw.chat")
ORDERED = (
    "rtms.audio",
    "rtms.video",
    "rtms.transcript",
    "rtms.events",
    "rtms.chat",
)  # those with markers, per raw topic
OUTPUTS = (*ORDERED, "rtms.transcript.partial")  # every topic of ordered output


def processor_loop(settings: Settings, group: str | None = None) -> ProcessorLoop:
    """The processors' loop in-process, in a group of its own unless `group` is given (`async with` runs it)."""
    return ProcessorLoop(settings, group or f"proc-{uuid.uuid4().hex[:8]}", session_timeout_ms=6000)


@dataclass
class RawRecord:
    topic: str  # base name
    key: bytes
    value: dict[str, Any] | None  # None: an end-of-stream marker with `end`, or a progress mark
    end: dict[str, Any] | None = None
    raw_bytes: bytes | None = None  # written as is (malformed input)
    progress: dict[str, Any] | None = None  # a progress mark (StreamProgress)

    def headers(self) -> list[tuple[str, bytes]]:
        """The control record's headers (a marker's or a progress mark's)."""
        if self.progress is not None:
            return progress_headers(self.progress)
        assert self.end is not None
        return marker_headers(self.end)


@dataclass
class StreamPlan:
    """One synthetic stream: audio every 20 ms, video every 100 ms, transcript pieces, events and chat."""

    meeting: str
    stream: str
    seconds: float = 2.0
    seed: int = 1
    epoch: int = 11
    missing_audio: range = range(0)  # audio frame indices never sent (a gap)
    shuffle_ms: int = 100  # reorder within this (below the window)
    duplicates: int = 3
    late_audio: int | None = None  # index of an audio frame sent far too late
    records: list[RawRecord] = field(default_factory=list)
    late_timestamp_ms: int | None = None  # of the frame sent too late (after build)
    marks: bool = True  # progress marks as ingest writes them (audio clock; transcript, closing turns)

    def build(self) -> list[RawRecord]:
        rnd = random.Random(self.seed)
        started = T0
        stamp = {"meeting_uuid": self.meeting, "rtms_stream_id": self.stream, "stream_started_ms": started,
                 "ingest_epoch": self.epoch}  # fmt: skip
        audio: list[dict[str, Any]] = []
        n_audio = int(self.seconds * 50)
        for i in range(n_audio):
            if i in self.missing_audio:
                continue
            ts = started + 40 + i * 20
            audio.append({**stamp, "stream_kind": "AUDIO", "participant_id": 0, "timestamp_ms": ts,
                          "ingest_seq": i, "received_at_ms": ts + 7,
                          "payload": bytes([i % 251]) * 640, "media": AUDIO_MEDIA})  # fmt: skip
        video = []
        for i in range(int(self.seconds * 10)):
            ts = started + 60 + i * 100
            video.append({**stamp, "stream_kind": "VIDEO", "participant_id": 1 + i // 7, "timestamp_ms": ts,
                          "ingest_seq": i, "received_at_ms": ts + 9, "payload": b"\x00\x00\x00\x01\x65" + bytes([i]) * 50,
                          "keyframe": i % 5 == 0, "has_parameter_sets": i % 5 == 0, "media": VIDEO_MEDIA})  # fmt: skip
        pieces = []
        words = ["hello", "there", "how", "are", "you", "today", "fine", "thanks"]
        for i in range(int(self.seconds * 4)):
            ts = started + 100 + i * 250
            speaker = 1 + (i // 3) % 2
            pieces.append({**stamp, "stream_kind": "TRANSCRIPT", "participant_id": speaker,
                           "participant_name": f"P{speaker}", "timestamp_ms": ts, "ingest_seq": i,
                           "received_at_ms": ts + 5, "text": words[i % len(words)], "language": 9,
                           "start_time_ms": ts, "end_time_ms": ts + 200})  # fmt: skip
        events = []
        for i, name in enumerate(["rtms_started", "participant_join", "active_speaker", "participant_leave"]):
            ts = started + i * int(self.seconds * 250)
            events.append({**stamp, "stream_kind": "EVENT", "timestamp_ms": ts, "ingest_seq": i,
                           "received_at_ms": ts + 3, "msg_type": 6 if i else 0, "name": name,
                           "participants": [{"user_id": 1 + i % 2, "user_name": f"P{1 + i % 2}"}],
                           "body": f'{{"n":{i}}}'})  # fmt: skip
        chat = []
        for i in range(int(self.seconds * 2)):
            ts = started + 150 + i * 500
            private = i % 3 == 2
            chat.append({**stamp, "stream_kind": "CHAT", "participant_id": 1 + i % 2, "participant_name": f"P{1 + i % 2}",
                         "timestamp_ms": ts, "ingest_seq": i, "received_at_ms": ts + 4, "message_id": f"c{i}",
                         "text": f"note {i}", "private": private,
                         "recipients": [{"user_id": 2 - i % 2, "user_name": f"P{2 - i % 2}"}] if private else []})  # fmt: skip
        out: list[RawRecord] = []
        key = self.meeting.encode()
        for topic, items in (("rtms.raw.audio", audio), ("rtms.raw.video", video),
                             ("rtms.raw.transcript", pieces), ("rtms.raw.events", events),
                             ("rtms.raw.chat", chat)):  # fmt: skip
            late, late_at = None, self.late_audio
            if topic == "rtms.raw.audio" and late_at is not None:
                late = items.pop(late_at)
                self.late_timestamp_ms = cast(int, late["timestamp_ms"])
            sent = _shuffle_within(items, self.shuffle_ms, rnd)
            for j in rnd.sample(range(len(sent)), min(self.duplicates, len(sent))):
                sent.insert(min(len(sent), j + 1 + rnd.randrange(3)), dict(sent[j], ingest_seq=10_000 + j))
            if late is not None and late_at is not None:
                sent.insert(min(len(sent), late_at + 40), late)
            records = [RawRecord(topic, key, v) for v in sent]
            out += self._with_marks(topic, records, stamp) if self.marks else records
        self.records = out
        return out

    def _with_marks(self, topic: str, records: list[RawRecord], stamp: dict[str, Any]) -> list[RawRecord]:
        """Progress marks among a topic's records: on audio the topic's clock every 250 ms; on the
        transcript after each piece, and a second past the last piece of each speaker's turn (so
        the pause rule closes it before the next speaker's piece comes)."""
        if topic not in ("rtms.raw.audio", "rtms.raw.transcript"):
            return records
        out: list[RawRecord] = []
        clock = marked = 0
        for r in records:
            out.append(r)
            assert r.value is not None
            ts = r.value["timestamp_ms"]
            mark = None
            if topic == "rtms.raw.audio":
                clock = max(clock, ts)
                if clock - marked >= 250:
                    mark = marked = clock
            else:
                turn_ends = r.value["ingest_seq"] % 3 == 2
                mark = ts + (1_000 if turn_ends else 150)
            if mark is not None:
                progress = {**stamp, "topic": topic, "media_ms": mark, "losses": []}
                out.append(RawRecord(topic, r.key, None, progress=progress))
        return out

    def markers(self) -> list[RawRecord]:
        """One end-of-stream marker per raw topic, with the last timestamp of each topic's records."""
        out = []
        for topic in RAW:
            mine = [r.value for r in self.records if r.topic == topic and r.value is not None]
            counts: dict[str, int] = {}
            for v in mine:
                counts[v["stream_kind"]] = counts.get(v["stream_kind"], 0) + 1
            end = {"meeting_uuid": self.meeting, "rtms_stream_id": self.stream, "topic": topic,
                   "ended": "STOPPED", "stop_reason": 6, "stream_started_ms": T0,
                   "last_timestamp_ms": max((v["timestamp_ms"] for v in mine), default=None),
                   "ingest_epoch": self.epoch, "counts": counts, "complete": True}  # fmt: skip
            out.append(RawRecord(topic, self.meeting.encode(), None, end))
        return out


def _shuffle_within(items: list[dict[str, Any]], spread_ms: int, rnd: random.Random) -> list[dict[str, Any]]:
    """Reorder so no item moves more than `spread_ms` of media time from its place."""
    keyed = sorted(items, key=lambda v: v["timestamp_ms"] + rnd.uniform(0, spread_ms))
    return [dict(v) for v in keyed]


def interleave(*streams: list[RawRecord], seed: int = 7) -> list[RawRecord]:
    """Merge streams' records keeping each stream's per-topic order."""
    rnd = random.Random(seed)
    queues = [list(s) for s in streams if s]
    out = []
    while queues:
        q = rnd.choice(queues)
        out.append(q.pop(0))
        if not q:
            queues.remove(q)
    return out


async def write_raw(settings: Settings, records: list[RawRecord]) -> None:
    """Produce records to the raw topics (in the meeting's partition), acknowledged, in order."""
    codec = Codec(settings.schema_registry_url, settings.topic_prefix)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers(settings), enable_idempotence=True, linger_ms=2
    )
    await producer.start()
    try:
        futures = []
        for r in records:
            topic = settings.topic_prefix + r.topic
            part = partition_for(r.key.decode(), settings.partitions)
            if r.raw_bytes is not None:
                value: bytes | None = r.raw_bytes
                headers = None
            elif r.value is None:
                value, headers = None, r.headers()
            else:
                value, headers = codec.encode(topic, r.value), None
            futures.append(await producer.send(topic, value, key=r.key, partition=part, headers=headers))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def undisturbed(settings: Settings, window_ms: int = 300) -> dict[str, list[dict[str, Any]]]:
    """What one undisturbed run makes of the raw topics as they are now: the pure core fed every
    raw record of each partition in offset order, per raw topic. Keyed by ordered topic base name;
    values as `read_topic` gives them (markers as StreamEnd + end_of_stream)."""
    codec = Codec(settings.schema_registry_url, settings.topic_prefix)
    cores: dict[int, PartitionCore] = {}
    out: dict[str, list[tuple[int, dict[str, Any]]]] = {
        t: [] for t in (*OUTPUTS, "rtms.late", "rtms.deadletter")
    }
    from schemas.markers import read_marker

    for base in RAW:
        topic = settings.topic_prefix + base
        # read_topic decodes; the core needs the bytes and headers, so read them raw here
        for partition, offset, key, value, headers in await _raw_records(settings, topic):
            core = cores.setdefault(
                partition,
                PartitionCore(
                    partition, lambda b, d: codec.decode(settings.topic_prefix + b, d), LaneConfig(window_ms)
                ),
            )
            for o in core.feed(base, offset, key, value, headers):
                if o.value is None:
                    end = read_marker(marker_headers(o.end)) if o.end is not None else None
                    assert end is not None
                    out[o.topic].append((partition, {**end, "end_of_stream": True}))
                else:
                    encoded = codec.encode(settings.topic_prefix + o.topic, o.value)
                    decoded = codec.decode(settings.topic_prefix + o.topic, encoded)
                    out[o.topic].append((partition, {**decoded, "end_of_stream": False}))
    return {t: [v for _, v in sorted(vals, key=lambda pv: pv[0])] for t, vals in out.items()}


async def _raw_records(settings: Settings, topic: str) -> list[tuple[int, int, Any, Any, Any]]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers(settings), enable_auto_commit=False,
                                auto_offset_reset="earliest")  # fmt: skip
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(settings.partitions)]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        out = []
        remaining = {tp for tp in tps if ends[tp] > 0}
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=500)
            for tp, records in batch.items():
                out += [
                    (tp.partition, r.offset, r.key, r.value, r.headers)
                    for r in records
                    if r.offset < ends[tp]
                ]
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
        out.sort(key=lambda r: (r[0], r[1]))
        return out
    finally:
        await consumer.stop()


async def ordered(settings: Settings, base: str) -> list[dict[str, Any]]:
    """An output topic's records now, per partition in offset order (decoded; markers included)."""
    return [v for _, v, _, _ in await read_topic(settings, settings.topic_prefix + base)]


class ProcessProcess:
    """`rtmsflow process` in a subprocess, with its web port."""

    def __init__(self, env: dict[str, str], group: str, log_path: Path, **extra_env: str) -> None:
        self.port = free_port()
        self.log_path = log_path
        self.log = log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rtmsflow.cli", "process", "--group", group, "--metrics-port", str(self.port),
             "--session-timeout-ms", "6000"],
            env={**env, **extra_env}, stdout=self.log, stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
        )  # fmt: skip

    async def health(self) -> dict[str, Any] | None:
        try:
            async with aiohttp.ClientSession() as http:
                async with http.get(
                    f"http://127.0.0.1:{self.port}/health", timeout=aiohttp.ClientTimeout(total=1)
                ) as r:
                    return dict(await r.json()) if r.status == 200 else None
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


async def wait_for(condition: Any, timeout_s: float = 40.0, what: str = "condition") -> Any:
    """Poll an async condition until it returns something truthy (never decides a result by time)."""
    async with asyncio.timeout(timeout_s):
        while True:
            got = await condition()
            if got:
                return got
            await asyncio.sleep(0.2)
