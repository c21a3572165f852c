"""Helpers of the sink tests: ordered-topic records shaped as the contract says, written to the broker.

Until the processors land, the tests write `rtms.audio` / `rtms.video` / `rtms.transcript` records
directly: each lane tiles the stream's media time (frames and gap records, a gap where media is
missing, a trailing gap to the end), `seq` counts frames and gaps of a lane, and each topic ends
with the stream's end-of-stream marker (null value + StreamEnd header) with the counts written.
`OrderedStream` also keeps what was sent (PCM per track, H.264 access units) for the assertions.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from rtmsflow.kafka_client import bootstrap_servers
from rtmsflow.settings import Settings
from schemas.codec import Codec
from schemas.markers import marker_headers
from schemas.topics import AUDIO, CHAT, TRANSCRIPT, VIDEO, partition_for

ORIGIN = 1_747_316_541_000  # 2025-05-15T13:42:21.000Z
Record = tuple[dict[str, Any] | None, list[tuple[str, bytes]]]  # (value or None for a marker, headers)


# the ordered topics the sinks read, each ended by a marker
ALL_MARKED = (AUDIO.name, VIDEO.name, TRANSCRIPT.name, CHAT.name)


@dataclass
class _Lane:
    kind: str
    participant_id: int = 0
    name: str | None = None
    seq: int = 0
    pos_ms: int = 0
    last_ms: int = 0


@dataclass
class OrderedStream:
    """One stream's ordered records per topic (base name), and what they carry."""

    meeting_uuid: str
    rtms_stream_id: str
    origin_ms: int = ORIGIN
    duration_ms: int = 0
    records: dict[str, list[Record]] = field(
        default_factory=lambda: {AUDIO.name: [], VIDEO.name: [], TRANSCRIPT.name: [], CHAT.name: []}
    )
    pcm: dict[str, bytearray] = field(default_factory=dict)  # WAV name -> samples expected
    video: list[bytes] = field(default_factory=list)  # VIDEO access units in order
    deskshare: list[bytes] = field(default_factory=list)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    _lanes: dict[tuple[str, int], _Lane] = field(default_factory=dict)

    def _base(self, lane: _Lane, offset_ms: int) -> dict[str, Any]:
        record = {
            "meeting_uuid": self.meeting_uuid,
            "rtms_stream_id": self.rtms_stream_id,
            "stream_kind": lane.kind,
            "participant_id": lane.participant_id,
            "participant_name": lane.name,
            "timestamp_ms": self.origin_ms + offset_ms,
            "stream_started_ms": self.origin_ms,
            "ingest_epoch": 1,
            "ingest_seq": lane.seq,
            "received_at_ms": self.origin_ms + offset_ms + 5,
            "seq": lane.seq,
            "offset_ms": offset_ms,
        }
        lane.seq += 1
        return record

    def _count(self, topic: str, kind: str) -> None:
        per = self.counts.setdefault(topic, {})
        per[kind] = per.get(kind, 0) + 1

    def _lane(self, kind: str, participant_id: int = 0, name: str | None = None) -> _Lane:
        return self._lanes.setdefault((kind, participant_id), _Lane(kind, participant_id, name))

    def _gap(
        self, topic: str, lane: _Lane, start: int, length: int, reason: str, media: dict[str, Any]
    ) -> None:
        record = self._base(lane, start)
        record.update(
            gap={"start_ms": self.origin_ms + start, "length_ms": length, "reason": reason}, media=media
        )
        if topic == VIDEO.name:
            record.update(payload=b"", keyframe=False, has_parameter_sets=False)
        else:
            record.update(payload=b"")
        self.records[topic].append((record, []))
        self._count(topic, f"{lane.kind}_GAP")

    def audio(
        self, offset_ms: int, pcm: bytes, participant: tuple[int, str] | None = None, reason: str = "LOSS"
    ) -> None:
        """An audio packet; a gap record first when the lane has a hole before it."""
        mixed = participant is None
        pid, name = participant or (0, None)
        lane = self._lane("AUDIO", pid, name)
        media = {"codec": "L16", "sample_rate": 16000, "channels": 1, "send_rate_ms": 20, "mixed": mixed}
        wav = "audio.wav" if mixed else f"audio-{pid}.wav"
        track = self.pcm.setdefault(wav, bytearray())
        if offset_ms > lane.pos_ms:
            self._gap(
                AUDIO.name, lane, lane.pos_ms, offset_ms - lane.pos_ms, reason if mixed else "SILENT", media
            )
            track += bytes((offset_ms - lane.pos_ms) * 32)
        record = self._base(lane, offset_ms)
        record.update(gap=None, payload=pcm, media=media)
        self.records[AUDIO.name].append((record, []))
        self._count(AUDIO.name, "AUDIO")
        track += pcm
        lane.pos_ms = offset_ms + len(pcm) // 32

    def frame(self, kind: str, offset_ms: int, data: bytes, keyframe: bool, size: tuple[int, int], fps: int,
              speaker: tuple[int, str] = (0, "")) -> None:  # fmt: skip
        """A VIDEO or DESKSHARE access unit; a gap record first (the last frame held) after a hole."""
        lane = self._lane(kind)
        media = {"codec": "H264", "width": size[0], "height": size[1], "fps": fps, "mode": "ACTIVE_SPEAKER"}
        step = 1000 // fps
        if lane.seq == 0 and offset_ms > 0:
            self._gap(VIDEO.name, lane, 0, offset_ms, "VIDEO_OFF", media)
        elif lane.seq and offset_ms > lane.last_ms + step:
            self._gap(VIDEO.name, lane, lane.last_ms + step, offset_ms - lane.last_ms - step, "PAUSE", media)
        record = self._base(lane, offset_ms)
        record.update(participant_id=speaker[0], participant_name=speaker[1] or None)
        record.update(gap=None, payload=data, keyframe=keyframe, has_parameter_sets=keyframe, media=media)
        self.records[VIDEO.name].append((record, []))
        self._count(VIDEO.name, kind)
        (self.video if kind == "VIDEO" else self.deskshare).append(data)
        lane.last_ms = offset_ms

    def utterance(self, start_ms: int, end_ms: int, participant: tuple[int, str], text: str) -> None:
        """A final utterance (times in ms from t = 0)."""
        lane = self._lane("TRANSCRIPT")
        record = {
            "meeting_uuid": self.meeting_uuid,
            "rtms_stream_id": self.rtms_stream_id,
            "utterance_id": f"{self.rtms_stream_id}/{lane.seq}",
            "seq": lane.seq,
            "participant_id": participant[0],
            "participant_name": participant[1],
            "start_ms": self.origin_ms + start_ms,
            "end_ms": self.origin_ms + end_ms,
            "stream_started_ms": self.origin_ms,
            "text": text,
            "language_code": 9,
            "language": "en",
            "final": True,
        }
        lane.seq += 1
        self.records[TRANSCRIPT.name].append((record, []))
        self._count(TRANSCRIPT.name, "TRANSCRIPT")

    def chat(
        self, offset_ms: int, sender: tuple[int, str], text: str, recipients: Sequence[tuple[int, str]] = ()
    ) -> None:
        """A chat message (time in ms from t = 0); private when it names `recipients`."""
        lane = self._lane("CHAT")
        record = {
            "meeting_uuid": self.meeting_uuid,
            "rtms_stream_id": self.rtms_stream_id,
            "chat_id": f"{self.rtms_stream_id}/{lane.seq}",
            "seq": lane.seq,
            "message_id": None,
            "sender_id": sender[0],
            "sender_name": sender[1],
            "timestamp_ms": self.origin_ms + offset_ms,
            "stream_started_ms": self.origin_ms,
            "text": text,
            "text_truncated": False,
            "private": bool(recipients),
            "recipients": [{"user_id": i, "user_name": n} for i, n in recipients],
        }
        lane.seq += 1
        self.records[CHAT.name].append((record, []))
        self._count(CHAT.name, "CHAT")

    def end(self, duration_ms: int, markers: Sequence[str] = ALL_MARKED) -> None:
        """Trailing audio gaps to `duration_ms`, then the markers of `markers`' topics."""
        self.duration_ms = duration_ms
        for (kind, pid), lane in sorted(self._lanes.items()):
            if kind == "AUDIO" and lane.pos_ms < duration_ms:
                media = {
                    "codec": "L16",
                    "sample_rate": 16000,
                    "channels": 1,
                    "send_rate_ms": 20,
                    "mixed": pid == 0,
                }
                self._gap(
                    AUDIO.name,
                    lane,
                    lane.pos_ms,
                    duration_ms - lane.pos_ms,
                    "SILENT" if pid else "LOSS",
                    media,
                )
                self.pcm["audio.wav" if pid == 0 else f"audio-{pid}.wav"] += bytes(
                    (duration_ms - lane.pos_ms) * 32
                )
                lane.pos_ms = duration_ms
        for topic in markers:
            end = {
                "meeting_uuid": self.meeting_uuid,
                "rtms_stream_id": self.rtms_stream_id,
                "topic": topic,
                "ended": "STOPPED",
                "stream_started_ms": self.origin_ms,
                "last_timestamp_ms": self.origin_ms + duration_ms,
                "ingest_epoch": 1,
                "counts": dict(self.counts.get(topic, {})),
                "complete": True,
            }
            self.records[topic].append((None, marker_headers(end)))


def from_meeting(
    meeting: Any,
    meeting_uuid: str,
    rtms_stream_id: str,
    *,
    pause: tuple[int, int] | None = None,
    audio_mode: str = "mixed",
    deskshare: bool = False,
    markers: Sequence[str] = ALL_MARKED,
) -> OrderedStream:
    """The ordered records of an emulator `SyntheticMeeting` (media offsets as its timeline says);
    `pause` = [start, end) ms with no audio or video (PAUSE gaps)."""
    spec = meeting.spec
    size = {"360p": (640, 360), "720p": (1280, 720), "1080p": (1920, 1080)}.get(spec.video or "", (1280, 720))
    out = OrderedStream(meeting_uuid, rtms_stream_id)
    for item in meeting.timeline(audio_mode=audio_mode, deskshare=deskshare, events=False, chat=True):
        if pause and pause[0] <= item.offset_ms < pause[1] and item.kind not in ("transcript", "chat"):
            continue
        if item.kind == "audio":
            who = None if audio_mode == "mixed" else (item.user_id, item.user_name)
            out.audio(item.offset_ms, item.data, who, reason="PAUSE")
        elif item.kind in ("video", "deskshare"):
            kind = "VIDEO" if item.kind == "video" else "DESKSHARE"
            out.frame(
                kind, item.offset_ms, item.data, item.keyframe, size, spec.fps, (item.user_id, item.user_name)
            )
        elif item.kind == "transcript":
            out.utterance(item.start_ms, item.end_ms, (item.user_id, item.user_name), item.data)
        elif item.kind == "chat":
            to = [(p["user_id"], p["user_name"]) for p in (item.event or {}).get("recipients") or ()]
            out.chat(item.offset_ms, (item.user_id, item.user_name), str(item.data), to)
    out.end(meeting.duration_ms, markers)
    return out


async def produce(
    settings: Settings, streams: Iterable[OrderedStream], topics: Iterable[str] | None = None
) -> None:
    """Write the streams' records (all topics, or `topics`) in order, in each meeting's partition."""
    codec = Codec(settings.schema_registry_url, settings.topic_prefix)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers(settings), enable_idempotence=True,
                                max_request_size=8 << 20, linger_ms=5)  # fmt: skip
    await producer.start()
    try:
        futures = []
        for stream in streams:
            partition = partition_for(stream.meeting_uuid, settings.partitions)
            for base, records in stream.records.items():
                if topics is not None and base not in topics:
                    continue
                broker = settings.topic_prefix + base
                for value, headers in records:
                    data = None if value is None else codec.encode(broker, value)
                    futures.append(await producer.send(broker, value=data, key=stream.meeting_uuid.encode(),
                                                       partition=partition, headers=headers))  # fmt: skip
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def stream_dir(settings: Settings, stream: OrderedStream, data_dir: Path | None = None) -> Path:
    """Where the sinks write `stream`'s files."""
    from sinks.layout import StreamLayout

    root = data_dir or Path(settings.data_dir)
    return StreamLayout(root, stream.meeting_uuid, stream.rtms_stream_id, stream.origin_ms).stream_dir


async def wait_for(predicate: Any, timeout_s: float = 60.0, what: str = "condition") -> None:
    """Poll `predicate()` until true; fail after `timeout_s` (a deadline, never a result-deciding sleep)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def with_idle_timeout(settings: Settings, seconds: float) -> Settings:
    return dataclasses.replace(settings, sink_idle_timeout_s=seconds)
