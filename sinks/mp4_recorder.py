"""recording.mp4 for one RTMS stream: H.264 stream-copied, the mixed audio encoded to AAC (PyAV).

`Mp4Recorder` validates each frame, runs `sinks.media_timeline` and hands `sinks.mp4_muxer` finished
samples; `process=True` (replay) runs the muxer in `sinks.mux_process` with the same bytes. Memory: one
held video frame, under one AAC frame of PCM, and the muxer's 10 s interleaving queue."""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal

from sinks.media_timeline import (
    AAC_FRAME_SAMPLES,
    DEFAULT_AUDIO_TOLERANCE_MS,
    AudioCounts,
    AudioPlacement,
    AudioTimeline,
    PcmFramer,
    VideoCounts,
    VideoSample,
    VideoTimeline,
)
from sinks.mp4_muxer import DEFAULT_AAC_BITRATE, DEFAULT_AAC_QUALITY, Mp4Muxer, MuxerSpec
from sinks.mux_process import MuxProcess, available

_ANNEXB_STARTS = (b"\x00\x00\x01", b"\x00\x00\x00\x01")


class RecorderState(enum.Enum):
    NEW = "new"
    OPEN = "open"
    CLOSED = "closed"
    ABORTED = "aborted"


class MediaFrameError(ValueError):
    """A frame that cannot be recorded (the caller dead-letters it; the recording goes on)."""

    def __init__(self, reason: str, kind: str, timestamp_ms: int) -> None:
        super().__init__(f"{kind} frame at {timestamp_ms} ms: {reason}")
        self.reason = reason
        self.kind = kind
        self.timestamp_ms = timestamp_ms


@dataclass(frozen=True, slots=True)
class RecordingStats:
    """What went into the file, for the manifest."""

    path: str
    duration_ms: int
    video: VideoCounts | None
    audio: AudioCounts | None
    aac_packets: int


class Mp4Recorder:
    """One stream's MP4, written as frames arrive; see the module docstring.

    Frames must come in timestamp order per kind (the processors' ordered topics). Lifecycle:
    `start()`, frames and gaps, then `close(end_ms)` (idempotent) or `abort()` on failure (the
    partial file is left for the caller to delete). As a context manager it starts on entry and
    aborts on exit unless closed.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        origin_ms: int,
        *,
        video: bool = True,
        audio: bool = True,
        video_size: tuple[int, int] = (1280, 720),
        aac_bitrate: int = DEFAULT_AAC_BITRATE,
        aac_quality: int | None = DEFAULT_AAC_QUALITY,
        audio_tolerance_ms: int = DEFAULT_AUDIO_TOLERANCE_MS,
        fragmented: bool = True,
        process: bool = False,
    ) -> None:
        if not (video or audio):
            raise ValueError("a recording needs video, audio or both")
        self.path = Path(path)
        self.origin_ms = origin_ms
        self.spec = MuxerSpec(
            str(self.path),
            video=video,
            audio=audio,
            video_size=video_size,
            aac_bitrate=aac_bitrate,
            aac_quality=aac_quality,
            fragmented=fragmented,
        )
        # Linux, and only with audio: a video-only recording has no encoder to move (inline, the
        # same bytes either way)
        use_process = process and audio and available()
        self._muxer: Mp4Muxer | MuxProcess = MuxProcess(self.spec) if use_process else Mp4Muxer(self.spec)
        self.video_timeline = VideoTimeline(origin_ms) if video else None
        self.audio_timeline = AudioTimeline(origin_ms, audio_tolerance_ms) if audio else None
        self._framer = PcmFramer(AAC_FRAME_SAMPLES)
        self.state = RecorderState.NEW
        self._stats: RecordingStats | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Create the file and write its header (with `process=True`: start the muxer's process,
        which does)."""
        if self.state is not RecorderState.NEW:
            raise RuntimeError(f"start() on a recorder that is {self.state.value}")
        self._muxer.open()
        self.state = RecorderState.OPEN

    def close(self, end_ms: int) -> RecordingStats:
        """End of stream at `end_ms`: the last frame is held until then, audio padded with
        silence to it, the encoder drained and the index written. A second call returns the
        same stats."""
        if self.state is RecorderState.CLOSED and self._stats is not None:
            return self._stats
        self._require_open()
        try:
            if self.video_timeline is not None:
                self._mux_video(self.video_timeline.close(end_ms))
            if self.audio_timeline is not None:
                self._place_audio(self.audio_timeline.close(end_ms))
                last = self._framer.flush()
                if last is not None:
                    self._muxer.encode(last.position, last.pcm)
            aac_packets = self._muxer.finish()
        except BaseException:
            self.abort()
            raise
        self.state = RecorderState.CLOSED
        self._stats = RecordingStats(
            path=str(self.path),
            duration_ms=max(end_ms - self.origin_ms, 0),
            video=self.video_timeline.counts if self.video_timeline else None,
            audio=self.audio_timeline.counts if self.audio_timeline else None,
            aac_packets=aac_packets,
        )
        return self._stats

    def abort(self) -> None:
        """Release the file without finishing it (idempotent); the partial file stays."""
        if self.state in (RecorderState.CLOSED, RecorderState.ABORTED):
            return
        self.state = RecorderState.ABORTED
        self._muxer.abort()

    def __enter__(self) -> Mp4Recorder:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.state is not RecorderState.CLOSED:
            self.abort()

    # -- input --------------------------------------------------------------------------------

    def video_frame(
        self, timestamp_ms: int, data: bytes, *, keyframe: bool, has_parameter_sets: bool
    ) -> None:
        """One H.264 Annex-B access unit (copied into the file as is, NAL unit for NAL unit)."""
        self._require_open()
        if self.video_timeline is None:
            raise RuntimeError("this recorder has no video stream")
        if not data.startswith(_ANNEXB_STARTS):
            raise MediaFrameError("not an Annex-B access unit (no start code)", "video", timestamp_ms)
        self._mux_video(
            self.video_timeline.push(
                timestamp_ms, data, keyframe=keyframe, has_parameter_sets=has_parameter_sets
            )
        )

    def audio_frame(self, timestamp_ms: int, pcm: bytes) -> None:
        """One packet of L16 PCM (16 kHz, s16le, mono)."""
        self._require_open()
        if self.audio_timeline is None:
            raise RuntimeError("this recorder has no audio stream")
        try:
            placement = self.audio_timeline.push(timestamp_ms, pcm)
        except ValueError as exc:
            raise MediaFrameError(str(exc), "audio", timestamp_ms) from exc
        self._place_audio(placement)

    def gap(self, kind: Literal["audio", "video"], start_ms: int, length_ms: int) -> None:
        """A stretch with no media of `kind`: silence in the audio, the last frame held in the video."""
        self._require_open()
        if kind == "audio":
            if self.audio_timeline is not None:
                self._place_audio(self.audio_timeline.gap(start_ms, length_ms))
        elif kind == "video":
            if self.video_timeline is not None:
                self.video_timeline.gap(start_ms, length_ms)
        else:
            raise ValueError(f"gap kind must be 'audio' or 'video', got {kind!r}")

    # -- muxing -------------------------------------------------------------------------------

    def _require_open(self) -> None:
        if self.state is not RecorderState.OPEN:
            raise RuntimeError(f"recorder is {self.state.value}, not open")

    def _mux_video(self, sample: VideoSample | None) -> None:
        if sample is not None:
            self._muxer.mux_video(sample.pts, sample.duration, sample.data, sample.keyframe)

    def _place_audio(self, placement: AudioPlacement | None) -> None:
        if placement is None:
            return
        for frame in self._framer.feed(placement):
            self._muxer.encode(frame.position, frame.pcm)


__all__ = [
    "DEFAULT_AAC_BITRATE",
    "DEFAULT_AAC_QUALITY",
    "MediaFrameError",
    "Mp4Recorder",
    "RecorderState",
    "RecordingStats",
]
