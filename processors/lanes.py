"""The processors' pure core: one partition's raw records in, ordered output records out.

`PartitionCore` splits each raw topic into lanes (reorder, gaps, utterances) and returns ordered records,
markers, late and dead-letter records; no broker, no clock, a lane depends only on its own raw topic.
Its `snapshot` and restore make a restart exact (docs/DESIGN.md, "Processors")."""

from __future__ import annotations

import json
import struct
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple, cast

from processors.chat import chat_message
from processors.gaps import AudioGapTracker, GapReason, GapRecord, VideoGapTracker
from processors.reorder import Fate, ReorderBuffer
from processors.utterances import TranscriptPiece, Utterance, UtteranceAssembler
from schemas import topics
from schemas.identity import identity_digest
from schemas.limits import implausible
from schemas.markers import MarkerError, read_control
from schemas.records import StreamEnd

# base topic names (the shell adds the run's prefix), all from schemas/topics.py
RAW_AUDIO, RAW_VIDEO = topics.RAW_AUDIO.name, topics.RAW_VIDEO.name
RAW_TRANSCRIPT, RAW_EVENTS = topics.RAW_TRANSCRIPT.name, topics.RAW_EVENTS.name
RAW_CHAT = topics.RAW_CHAT.name
RAW_TOPICS = (RAW_AUDIO, RAW_VIDEO, RAW_TRANSCRIPT, RAW_EVENTS, RAW_CHAT)
AUDIO, VIDEO = topics.AUDIO.name, topics.VIDEO.name
TRANSCRIPT, EVENTS, CHAT = topics.TRANSCRIPT.name, topics.EVENTS.name, topics.CHAT.name
ORDERED_OF = {
    RAW_AUDIO: AUDIO,
    RAW_VIDEO: VIDEO,
    RAW_TRANSCRIPT: TRANSCRIPT,
    RAW_EVENTS: EVENTS,
    RAW_CHAT: CHAT,
}
TRANSCRIPT_PARTIAL = topics.TRANSCRIPT_PARTIAL.name
LATE, DEADLETTER = topics.LATE.name, topics.DEADLETTER.name
_KINDS_OF = {
    RAW_AUDIO: ("AUDIO",),
    RAW_VIDEO: ("VIDEO", "DESKSHARE"),
    RAW_TRANSCRIPT: ("TRANSCRIPT",),
    RAW_EVENTS: ("EVENT", "CHAT"),  # CHAT: chat kept as events by ingest before rtms.raw.chat
    RAW_CHAT: ("CHAT",),
}
# lanes keyed by arrival order (raw offsets), without a window: see _TRANSCRIPT_ORDER; chat too,
# a message's place is where Zoom sent it
_ARRIVAL_ORDER = (RAW_TRANSCRIPT, RAW_CHAT)
_FRAMES = (RAW_AUDIO, RAW_VIDEO)
# Individual-video cameras (lanes) per stream: Zoom serves 4 at 720p; far more is hostile input.
MAX_CAMERA_LANES = 16
_ENDED_MEMORY = 1_000  # (stream, topic) ends remembered per partition: repeated markers, late records
# _TRANSCRIPT_ORDER: a transcript lane keeps Zoom's order (keys are raw offsets, no window): Zoom
# sends a piece after its words, so reordering by start time would hold each piece until a later
# one passed the window (seconds), and marks from the media clock would make an overlapping
# speaker's piece late. The assembler keeps utterance starts monotone. Repeats are recognised
# within this many records.
_TRANSCRIPT_HORIZON = 5_000
_RECENT = struct.Struct(">q16s")

StreamKey = tuple[str, str]  # (meeting uuid, rtms stream id)


class LaneKey(NamedTuple):
    """A lane: its stream, raw topic (base name), stream kind, and participant and channel (per-participant
    audio; 0 and None otherwise)."""

    meeting_uuid: str
    rtms_stream_id: str
    topic: str
    kind: str
    participant_id: int
    channel_id: str | None


Decode = Callable[[str, bytes], dict[str, Any]]


@dataclass(slots=True)
class Output:
    """One record to write: `topic` is the base name; `value` None with `end` is an end-of-stream
    marker (the shell writes it as the marker's headers). `source` is (raw topic, offset) for late and
    dead-letter records (the shell de-duplicates them by it after a restart); `stream` says whose
    record it is (for the meetings index)."""

    topic: str
    key: bytes | None
    value: dict[str, Any] | None
    end: StreamEnd | None = None
    source: tuple[str, int] | None = None
    stream: StreamKey | None = None
    raw: bytes | None = None  # a frame's raw value, for `processors/frame_splice.py`


@dataclass(slots=True)
class _Item:
    """What a lane's ReorderBuffer holds: a decoded raw record with its order key and offset."""

    timestamp_ms: int
    digest: bytes
    offset: int
    value: dict[str, Any]
    raw: bytes | None = None  # the raw value (frames: the ordered value is spliced from it)


@dataclass
class LaneConfig:
    """The reorder window and de-duplication horizon, ms of media time."""

    window_ms: int = 300
    dedupe_horizon_ms: int = 5_000


class Lane:
    """One ordered lane: reorder buffer + seq + gap tracker (media) and its restart state."""

    def __init__(self, key: LaneKey, origin_ms: int, config: LaneConfig, state: dict[str, Any] | None = None):
        self.key = key
        self.topic, self.kind = key.topic, key.kind
        self.origin_ms = origin_ms
        self.config = config
        self.held_offsets: dict[bytes, int] = {}
        self.seq = 0
        self.last_epoch: int | None = None
        # the lane's last frame (payload and all; `template` leaves the payload out): what a gap
        # record is made of
        self.last_frame: dict[str, Any] | None = None
        self.audio: AudioGapTracker | None = None
        self.video: VideoGapTracker | None = None
        # (ts, digest) released within the horizon, mirrored from the buffer's own memory so a restart
        # can label a re-read duplicate as the undisturbed run would (ReorderBuffer keeps it private)
        self.recent: deque[tuple[int, bytes]] = deque()
        # the same entries as the state stores them (`_RECENT`): packed once each, not every cycle
        self.recent_packed: deque[bytes] = deque()
        self.restored_recent: dict[bytes, int] = {}
        self.resume_key: tuple[int, bytes] | None = None
        # progress marks: the lane's media clock, and known losses [start, end) not yet passed,
        # each with the offset of its mark (which holds the commit back until then)
        self.mark_ms: int | None = None
        self.losses: list[tuple[int, int, int]] = []
        cursor: int | None = None
        if state is not None:
            if state["resume_ts"] is not None and state["resume_digest"] is not None:
                self.resume_key = (state["resume_ts"], bytes(state["resume_digest"]))
            self.seq = state["seq"]
            self.last_epoch = state["last_epoch"]
            self.last_frame = json.loads(state["template"]) if state["template"] else None
            blob = bytes(state["recent"])
            for i in range(0, len(blob), _RECENT.size):
                ts, digest = _RECENT.unpack_from(blob, i)
                self.recent.append((ts, digest))
                self.recent_packed.append(blob[i : i + _RECENT.size])
                self.restored_recent[digest] = ts
            cursor = state["cursor_ms"]
            self.mark_ms = state.get("mark_ms")
        if self.topic in _ARRIVAL_ORDER:
            # pieces keep their arrival order (keys are raw offsets, the window none): see _TRANSCRIPT_ORDER
            self.buffer: ReorderBuffer[_Item] = ReorderBuffer.resume(self.resume_key, 0, _TRANSCRIPT_HORIZON)
            for released in self.recent:  # those up to the resume key (the open utterance's are re-fed)
                if self.resume_key is not None and released <= self.resume_key:
                    self.buffer.remember_released(released)
        else:
            self.buffer = ReorderBuffer.resume(self.resume_key, config.window_ms, config.dedupe_horizon_ms)
            if self.mark_ms is not None:
                self.buffer.advance(self.mark_ms)
        if self.template is not None and self.topic in (RAW_AUDIO, RAW_VIDEO):
            self._make_tracker(self.template, cursor)

    @property
    def template(self) -> dict[str, Any] | None:
        """The last frame's fields but its payload (built when asked: gaps, state, markers)."""
        v = self.last_frame
        return None if v is None else {k: val for k, val in v.items() if k != "payload"}

    # -- trackers -------------------------------------------------------------------------------

    def _make_tracker(self, value: dict[str, Any], cursor: int | None) -> None:
        media = value["media"]
        if self.topic == RAW_AUDIO:
            default = GapReason.LOSS if media.get("mixed", True) else GapReason.SILENT
            self.audio = AudioGapTracker.resume(
                self.origin_ms, media["sample_rate"], media["channels"], default, cursor, self.last_epoch
            )
        else:
            # a participant's own camera sends nothing while it is off: that is its unexplained hole
            camera = media.get("mode") == "INDIVIDUAL" and self.kind == "VIDEO"
            default = GapReason.VIDEO_OFF if camera else GapReason.LOSS
            fps = max(1, media["fps"])
            self.video = VideoGapTracker.resume(self.origin_ms, fps, cursor, self.last_epoch, None, default)
        self._apply_losses()

    # -- state ------------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """The lane's LaneState record (call when every output so far is acknowledged)."""
        last = self.buffer.last_key
        cursor: int | None = None
        if self.audio is not None:
            cursor = self.audio.cursor_ms
        elif self.video is not None:
            cursor = self.video.last_timestamp_ms
        return {
            "topic": self.topic,
            "stream_kind": self.kind,
            "participant_id": self.key.participant_id,
            "channel_id": self.key.channel_id,
            "resume_ts": None if last is None else last[0],
            "resume_digest": None if last is None else last[1],
            "recent": b"".join(self.recent_packed),
            "seq": self.seq,
            "cursor_ms": cursor,
            "last_epoch": self.last_epoch,
            "template": "" if self.template is None else json.dumps(self.template, sort_keys=True),
            "mark_ms": self.mark_ms,
        }

    def min_held_offset(self) -> int | None:
        low = min(self.held_offsets.values()) if self.held_offsets else None
        for _, _, offset in self.losses:
            if low is None or offset < low:
                low = offset
        return low

    def note_loss(self, start_ms: int, end_ms: int, offset: int) -> None:
        """A known loss [start_ms, end_ms) from a progress mark at `offset`: its gaps are LOSS,
        whatever their length."""
        if end_ms <= start_ms or any(loss[:2] == (start_ms, end_ms) for loss in self.losses):
            return
        self.losses.append((start_ms, end_ms, offset))
        self._apply_losses()

    def _apply_losses(self) -> None:
        tracker = self.audio or self.video
        if tracker is not None:
            for start, end, _ in self.losses:
                tracker.mark(start, end, GapReason.LOSS)
                if self.video is not None:
                    self.video.known_loss(start, end)

    def passed(self, media_ms: int) -> None:
        """The lane's output has reached `media_ms`: losses that end by then are settled."""
        if self.losses:
            self.losses = [loss for loss in self.losses if loss[1] > media_ms]

    def remember(self, item: _Item) -> None:
        """Mirror ReorderBuffer's memory of released digests (same horizon rule)."""
        self.held_offsets.pop(item.digest, None)
        recent, packed = self.recent, self.recent_packed
        recent.append((item.timestamp_ms, item.digest))
        packed.append(_RECENT.pack(item.timestamp_ms, item.digest))
        horizon = item.timestamp_ms - self.buffer.dedupe_horizon_ms
        while len(recent) > 1 and recent[0][0] < horizon:
            recent.popleft()
            packed.popleft()

    def relabel_skipped(self, item: _Item) -> Fate:
        """The fate the undisturbed run gave an input the resumed buffer skipped (it was read after
        the snapshot, so the crashed run's view of it is lost): DUPLICATE if its digest was still
        remembered, else LATE."""
        last = self.buffer.last_key
        ts = self.restored_recent.get(item.digest)
        if ts is not None and last is not None:
            if ts >= last[0] - self.buffer.dedupe_horizon_ms or item.digest == last[1]:
                return Fate.DUPLICATE
        return Fate.LATE


@dataclass
class StreamState:
    """A live stream of the partition: its lanes per raw topic, counts and assembler."""

    meeting_uuid: str
    rtms_stream_id: str
    started_ms: int
    counts: dict[str, int] = field(default_factory=dict)
    # by each lane's LaneKey, looked up per record with an equal plain tuple (a third of a LaneKey's cost)
    lanes: dict[tuple[str, str, str, str, int, str | None], Lane] = field(default_factory=dict)
    assembler: UtteranceAssembler | None = None
    open_pieces: list[_Item] = field(default_factory=list)  # pieces of the open utterance
    closed_key: tuple[int, bytes] | None = None  # last piece of the last closed utterance
    open_mark_ms: int | None = None  # the transcript lane's mark when the open utterance's first piece came
    partials_written: int = 0  # pieces of the open utterance whose partial is out
    partials_skip: int = 0  # after a restart: pieces of the open utterance whose partial was written before
    participants: dict[int, str | None] = field(default_factory=dict)
    raw_offsets: dict[str, list[int]] = field(default_factory=dict)  # raw topic -> [first, last] seen
    record_key: bytes = field(init=False, repr=False)  # the output records' key: the UUID's bytes

    def __post_init__(self) -> None:
        self.record_key = self.meeting_uuid.encode()

    @property
    def key(self) -> StreamKey:
        return (self.meeting_uuid, self.rtms_stream_id)

    def utterance_closed(self) -> None:
        """The open utterance closed: its last piece is the transcript lane's resume key."""
        last = self.open_pieces[-1]
        self.closed_key = (last.timestamp_ms, last.digest)
        self.open_pieces = []
        self.partials_written = self.partials_skip = 0

    def count(self, topic: str, kind: str, n: int = 1) -> None:
        name = f"{topic}|{kind}"
        self.counts[name] = self.counts.get(name, 0) + n


class PartitionCore:
    """One partition's processing state (docs/DESIGN.md, "Processors").

    Fed the raw records of one partition number, in offset order per topic. Lanes: audio per (meeting,
    stream), and per participant and channel for per-participant audio; video per (meeting, stream,
    kind), never per participant (active-speaker video switches participant); transcripts and events one
    per stream. Gap reasons come only from `ingest_epoch` and the lane's kind, and the assembler is
    ticked only by its own topic, so a lane's output never depends on how the raw topics interleave.

    Restart: `snapshot()` exports the state once every output so far is acknowledged; a core built from
    it re-reads from `commits`. Inputs below `positions` only rebuild state (their counts, late and
    dead-letter records were already written); each lane resumes at its last acknowledged key, and an
    input the resumed buffer skips that the crashed run read after the snapshot is labelled as that run
    would have (duplicate within the horizon, else late), so counts match an undisturbed run."""

    def __init__(
        self,
        partition: int,
        decode: Decode,
        config: LaneConfig | None = None,
        snapshot: dict[str, Any] | None = None,
    ) -> None:
        self.partition = partition
        self.decode = decode
        self.config = config or LaneConfig()
        self.streams: dict[StreamKey, StreamState] = {}
        self.ended: dict[tuple[str, str, str], None] = {}
        self.positions: dict[str, int] = {}  # per raw topic: after the furthest input ever read
        self.replay_below: dict[str, int] = {}  # the snapshot's positions: inputs below only rebuild state
        self.read_to: dict[str, int] = {}  # per raw topic: after the last input this core was fed
        self.restored_commits: dict[str, int] = {}
        self.stats = {"in": 0, "out": 0, "late": 0, "duplicate": 0, "gap": 0, "deadletter": 0, "skipped": 0}
        # for the meetings index (the shell drains it): (raw topic, marker offset, forwarded StreamEnd)
        self.ended_streams: list[tuple[str, int, dict[str, Any]]] = []
        if snapshot is not None:
            self._restore(snapshot)

    # -- restart ------------------------------------------------------------------------------

    def _restore(self, snap: dict[str, Any]) -> None:
        self.replay_below = dict(snap["positions"])
        # a snapshot taken before this core has re-read up to the old positions must still name
        # them (and the old commits): its counts already hold what was read up to there
        self.positions = dict(snap["positions"])
        self.restored_commits = dict(snap["commits"])
        for name in snap["ended"]:
            meeting, stream, topic = name.split("|")
            self.ended[(meeting, stream, topic)] = None
        for s in snap["streams"]:
            st = StreamState(
                s["meeting_uuid"], s["rtms_stream_id"], s["stream_started_ms"], dict(s["counts"])
            )
            for ls in s["lanes"]:
                key = LaneKey(
                    st.meeting_uuid,
                    st.rtms_stream_id,
                    ls["topic"],
                    ls["stream_kind"],
                    ls["participant_id"],
                    ls["channel_id"],
                )
                st.lanes[key] = Lane(key, st.started_ms, self.config, ls)
                if ls["topic"] == RAW_TRANSCRIPT:
                    st.closed_key = st.lanes[key].resume_key
            if any(lane.topic == RAW_TRANSCRIPT for lane in st.lanes.values()):
                st.assembler = UtteranceAssembler(
                    st.rtms_stream_id,
                    partials=True,
                    next_seq=s["utterance_next_seq"],
                    last_start_ms=s["utterance_last_start_ms"],
                )
                st.partials_skip = s.get("utterance_partials_written", 0)
            self.streams[st.key] = st

    def snapshot(self) -> dict[str, Any]:
        """The ProcessorState fields this core owns (`commits`, `positions`, `streams`, `ended`);
        valid when every output returned so far is acknowledged."""
        streams = []
        for st in self.streams.values():
            lanes = [lane.state() for lane in st.lanes.values()]
            for ls in lanes:
                if ls["topic"] == RAW_TRANSCRIPT:  # the open utterance's pieces are re-read
                    ck = st.closed_key
                    ls["resume_ts"], ls["resume_digest"] = (None, None) if ck is None else ck
                    if st.open_pieces:  # ... with the clock they first arrived under
                        ls["mark_ms"] = st.open_mark_ms
            next_seq, last_start = st.assembler.resume_state() if st.assembler else (0, None)
            streams.append(
                {
                    "meeting_uuid": st.meeting_uuid,
                    "rtms_stream_id": st.rtms_stream_id,
                    "stream_started_ms": st.started_ms,
                    "counts": dict(st.counts),
                    "utterance_next_seq": next_seq,
                    "utterance_last_start_ms": last_start,
                    "utterance_partials_written": max(st.partials_written, st.partials_skip),
                    "lanes": lanes,
                }
            )
        return {
            "commits": self.commit_offsets(),
            "positions": dict(self.positions),
            "streams": streams,
            "ended": ["|".join(k) for k in self.ended],
        }

    def commit_offsets(self) -> dict[str, int]:
        """Per raw topic: the first offset not settled by the output returned so far (held frames
        and the open utterance's pieces hold it back)."""
        out = dict(self.positions)
        for topic, commit in self.restored_commits.items():
            if self.read_to.get(topic, 0) < self.replay_below.get(topic, 0):  # still re-reading
                out[topic] = min(out.get(topic, commit), commit)
        for st in self.streams.values():
            for lane in st.lanes.values():
                low = lane.min_held_offset()
                if low is not None and low < out.get(lane.topic, low + 1):
                    out[lane.topic] = low
            for piece in st.open_pieces:
                if piece.offset < out.get(RAW_TRANSCRIPT, piece.offset + 1):
                    out[RAW_TRANSCRIPT] = piece.offset
        return out

    @property
    def held(self) -> int:
        """Frames held in reorder buffers (the reorder depth metric)."""
        return sum(lane.buffer.held for st in self.streams.values() for lane in st.lanes.values())

    # -- feeding ------------------------------------------------------------------------------

    def feed(
        self,
        topic: str,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        headers: Iterable[tuple[str, bytes]],
    ) -> list[Output]:
        """Take one raw record (`topic` without prefix); return what to write, in order."""
        replay = offset < self.replay_below.get(topic, 0)
        self.read_to[topic] = offset + 1
        if offset + 1 > self.positions.get(topic, 0):
            self.positions[topic] = offset + 1
        self.stats["in"] += 1
        out: list[Output] = []
        if value is None:
            try:
                control = read_control(headers)
            except MarkerError as exc:
                if not replay:
                    out.append(self._dead(topic, offset, key, b"", "MarkerError", str(exc), None))
                return out
            if control is None:  # a tombstone without control headers: nothing to do
                return out
            if (why := implausible(control)) is not None:
                if not replay:
                    out.append(self._dead(topic, offset, key, b"", "ImplausibleRecord", why, None))
                return out
            if "ended" in control:
                self._marker(topic, offset, key, dict(control), out)
            else:
                self._progress(topic, offset, dict(control), out)
            return out
        try:
            record = self.decode(topic, value)
            kind = record.get("stream_kind") or "UNKNOWN"
            if kind not in _KINDS_OF[topic]:
                raise _Reject("UnknownStreamKind", f"stream_kind {kind} does not belong on {topic}")
            if (why := implausible(record)) is not None:
                raise _Reject("ImplausibleRecord", why)
        except _Reject as exc:
            if not replay:
                out.append(self._dead(topic, offset, key, value, exc.error, exc.reason, None))
            return out
        except ValueError as exc:  # CodecError and friends: the bytes are not a value of the topic
            if not replay:
                out.append(self._dead(topic, offset, key, value, type(exc).__name__, str(exc), None))
            return out
        meeting, stream = stream_key = (record["meeting_uuid"], record["rtms_stream_id"])
        if (meeting, stream, topic) in self.ended:
            if not replay:
                out.append(self._late(topic, offset, record, value, 0))
                st = self.streams.get(stream_key)
                if st is not None:
                    st.count(ORDERED_OF[topic], "LATE")
            return out
        st = self.streams.get(stream_key)
        if st is None:
            st = self.streams[stream_key] = StreamState(meeting, stream, record["stream_started_ms"])
        seen = st.raw_offsets.get(topic)
        if seen is None:
            st.raw_offsets[topic] = [offset, offset]
        else:
            seen[1] = offset
        self._participants(st, topic, record)
        lane = self._lane(st, topic, kind, record)
        if lane is None:
            if not replay:
                why = f"more than {MAX_CAMERA_LANES} participant cameras in one stream"
                out.append(self._dead(topic, offset, key, value, "TooManyCameras", why, None))
            return out
        order_ms = record["timestamp_ms"]
        if topic in _ARRIVAL_ORDER:
            order_ms = offset  # arrival order (_TRANSCRIPT_ORDER)
        elif order_ms < st.started_ms and topic in _FRAMES:
            # stamped before the stream's t = 0: no recording has a place for it (ingest fixes
            # t = 0 from the media clock before the first record, so this takes a broken clock)
            if not replay:
                st.count(ORDERED_OF[topic], "LATE")
                self.stats["late"] += 1
                out.append(self._late(topic, offset, record, value, st.started_ms - order_ms))
            return out
        item = _Item(order_ms, identity_digest(record), offset, record, value if topic in _FRAMES else None)
        outcome = lane.buffer.push(item)
        fate = outcome.fate
        lateness = outcome.lateness_ms
        if fate is Fate.SKIPPED:
            if replay:
                return out
            fate = lane.relabel_skipped(item)
            last = lane.buffer.last_key
            lateness = 0 if last is None else max(0, last[0] - item.timestamp_ms)
        if fate is Fate.ACCEPTED:
            lane.held_offsets[item.digest] = offset
        elif not replay:
            if fate is Fate.DUPLICATE:
                st.count(ORDERED_OF[topic], "DUPLICATE")
                self.stats["duplicate"] += 1
            elif fate is Fate.LATE:
                st.count(ORDERED_OF[topic], "LATE")
                self.stats["late"] += 1
                out.append(self._late(topic, offset, record, value, lateness))
        self._emit(st, lane, outcome.released, out)
        return out

    # -- lanes ----------------------------------------------------------------------------------

    def _lane(self, st: StreamState, topic: str, kind: str, record: dict[str, Any]) -> Lane | None:
        """The record's lane, made on first use; None for a camera past MAX_CAMERA_LANES."""
        if topic == RAW_AUDIO and not record["media"].get("mixed", True):
            fields = (st.meeting_uuid, st.rtms_stream_id, topic, kind, record["participant_id"],
                      record.get("channel_id"))  # fmt: skip
        elif topic == RAW_VIDEO and kind == "VIDEO" and record["media"].get("mode") == "INDIVIDUAL":
            # individual video: each participant's camera is a lane of its own (order, gaps)
            fields = (st.meeting_uuid, st.rtms_stream_id, topic, kind, record["participant_id"], None)
            if fields not in st.lanes and _camera_lanes(st) >= MAX_CAMERA_LANES:
                return None
        elif topic in (RAW_TRANSCRIPT, RAW_EVENTS, RAW_CHAT):
            fields = (st.meeting_uuid, st.rtms_stream_id, topic, _KINDS_OF[topic][0], 0, None)
        else:
            fields = (st.meeting_uuid, st.rtms_stream_id, topic, kind, 0, None)
        lane = st.lanes.get(fields)
        if lane is None:
            key = LaneKey._make(fields)
            lane = st.lanes[key] = Lane(key, st.started_ms, self.config)
            if topic == RAW_TRANSCRIPT and st.assembler is None:
                st.assembler = UtteranceAssembler(st.rtms_stream_id, partials=True)
        return lane

    def _emit(self, st: StreamState, lane: Lane, released: list[_Item], out: list[Output]) -> None:
        for item in released:
            lane.remember(item)
            if lane.topic == RAW_TRANSCRIPT:
                self._piece(st, item, out)
            elif lane.topic == RAW_EVENTS:
                self._event(st, lane, item, out)
            elif lane.topic == RAW_CHAT:
                self._chat(st, lane, item, out)
            else:
                self._frame(st, lane, item, out)

    def _frame(self, st: StreamState, lane: Lane, item: _Item, out: list[Output]) -> None:
        v = item.value
        topic = ORDERED_OF[lane.topic]
        if lane.audio is None and lane.video is None:
            lane._make_tracker(v, None)
        epoch = v["ingest_epoch"]
        if lane.audio is not None:
            before = lane.audio.cursor_ms
            gap = lane.audio.frame(item.timestamp_ms, len(v["payload"]), epoch)
            placed = before if gap is None else gap.end_ms
        else:
            assert lane.video is not None
            gap = lane.video.frame(item.timestamp_ms, epoch)
            placed = max(item.timestamp_ms, st.started_ms)
        if gap is not None:
            self._gap(st, lane, gap, {k: val for k, val in v.items() if k != "payload"}, out)
        lane.passed(item.timestamp_ms)
        frame = dict(v)
        frame["seq"] = lane.seq
        frame["offset_ms"] = placed - st.started_ms
        frame["gap"] = None
        lane.seq += 1
        lane.last_epoch = epoch
        lane.last_frame = v
        st.count(topic, lane.kind)
        self.stats["out"] += 1
        out.append(Output(topic, _key(st), frame, stream=st.key, raw=item.raw))

    def _gap(
        self, st: StreamState, lane: Lane, gap: GapRecord, template: dict[str, Any], out: list[Output]
    ) -> None:
        topic = ORDERED_OF[lane.topic]
        record = dict(template)
        if topic == VIDEO:
            record["keyframe"] = record["has_parameter_sets"] = False
        record.update(
            timestamp_ms=gap.start_ms,
            seq=lane.seq,
            offset_ms=gap.start_ms - st.started_ms,
            gap={"start_ms": gap.start_ms, "length_ms": gap.length_ms, "reason": gap.reason.value},
            payload=b"",
        )
        lane.seq += 1
        st.count(topic, f"{lane.kind}_GAP")
        self.stats["gap"] += 1
        out.append(Output(topic, _key(st), record, stream=st.key))

    def _event(self, st: StreamState, lane: Lane, item: _Item, out: list[Output]) -> None:
        event = dict(item.value)
        event["seq"] = lane.seq
        lane.seq += 1
        st.count(EVENTS, event.get("stream_kind") or "EVENT")
        self.stats["out"] += 1
        out.append(Output(EVENTS, _key(st), event, stream=st.key))

    def _chat(self, st: StreamState, lane: Lane, item: _Item, out: list[Output]) -> None:
        record = chat_message(item.value, lane.seq)
        lane.seq += 1
        st.count(CHAT, "CHAT")
        self.stats["out"] += 1
        out.append(Output(CHAT, _key(st), record, stream=st.key))

    def _piece(self, st: StreamState, item: _Item, out: list[Output]) -> None:
        v = item.value
        assert st.assembler is not None
        piece = TranscriptPiece(
            participant_id=v["participant_id"],
            participant_name=v["participant_name"],
            timestamp_ms=v["timestamp_ms"],
            text=v["text"],
            start_ms=v["start_time_ms"],
            end_ms=v["end_time_ms"],
            language_code=v["language"],
            channel_id=v["channel_id"],
        )
        lane_mark = self._transcript_mark(st)
        settled = st.assembler.push(piece, lane_mark)
        if any(u.final for u in settled):
            st.utterance_closed()
        if not st.open_pieces:
            st.open_mark_ms = lane_mark
        st.open_pieces.append(item)
        for u in settled:
            self._utterance(st, u, out)

    def _transcript_mark(self, st: StreamState) -> int | None:
        for lane in st.lanes.values():
            if lane.topic == RAW_TRANSCRIPT:
                return lane.mark_ms
        return None

    def _utterance(self, st: StreamState, u: Utterance, out: list[Output]) -> None:
        if not u.final:
            if u.piece_count <= st.partials_skip:
                return  # written before the restart that re-fed this piece
            st.partials_written = u.piece_count
        record = {
            "meeting_uuid": st.meeting_uuid,
            "rtms_stream_id": st.rtms_stream_id,
            "utterance_id": u.utterance_id,
            "seq": u.seq,
            "participant_id": u.speaker.participant_id,
            "participant_name": u.speaker.participant_name,
            "channel_id": u.speaker.channel_id,
            "start_ms": u.start_ms,
            "end_ms": u.end_ms,
            "stream_started_ms": st.started_ms,
            "text": u.text,
            "language_code": u.language_code,
            "language": u.language,
            "final": u.final,
            "piece_count": u.piece_count,
        }
        self.stats["out"] += 1
        if not u.final:
            out.append(Output(TRANSCRIPT_PARTIAL, _key(st), record, stream=st.key))
            return
        st.count(TRANSCRIPT, "TRANSCRIPT")
        out.append(Output(TRANSCRIPT, _key(st), record, stream=st.key))

    def _participants(self, st: StreamState, topic: str, record: dict[str, Any]) -> None:
        if topic == RAW_EVENTS:
            for p in record.get("participants") or ():
                if p["user_id"] not in st.participants or p.get("user_name"):
                    st.participants[p["user_id"]] = p.get("user_name") or st.participants.get(p["user_id"])
        elif topic == RAW_AUDIO and not record["media"].get("mixed", True) and record["participant_id"]:
            if record["participant_id"] not in st.participants or record.get("participant_name"):
                st.participants[record["participant_id"]] = record.get("participant_name")

    # -- progress marks -----------------------------------------------------------------------------

    def _progress(self, topic: str, offset: int, mark: dict[str, Any], out: list[Output]) -> None:
        """A progress mark on `topic`: every lane of the stream on it moves its clock to the mark
        (releasing what is now outside its window; closing a transcript utterance by the pause
        rule) and notes the mark's known losses."""
        st = self.streams.get((mark["meeting_uuid"], mark["rtms_stream_id"]))
        if st is None or (st.meeting_uuid, st.rtms_stream_id, topic) in self.ended:
            return  # nothing held: a stream's first mark may precede its first record
        media_ms = mark["media_ms"]
        for lane in sorted(
            (lane for lane in st.lanes.values() if lane.topic == topic),
            key=lambda lane: _lane_order(lane.key),
        ):
            lane.mark_ms = media_ms if lane.mark_ms is None else max(lane.mark_ms, media_ms)
            if topic == RAW_TRANSCRIPT:
                if st.assembler is not None:
                    closed = st.assembler.tick(lane.mark_ms)
                    if closed:
                        st.utterance_closed()
                    for u in closed:
                        self._utterance(st, u, out)
                continue
            if topic in _FRAMES:
                for loss in mark.get("losses") or ():
                    lane.note_loss(loss["start_ms"], loss["end_ms"], offset)
            self._emit(st, lane, lane.buffer.advance(lane.mark_ms), out)

    # -- end of stream ------------------------------------------------------------------------------

    def _marker(
        self, topic: str, offset: int, key: bytes | None, end: dict[str, Any], out: list[Output]
    ) -> None:
        meeting, stream = stream_key = (end["meeting_uuid"], end["rtms_stream_id"])
        if (meeting, stream, topic) in self.ended:
            return  # a repeated marker is a no-op
        st = self.streams.get(stream_key)
        if st is None:  # a stream with no record on any raw topic of this partition so far
            st = self.streams[stream_key] = StreamState(meeting, stream, end["stream_started_ms"])
        ordered = ORDERED_OF[topic]
        for lane in sorted(st.lanes.values(), key=lambda lane: _lane_order(lane.key)):
            if lane.topic != topic:
                continue
            self._emit(st, lane, lane.buffer.flush(), out)
            if lane.topic == RAW_TRANSCRIPT and st.assembler is not None:
                for u in st.assembler.flush():
                    self._utterance(st, u, out)
                st.open_pieces = []
                st.partials_written = st.partials_skip = 0
            elif lane.template is not None:
                gap = self._trailing(st, lane, end)
                if gap is not None:
                    self._gap(st, lane, gap, {**lane.template, "ingest_epoch": end["ingest_epoch"]}, out)
            del st.lanes[lane.key]
        counts = {"LATE": 0, "DUPLICATE": 0}
        prefix = ordered + "|"
        for name, n in st.counts.items():
            if name.startswith(prefix):
                counts[name[len(prefix) :]] = n
        forwarded = {**end, "topic": ordered, "counts": counts}
        self.stats["out"] += 1
        out.append(Output(ordered, key or _key(st), None, cast(StreamEnd, forwarded), stream=st.key))
        self.ended[(meeting, stream, topic)] = None
        while len(self.ended) > _ENDED_MEMORY:
            self.ended.pop(next(iter(self.ended)))
        self.ended_streams.append((topic, offset, {**end, "topic": topic}))
        if all((meeting, stream, t) in self.ended for t in RAW_TOPICS):
            del self.streams[stream_key]
        else:  # keep only the counts of topics not ended yet
            st.counts = {n: c for n, c in st.counts.items() if not n.startswith(prefix)}

    def _trailing(self, st: StreamState, lane: Lane, end: dict[str, Any]) -> GapRecord | None:
        """The lane's trailing gap: up to the end of the stream's media on this raw topic (the
        marker's last timestamp plus one frame), so every lane of the topic ends at the same time."""
        last = end.get("last_timestamp_ms")
        if last is None or lane.template is None:
            return None
        media = lane.template["media"]
        if lane.audio is not None:
            return lane.audio.end(last + int(media.get("send_rate_ms") or 20))
        if lane.video is not None:
            return lane.video.end(last + lane.video.frame_interval_ms)
        return None

    # -- side records -------------------------------------------------------------------------------

    def _late(self, topic: str, offset: int, record: dict[str, Any], value: bytes, lateness: int) -> Output:
        late = {
            "meeting_uuid": record["meeting_uuid"],
            "rtms_stream_id": record["rtms_stream_id"],
            "stream_kind": record.get("stream_kind") or "UNKNOWN",
            "participant_id": record.get("participant_id") or 0,
            "channel_id": record.get("channel_id"),
            "timestamp_ms": record["timestamp_ms"],
            "ingest_epoch": record["ingest_epoch"],
            "ingest_seq": record["ingest_seq"],
            "lateness_ms": lateness,
            "source_topic": topic,
            "source_partition": self.partition,
            "source_offset": offset,
            "record": value,
        }
        return Output(LATE, record["meeting_uuid"].encode(), late, source=(topic, offset),
                      stream=(record["meeting_uuid"], record["rtms_stream_id"]))  # fmt: skip

    def _dead(
        self,
        topic: str,
        offset: int,
        key: bytes | None,
        payload: bytes,
        error: str,
        reason: str,
        ts: int | None,
    ) -> Output:
        self.stats["deadletter"] += 1
        dead = {
            "meeting_uuid": key.decode(errors="replace") if key else None,
            "rtms_stream_id": None,
            "stage": "processors",
            "source": topic,
            "reason": reason[:2000],
            "error": error,
            "payload": payload,
            "received_at_ms": 0 if ts is None else ts,
            "source_partition": self.partition,
            "source_offset": offset,
        }
        return Output(DEADLETTER, key, dead, source=(topic, offset))


class _Reject(ValueError):
    def __init__(self, error: str, reason: str) -> None:
        self.error, self.reason = error, reason
        super().__init__(reason)


def _key(st: StreamState) -> bytes:
    return st.record_key


def _camera_lanes(st: StreamState) -> int:
    """The stream's individual-video lanes (one per participant's camera)."""
    return sum(lane.topic == RAW_VIDEO and lane.key.participant_id != 0 for lane in st.lanes.values())


def _lane_order(key: LaneKey) -> tuple[str, int, str]:
    """Lanes are flushed at a marker in a fixed order (not dict order, which differs after a restart)."""
    return (key.kind, key.participant_id, key.channel_id or "")
