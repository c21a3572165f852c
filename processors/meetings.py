"""The `rtms.meetings` index: per meeting, where each of its streams' records are.

`MeetingBook` (pure) keeps one partition's index: what its core read, where its ordered records went
(`sent`, `take`, `settle` around a commit cycle) and which meetings to rewrite (a new stream, a marker,
else every `interval_ms`); `fit_index` shrinks a record to `schemas.limits.MAX_INDEX_BYTES`."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from processors.lanes import ORDERED_OF, PartitionCore, StreamKey, StreamState
from schemas.records import StreamEnd

ORDERED = tuple(ORDERED_OF.values())
# Where the shell put an ordered record (its outbox location): an offset once acknowledged.
Where = TypeVar("Where")


@dataclass
class Sent(Generic[Where]):
    """Where a cycle's ordered records went, taken with its snapshot and settled once acknowledged:
    per (meeting, stream, topic) the stream's start and its first and last record; each marker."""

    records: dict[tuple[str, str, str], tuple[int, list[Where]]] = field(default_factory=dict)
    markers: list[tuple[str, Where, StreamEnd]] = field(default_factory=list)


@dataclass
class Read:
    """What `MeetingBook.read` found new in the core (for the shell's log)."""

    streams: list[StreamState] = field(default_factory=list)  # seen for the first time
    # the raw-topic markers read: (raw topic, offset, StreamEnd)
    ends: list[tuple[str, int, dict[str, Any]]] = field(default_factory=list)


@dataclass
class _Stream:
    entry: dict[str, Any]
    offsets: dict[str, dict[str, Any]] = field(default_factory=dict)
    participants: dict[int, str | None] = field(default_factory=dict)
    ended_topics: set[str] = field(default_factory=set)


@dataclass
class _Meeting:
    index: dict[str, Any]
    streams: dict[str, _Stream] = field(default_factory=dict)
    dirty: bool = False
    urgent: bool = False
    written_at: float = 0.0


class MeetingBook(Generic[Where]):
    """The index records of one partition's meetings; see the module docstring."""

    def __init__(self, partition: int, interval_ms: int = 5_000) -> None:
        self.partition = partition
        self.interval_s = interval_ms / 1000
        self.meetings: dict[str, _Meeting] = {}
        self._sent: dict[tuple[str, str, str], list[Where]] = {}  # first and last per stream and topic
        self._sent_markers: list[tuple[str, Where, StreamEnd]] = []
        self._logged: set[StreamKey] = set()  # streams `read` has reported as new

    # -- the shell's bookkeeping around a commit cycle ------------------------------------------

    def sent(self, stream: StreamKey, topic: str, where: Where, media_ms: int | None) -> None:
        """An ordered record of `stream` (media time `media_ms`) went to `where` on `topic`: the first
        and last per cycle are enough for the index's offsets."""
        meeting, rtms_stream = stream
        key = (meeting, rtms_stream, topic)
        seen = self._sent.get(key)
        if seen is None:
            self._sent[key] = [where, where]
        else:
            seen[1] = where
        if media_ms is not None:
            m = self.meetings.get(meeting)
            if m is not None and media_ms > m.index["updated_at_ms"]:
                m.index["updated_at_ms"] = media_ms

    def sent_marker(self, topic: str, where: Where, end: StreamEnd) -> None:
        """An end-of-stream marker went to `where` on the ordered `topic`."""
        self._sent_markers.append((topic, where, end))

    def take(self, core: PartitionCore) -> Sent[Where]:
        """Where the records sent since the last call went (with each stream's start, as the core
        has it now); `settle` it once they are acknowledged."""
        records, self._sent = self._sent, {}
        markers, self._sent_markers = self._sent_markers, []
        taken: Sent[Where] = Sent(markers=markers)
        for (meeting, stream, topic), wheres in records.items():
            st = core.streams.get((meeting, stream))
            taken.records[(meeting, stream, topic)] = (st.started_ms if st else 0, wheres)
        return taken

    def settle(self, sent: Sent[Where], offset_of: Callable[[Where], int]) -> None:
        """`sent`'s records are acknowledged: put their offsets in the index (markers last: a marker
        is its stream's last record)."""
        for (meeting, stream, topic), (started_ms, wheres) in sent.records.items():
            for where in wheres:
                self.saw(meeting, stream, started_ms, topic, offset_of(where), None)
        for topic, where, end in sent.markers:
            self.marker(topic, offset_of(where), end)

    def read(self, core: PartitionCore) -> Read:
        """Put what the core read since the last call in the index (raw offsets, participants, raw
        markers) and clear it from the core; returns what was new, for the log."""
        new = Read()
        self._logged.intersection_update(core.streams)
        for st in core.streams.values():
            if st.key not in self._logged:
                self._logged.add(st.key)
                new.streams.append(st)
            for raw_topic, (first, last) in st.raw_offsets.items():
                self.saw(st.meeting_uuid, st.rtms_stream_id, st.started_ms, raw_topic, first, None)
                self.saw(st.meeting_uuid, st.rtms_stream_id, st.started_ms, raw_topic, last, None)
            st.raw_offsets.clear()
            if st.participants:
                self.participants(st.meeting_uuid, st.rtms_stream_id, st.started_ms, st.participants)
        for raw_topic, offset, end in core.ended_streams:
            self.marker(raw_topic, offset, end)
        new.ends, core.ended_streams = core.ended_streams, []
        return new

    # -- the index -------------------------------------------------------------------------------

    def load(self, index: dict[str, Any]) -> None:
        """Take a record read back from `rtms.meetings` (the latest one per meeting wins)."""
        m = _Meeting(dict(index))
        for entry in index.get("streams") or ():
            s = _Stream(dict(entry))
            for off in entry.get("offsets") or ():
                s.offsets[off["topic"]] = dict(off)
            for p in entry.get("participants") or ():
                s.participants[p["user_id"]] = p.get("user_name")
            if entry.get("state") == "ENDED":
                s.ended_topics = set(ORDERED)
            m.streams[entry["rtms_stream_id"]] = s
        self.meetings[index["meeting_uuid"]] = m

    def _stream(self, meeting: str, stream: str, started_ms: int) -> tuple[_Meeting, _Stream]:
        m = self.meetings.get(meeting)
        if m is None:
            m = self.meetings[meeting] = _Meeting(
                {"meeting_uuid": meeting, "partition": self.partition, "updated_at_ms": started_ms}
            )
        s = m.streams.get(stream)
        if s is None:
            entry = {"rtms_stream_id": stream, "state": "LIVE", "started_at_ms": started_ms}
            s = m.streams[stream] = _Stream(entry)
            m.urgent = True
        return m, s

    def saw(
        self, meeting: str, stream: str, started_ms: int, topic: str, offset: int, media_ms: int | None
    ) -> None:
        """A record of the stream is at `offset` of `topic` (raw or ordered, without prefix)."""
        m, s = self._stream(meeting, stream, started_ms)
        off = s.offsets.get(topic)
        if off is None:
            s.offsets[topic] = {
                "topic": topic,
                "first_offset": offset,
                "last_offset": offset,
                "end_offset": None,
            }
        elif offset > off["last_offset"]:
            off["last_offset"] = offset
        if media_ms is not None and media_ms > m.index["updated_at_ms"]:
            m.index["updated_at_ms"] = media_ms
        m.dirty = True

    def participants(self, meeting: str, stream: str, started_ms: int, seen: dict[int, str | None]) -> None:
        m, s = self._stream(meeting, stream, started_ms)
        for pid, name in seen.items():
            if s.participants.get(pid) is None and (pid not in s.participants or name is not None):
                s.participants[pid] = name
                m.dirty = True

    def marker(self, topic: str, offset: int, end: StreamEnd | dict[str, Any]) -> None:
        """An end-of-stream marker of the stream is at `offset` of `topic` (raw or ordered)."""
        m, s = self._stream(end["meeting_uuid"], end["rtms_stream_id"], end["stream_started_ms"])
        off = s.offsets.setdefault(topic, {"topic": topic, "first_offset": offset, "last_offset": offset})
        off["last_offset"] = max(off["last_offset"], offset)
        off["end_offset"] = offset
        s.entry["ended"] = end.get("ended")
        s.entry["stop_reason"] = end.get("stop_reason")
        last = end.get("last_timestamp_ms")
        if last is not None:
            s.entry["stopped_at_ms"] = max(s.entry.get("stopped_at_ms") or last, last)
        if topic in ORDERED:
            s.ended_topics.add(topic)
            if s.ended_topics >= set(ORDERED):
                s.entry["state"] = "ENDED"
        m.dirty = m.urgent = True

    def due(self, now: float | None = None) -> list[dict[str, Any]]:
        """MeetingIndex records to write now (and forget meetings whose streams all ended)."""
        now = time.monotonic() if now is None else now
        out = []
        for uuid, m in list(self.meetings.items()):
            if not m.dirty or (not m.urgent and now - m.written_at < self.interval_s):
                continue
            out.append(self.record(uuid))
            m.dirty = m.urgent = False
            m.written_at = now
        return out

    def record(self, meeting: str) -> dict[str, Any]:
        """The meeting's MeetingIndex record."""
        m = self.meetings[meeting]
        everyone: dict[int, str | None] = {}
        streams = []
        for s in sorted(
            m.streams.values(), key=lambda s: (s.entry["started_at_ms"], s.entry["rtms_stream_id"])
        ):
            for pid, name in s.participants.items():
                if everyone.get(pid) is None:
                    everyone[pid] = name
            streams.append(
                {
                    **s.entry,
                    "offsets": [s.offsets[t] for t in sorted(s.offsets)],
                    "participants": [
                        {"user_id": p, "user_name": n} for p, n in sorted(s.participants.items())
                    ],
                }
            )
        return {
            **m.index,
            "partition": self.partition,
            "participants": [{"user_id": p, "user_name": n} for p, n in sorted(everyone.items())],
            "streams": streams,
        }


@dataclass(frozen=True)
class Fitted:
    """An index record cut to fit, and what was left out of it."""

    record: dict[str, Any]
    stream_lists_dropped: bool = False
    participants_dropped: int = 0
    streams_dropped: int = 0


def _varint_bytes(n: int) -> int:
    """Bytes of Avro's zig-zag varint of `n`."""
    z = (n << 1) ^ (n >> 63)
    size = 1
    while z >= 0x80:
        z >>= 7
        size += 1
    return size


def participant_bytes(p: dict[str, Any]) -> int:
    """Encoded size of one Participant (user_id long, user_name ["null", "string"])."""
    name = p.get("user_name")
    if name is None:
        return _varint_bytes(p["user_id"]) + 1
    n = len(name.encode("utf-8", "surrogatepass"))
    return _varint_bytes(p["user_id"]) + 1 + _varint_bytes(n) + n


def fit_index(record: dict[str, Any], max_bytes: int, size_of: Callable[[dict[str, Any]], int]) -> Fitted:
    """`record` cut until `size_of(record) <= max_bytes`, the record itself when it fits: first the
    per-stream participant lists go (the meeting's list keeps everyone), then the meeting's list is
    cut to its lowest user ids that fit, then the oldest streams' entries; `Fitted` says what went.
    `size_of` is the encoded size (the shell's codec); pure otherwise. A few encodes, whatever the
    participant count: the meeting's list is sized one participant at a time, and a record whose
    participants alone are over the limit is not encoded whole."""
    lists = [
        record.get("participants") or (),
        *((s.get("participants") or ()) for s in record.get("streams") or ()),
    ]
    if (
        sum(participant_bytes(p) for people in lists for p in people) <= max_bytes
        and size_of(record) <= max_bytes
    ):
        return Fitted(record)
    everyone = list(record.get("participants") or ())
    out = {
        **record,
        "participants": [],
        "streams": [{**s, "participants": []} for s in record.get("streams") or ()],
    }
    streams = list(out["streams"])
    base = size_of(out)
    while base > max_bytes and len(streams) > 1:
        streams = streams[1:]  # oldest first: drop from the front, the live stream stays
        out["streams"] = streams
        base = size_of(out)
    keep, items = 0, 0
    for p in everyone:  # an array of k > 0 items adds varint(k) and items; the empty one is 1 byte
        grown = items + participant_bytes(p)
        if base - 1 + _varint_bytes(keep + 1) + grown + 1 > max_bytes:
            break
        keep, items = keep + 1, grown
    out["participants"] = everyone[:keep]
    return Fitted(
        out,
        stream_lists_dropped=True,
        participants_dropped=len(everyone) - keep,
        streams_dropped=len(record.get("streams") or ()) - len(streams),
    )
