"""Explicit gap records for one ordered lane, so sinks fill silence or hold the last frame in sync.

`AudioGapTracker` tiles [origin, end) with frames and gaps (a gap only when a whole frame is missing, exact
edges); `VideoGapTracker` makes a gap of a stretch longer than `max_gap_ms`, or of one missing frame in a
known loss. Reasons come from marks, epoch changes and the lane's default (docs/DESIGN.md, "Processors")."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "AudioGapTracker",
    "GapReason",
    "GapRecord",
    "VideoGapTracker",
    "audio_duration_ms",
    "video_max_gap_ms",
]


class GapReason(StrEnum):
    """Why media is missing. The values are exactly the Avro enum symbols of `Gap.reason`."""

    UNKNOWN = "UNKNOWN"
    LOSS = "LOSS"
    PAUSE = "PAUSE"
    SILENT = "SILENT"
    VIDEO_OFF = "VIDEO_OFF"
    INGEST_DIED = "INGEST_DIED"


@dataclass(frozen=True, slots=True)
class GapRecord:
    """A stretch [start_ms, start_ms + length_ms) of media time with no media in the lane."""

    start_ms: int
    length_ms: int
    reason: GapReason

    @property
    def end_ms(self) -> int:
        return self.start_ms + self.length_ms


def audio_duration_ms(payload_len: int, sample_rate: int, channels: int = 1) -> int:
    """Duration of an L16 payload (16-bit samples), ms, rounded half up.

    16 kHz mono: 640 bytes = 20 ms. Zoom's rates (8/16/32/48 kHz) give whole milliseconds for
    whole-millisecond packets; rounding only matters for odd-sized payloads.
    """
    if sample_rate <= 0 or channels <= 0:
        raise ValueError(f"sample_rate and channels must be positive, got {sample_rate}, {channels}")
    bytes_per_s = 2 * channels * sample_rate
    return (payload_len * 1000 * 2 + bytes_per_s) // (2 * bytes_per_s)


def video_max_gap_ms(fps: int) -> int:
    """Default video gap threshold: three frame intervals at `fps`, and at least 200 ms."""
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    return max(3 * _interval_ms(fps), 200)


def _interval_ms(fps: int) -> int:
    return -(-1000 // fps)


@dataclass(frozen=True, slots=True)
class _Mark:
    start_ms: int
    end_ms: int
    reason: GapReason


class _Reasons:
    """The caller's marked intervals and the reason rule shared by both trackers.

    `mark(start_ms, end_ms, reason)` notes what the caller learned (PAUSE, VIDEO_OFF, LOSS). A gap takes
    the reason of the marked interval it overlaps most (ties: the one marked first); else INGEST_DIED
    when the frames on either side have different `ingest_epoch`s (a takeover); else the tracker's
    default (LOSS; SILENT for per-participant audio, where Zoom sends nothing while a participant is
    silent). A gap is never split by reason: one missing stretch is one record."""

    def __init__(self, default: GapReason) -> None:
        self.default = default
        self._marks: list[_Mark] = []

    def mark(self, start_ms: int, end_ms: int, reason: GapReason) -> None:
        if end_ms > start_ms:
            self._marks.append(_Mark(start_ms, end_ms, reason))

    def reason(self, start_ms: int, end_ms: int, epoch_changed: bool) -> GapReason:
        best: _Mark | None = None
        best_overlap = 0
        for m in self._marks:
            overlap = min(end_ms, m.end_ms) - max(start_ms, m.start_ms)
            if overlap > best_overlap:
                best, best_overlap = m, overlap
        if best is not None:
            return best.reason
        return GapReason.INGEST_DIED if epoch_changed else self.default

    def forget_before(self, ms: int) -> None:
        """Drop marks that end before `ms`: later gaps start at or after it (bounded memory)."""
        if self._marks:
            self._marks = [m for m in self._marks if m.end_ms > ms]


class AudioGapTracker:
    """Gaps of one ordered audio lane.

    A frame lasts as long as its PCM (`audio_duration_ms`). The *cursor* is origin + every frame and gap
    so far, so frames and gaps tile [origin, cursor] exactly and the sink needs no clock of its own.
    Interior: with drift = timestamp_ms - cursor, a gap [cursor, timestamp_ms) is written only when
    drift >= the frame's duration (a whole frame missing); smaller or negative drift places the frame at
    the cursor, so there is never a negative gap or a 1 ms sliver. Edges are exact: any drift from the
    origin to the first frame, and from the cursor to the stream's end, is a gap (alignment to t = 0 and
    the lane's total length, which A/V sync needs)."""

    def __init__(
        self,
        origin_ms: int,
        sample_rate: int = 16_000,
        channels: int = 1,
        default_reason: GapReason = GapReason.LOSS,
    ) -> None:
        self.origin_ms = origin_ms
        self.sample_rate = sample_rate
        self.channels = channels
        self._reasons = _Reasons(default_reason)
        self._cursor = origin_ms
        self._frame_ms: int | None = None  # duration of the last frame; None before the first
        self._epoch: int | None = None
        self._ended = False
        self.gap_count = 0

    @classmethod
    def resume(
        cls,
        origin_ms: int,
        sample_rate: int = 16_000,
        channels: int = 1,
        default_reason: GapReason = GapReason.LOSS,
        cursor_ms: int | None = None,
        last_epoch: int | None = None,
    ) -> AudioGapTracker:
        """A tracker for a lane whose output so far ends at `cursor_ms` (None: nothing written yet,
        a fresh tracker), the last frame of it from `last_epoch`: after a restart it goes on exactly
        as the tracker that wrote that output would have."""
        tracker = cls(origin_ms, sample_rate, channels, default_reason)
        if cursor_ms is not None:
            tracker._cursor = cursor_ms
            tracker._frame_ms = 0  # past the leading edge: only whole missing frames are gaps now
            tracker._epoch = last_epoch
        return tracker

    @property
    def cursor_ms(self) -> int:
        """Where the lane's tiled timeline ends so far (origin + frames + gaps)."""
        return self._cursor

    def mark(self, start_ms: int, end_ms: int, reason: GapReason) -> None:
        """Note that media in [start_ms, end_ms) is missing for `reason` (e.g. a pause)."""
        self._reasons.mark(start_ms, end_ms, reason)

    def frame(self, timestamp_ms: int, payload_len: int, ingest_epoch: int = 0) -> GapRecord | None:
        """Take the next frame in order; return the gap to write before it, if any."""
        if self._ended:
            raise RuntimeError("frame after end(): the lane is closed")
        duration = audio_duration_ms(payload_len, self.sample_rate, self.channels)
        drift = timestamp_ms - self._cursor
        first = self._frame_ms is None
        gap = None
        if drift > 0 and (first or drift >= max(duration, 1)):
            gap = self._gap(self._cursor, drift, ingest_epoch)
        self._cursor += duration
        self._frame_ms = duration
        self._epoch = ingest_epoch
        self._reasons.forget_before(self._cursor)
        return gap

    def end(self, end_ms: int) -> GapRecord | None:
        """End of stream at `end_ms`: the trailing gap from the cursor, if any. Idempotent."""
        if self._ended:
            return None
        self._ended = True
        length = end_ms - self._cursor
        if length <= 0:
            return None
        return self._gap(self._cursor, length, self._epoch)

    def _gap(self, start_ms: int, length_ms: int, epoch: int | None) -> GapRecord:
        changed = self._epoch is not None and epoch is not None and epoch != self._epoch
        gap = GapRecord(start_ms, length_ms, self._reasons.reason(start_ms, start_ms + length_ms, changed))
        self._cursor = start_ms + length_ms
        self.gap_count += 1
        return gap


class VideoGapTracker:
    """Gaps of one ordered video (or deskshare) lane.

    Frames are instants; the sink holds each until the next. A gap is a stretch with no frame longer
    than `max_gap_ms` (default `video_max_gap_ms(fps)`): the last frame is held for one frame interval
    and the gap runs from there to the next frame (or the end); the leading edge is a gap when the
    first frame comes more than `max_gap_ms` after the origin. A hole overlapping a known loss
    (`known_loss`: ingest's media socket was down) is a gap once one frame is missing (1.5 intervals)."""

    def __init__(
        self,
        origin_ms: int,
        fps: int,
        max_gap_ms: int | None = None,
        default_reason: GapReason = GapReason.LOSS,
    ) -> None:
        self.origin_ms = origin_ms
        self.frame_interval_ms = _interval_ms(fps)
        self.max_gap_ms = video_max_gap_ms(fps) if max_gap_ms is None else max_gap_ms
        if self.max_gap_ms < self.frame_interval_ms:
            raise ValueError(f"max_gap_ms {self.max_gap_ms} is below one frame interval")
        self._reasons = _Reasons(default_reason)
        self._last_ts: int | None = None
        self._epoch: int | None = None
        self._ended = False
        self._known: list[tuple[int, int]] = []  # known losses [start, end)
        self.gap_count = 0

    @classmethod
    def resume(
        cls,
        origin_ms: int,
        fps: int,
        last_timestamp_ms: int | None = None,
        last_epoch: int | None = None,
        max_gap_ms: int | None = None,
        default_reason: GapReason = GapReason.LOSS,
    ) -> VideoGapTracker:
        """A tracker for a lane whose last frame written had `last_timestamp_ms` (None: nothing
        written yet) and `last_epoch`, to go on after a restart as the one that wrote it would have."""
        tracker = cls(origin_ms, fps, max_gap_ms, default_reason)
        tracker._last_ts = last_timestamp_ms
        tracker._epoch = last_epoch if last_timestamp_ms is not None else None
        return tracker

    @property
    def last_timestamp_ms(self) -> int | None:
        """The latest frame timestamp seen (None before the first)."""
        return self._last_ts

    def mark(self, start_ms: int, end_ms: int, reason: GapReason) -> None:
        """Note that video in [start_ms, end_ms) is missing for `reason` (e.g. VIDEO_OFF)."""
        self._reasons.mark(start_ms, end_ms, reason)

    def known_loss(self, start_ms: int, end_ms: int) -> None:
        """Media in [start_ms, end_ms) was lost for a reason ingest knows (its socket was down):
        a hole there is a gap however short (see `VideoGapTracker`)."""
        if end_ms > start_ms and (start_ms, end_ms) not in self._known:
            self._known.append((start_ms, end_ms))

    def frame(self, timestamp_ms: int, ingest_epoch: int = 0) -> GapRecord | None:
        """Take the next frame in order; return the gap to write before it, if any."""
        if self._ended:
            raise RuntimeError("frame after end(): the lane is closed")
        last = self._last_ts
        gap = None
        if last is None:
            if timestamp_ms - self.origin_ms > self.max_gap_ms:
                gap = self._gap(self.origin_ms, timestamp_ms, ingest_epoch)
        elif timestamp_ms - last > self.max_gap_ms or (
            2 * (timestamp_ms - last) >= 3 * self.frame_interval_ms
            and self._known_between(last, timestamp_ms)
        ):
            gap = self._gap(last + self.frame_interval_ms, timestamp_ms, ingest_epoch)
        if last is None or timestamp_ms > last:
            self._last_ts = last = timestamp_ms
        self._epoch = ingest_epoch
        self._reasons.forget_before(last)
        if self._known:
            self._known = [k for k in self._known if k[1] > last]
        return gap

    def _known_between(self, after_ms: int, before_ms: int) -> bool:
        return any(start < before_ms and end > after_ms for start, end in self._known)

    def end(self, end_ms: int) -> GapRecord | None:
        """End of stream at `end_ms`: the trailing gap, if the last frame is more than
        `max_gap_ms` before it (or there was no frame at all). Idempotent."""
        if self._ended:
            return None
        self._ended = True
        last = self._last_ts
        if last is None:
            return self._gap(self.origin_ms, end_ms, None) if end_ms > self.origin_ms else None
        if end_ms - last > self.max_gap_ms:
            return self._gap(last + self.frame_interval_ms, end_ms, None)
        return None

    def _gap(self, start_ms: int, end_ms: int, epoch: int | None) -> GapRecord:
        changed = self._epoch is not None and epoch is not None and epoch != self._epoch
        self.gap_count += 1
        return GapRecord(start_ms, end_ms - start_ms, self._reasons.reason(start_ms, end_ms, changed))
