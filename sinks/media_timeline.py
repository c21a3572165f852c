"""The recording's clock: RTMS millisecond timestamps placed on one media timeline (pure, no I/O).

`VideoTimeline` gives access units pts/dts in ms and durations that reach the next frame (a gap holds the
last frame); `AudioTimeline` places PCM by sample with silence and trimming; `PcmFramer` cuts AAC frames.
Audio before t = 0 is trimmed, video clamped to 0, frames before the first decodable keyframe dropped."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction

SAMPLE_RATE = 16_000
SAMPLES_PER_MS = SAMPLE_RATE // 1000  # 16
BYTES_PER_SAMPLE = 2  # s16le mono
AAC_FRAME_SAMPLES = 1024

VIDEO_TIME_BASE = Fraction(1, 1000)  # video pts: ms since the origin
AUDIO_TIME_BASE = Fraction(1, SAMPLE_RATE)  # audio pts: samples since the origin

DEFAULT_AUDIO_TOLERANCE_MS = 20


@dataclass(frozen=True, slots=True)
class VideoSample:
    """One access unit on the recording's clock: pts == dts in VIDEO_TIME_BASE, duration in ms."""

    pts: int
    duration: int
    data: bytes
    keyframe: bool


@dataclass(slots=True)
class VideoCounts:
    """What the video timeline did, for the manifest and the logs."""

    frames_in: int = 0
    samples_out: int = 0
    dropped_before_keyframe: int = 0  # undecodable: no SPS/PPS + IDR seen yet
    clamped_before_origin: int = 0  # timestamp < origin, pts set to 0
    retimed: int = 0  # timestamp not after the previous frame's, pts bumped by 1 ms
    gaps: int = 0
    gap_ms: int = 0  # stretches announced as gaps (the previous frame is held over them)


class VideoTimeline:
    """Access units in timestamp order in, `VideoSample`s with durations out (one frame late).

    `push` returns the previous frame now that its duration is known; `close(end_ms)` returns
    the last one, lasting until `end_ms` (at least 1 ms).
    """

    def __init__(self, origin_ms: int) -> None:
        self.origin_ms = origin_ms
        self.counts = VideoCounts()
        self._pending: tuple[int, bytes, bool] | None = None  # (pts, data, keyframe)
        self._last_pts = -1
        self._started = False
        self._closed = False

    def push(
        self, timestamp_ms: int, data: bytes, *, keyframe: bool, has_parameter_sets: bool
    ) -> VideoSample | None:
        """Place one access unit; returns the previous one, complete, or None."""
        if self._closed:
            raise RuntimeError("video timeline is closed")
        self.counts.frames_in += 1
        if not self._started:
            if not (keyframe and has_parameter_sets):
                self.counts.dropped_before_keyframe += 1
                return None
            self._started = True
        pts = timestamp_ms - self.origin_ms
        if pts < 0:
            self.counts.clamped_before_origin += 1
            pts = 0
        if pts <= self._last_pts:
            # A duplicate or reordered timestamp that got through: keep the bytes (a dropped
            # frame would break the reference chain) and keep dts strictly increasing.
            if timestamp_ms >= self.origin_ms:
                self.counts.retimed += 1
            pts = self._last_pts + 1
        self._last_pts = pts
        out = self._complete(pts)
        self._pending = (pts, data, keyframe)
        return out

    def gap(self, start_ms: int, length_ms: int) -> None:
        """A stretch without video: the previous frame is held over it (nothing to write)."""
        if length_ms < 0:
            raise ValueError(f"gap length must be >= 0, got {length_ms}")
        self.counts.gaps += 1
        self.counts.gap_ms += length_ms

    def close(self, end_ms: int) -> VideoSample | None:
        """End of stream: the held frame, lasting until `end_ms`. A second call returns None."""
        if self._closed:
            return None
        self._closed = True
        return self._complete(max(end_ms - self.origin_ms, self._last_pts + 1))

    def _complete(self, next_pts: int) -> VideoSample | None:
        if self._pending is None:
            return None
        pts, data, keyframe = self._pending
        self._pending = None
        self.counts.samples_out += 1
        return VideoSample(pts, next_pts - pts, data, keyframe)


@dataclass(frozen=True, slots=True)
class AudioPlacement:
    """Append `silence` zero samples, then `pcm` (s16le), at the end of the audio written so far."""

    silence: int
    pcm: bytes


@dataclass(slots=True)
class AudioCounts:
    """What the audio timeline did, for the manifest and the logs."""

    packets_in: int = 0
    samples_in: int = 0
    silence_samples: int = 0  # inserted for gaps and holes (including the padding to the end)
    trimmed_samples: int = 0  # cut: before the origin, or overlapping audio already placed
    gaps: int = 0
    resyncs: int = 0  # timestamps drifted past the tolerance: silence or a trim put them back


class AudioTimeline:
    """L16 packets in timestamp order in, contiguous placements out.

    A packet whose timestamp is within `tolerance_ms` of where the audio written so far ends is
    appended right there (RTMS timestamps are whole ms and jitter); further ahead, silence fills
    the hole; further behind, the overlapping samples are cut. So audio never drifts from the
    meeting clock by more than the tolerance.
    """

    def __init__(self, origin_ms: int, tolerance_ms: int = DEFAULT_AUDIO_TOLERANCE_MS) -> None:
        if tolerance_ms < 0:
            raise ValueError(f"tolerance_ms must be >= 0, got {tolerance_ms}")
        self.origin_ms = origin_ms
        self.tolerance = tolerance_ms * SAMPLES_PER_MS
        self.position = 0  # samples written so far == where the next sample goes
        self.counts = AudioCounts()
        self._closed = False

    def push(self, timestamp_ms: int, pcm: bytes) -> AudioPlacement | None:
        """Place one packet of s16le mono PCM; None when nothing of it is kept."""
        if self._closed:
            raise RuntimeError("audio timeline is closed")
        if len(pcm) % BYTES_PER_SAMPLE:
            raise ValueError(f"L16 PCM must have an even byte count, got {len(pcm)}")
        n = len(pcm) // BYTES_PER_SAMPLE
        self.counts.packets_in += 1
        self.counts.samples_in += n
        at = (timestamp_ms - self.origin_ms) * SAMPLES_PER_MS
        trim = 0
        if at < 0:  # before t = 0: cut exactly, whatever the tolerance
            trim = -at
            at = 0
        drift = at - self.position
        silence = 0
        if drift > self.tolerance:
            silence = drift
            self.counts.resyncs += 1
        elif drift < -self.tolerance:
            trim -= drift  # cut the samples that would overlap audio already placed
            self.counts.resyncs += 1
        trim = min(trim, n)
        self.counts.trimmed_samples += trim
        if trim == n:
            return None
        self.counts.silence_samples += silence
        self.position += silence + n - trim
        return AudioPlacement(silence, pcm[trim * BYTES_PER_SAMPLE :] if trim else pcm)

    def gap(self, start_ms: int, length_ms: int) -> AudioPlacement | None:
        """A stretch with no audio: silence up to `start_ms + length_ms` (if not already there)."""
        if self._closed:
            raise RuntimeError("audio timeline is closed")
        if length_ms < 0:
            raise ValueError(f"gap length must be >= 0, got {length_ms}")
        self.counts.gaps += 1
        return self._fill_to(start_ms + length_ms)

    def close(self, end_ms: int) -> AudioPlacement | None:
        """End of stream: silence up to `end_ms`, so audio and video end on the same clock."""
        if self._closed:
            return None
        placement = self._fill_to(end_ms)
        self._closed = True
        return placement

    def _fill_to(self, until_ms: int) -> AudioPlacement | None:
        target = (until_ms - self.origin_ms) * SAMPLES_PER_MS
        if target <= self.position:
            return None
        silence = target - self.position
        self.position = target
        self.counts.silence_samples += silence
        return AudioPlacement(silence, b"")


@dataclass(frozen=True, slots=True)
class PcmFrame:
    """`samples` of s16le mono PCM starting at sample `position` (AUDIO_TIME_BASE)."""

    position: int
    pcm: bytes

    @property
    def samples(self) -> int:
        return len(self.pcm) // BYTES_PER_SAMPLE


class PcmFramer:
    """Contiguous placements in, encoder frames of exactly `frame_samples` out (the last may be short).

    Holds at most one partial frame; a long silence comes out frame by frame, sharing one
    zero-filled buffer, so a ten-minute gap costs no memory.
    """

    def __init__(self, frame_samples: int = AAC_FRAME_SAMPLES) -> None:
        if frame_samples < 1:
            raise ValueError(f"frame_samples must be positive, got {frame_samples}")
        self.frame_samples = frame_samples
        self._frame_bytes = frame_samples * BYTES_PER_SAMPLE
        self._zeros = bytes(self._frame_bytes)
        self._buffer = bytearray()
        self._position = 0  # sample position of the buffer's first sample

    @property
    def buffered_samples(self) -> int:
        return len(self._buffer) // BYTES_PER_SAMPLE

    def feed(self, placement: AudioPlacement) -> Iterator[PcmFrame]:
        """The whole frames completed by `placement` (lazily: consume before feeding again)."""
        if placement.silence:
            yield from self._add_silence(placement.silence)
        if placement.pcm:
            yield from self._add(placement.pcm)

    def flush(self) -> PcmFrame | None:
        """The last, partial frame (None when the audio ends on a frame boundary)."""
        if not self._buffer:
            return None
        frame = PcmFrame(self._position, bytes(self._buffer))
        self._position += frame.samples
        self._buffer.clear()
        return frame

    def _add_silence(self, samples: int) -> Iterator[PcmFrame]:
        room = self.frame_samples - self.buffered_samples
        if self._buffer or samples < self.frame_samples:
            head = min(samples, room)
            yield from self._add(self._zeros[: head * BYTES_PER_SAMPLE])
            samples -= head
        while samples >= self.frame_samples:
            yield self._emit(self._zeros)
            samples -= self.frame_samples
        if samples:
            self._buffer += self._zeros[: samples * BYTES_PER_SAMPLE]

    def _add(self, pcm: bytes) -> Iterator[PcmFrame]:
        size = self._frame_bytes
        start = 0
        if self._buffer:
            start = min(size - len(self._buffer), len(pcm))
            self._buffer += pcm[:start]
            if len(self._buffer) < size:
                return
            data = bytes(self._buffer)
            self._buffer.clear()
            yield self._emit(data)
        while len(pcm) - start >= size:
            yield self._emit(pcm[start : start + size])
            start += size
        if start < len(pcm):
            self._buffer += pcm[start:]

    def _emit(self, data: bytes) -> PcmFrame:
        frame = PcmFrame(self._position, data)
        self._position += self.frame_samples
        return frame
