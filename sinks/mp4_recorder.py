"""recording.mp4 for one RTMS stream: H.264 stream-copied, the mixed audio encoded to AAC (PyAV).

    rec = Mp4Recorder(tmp_path, origin_ms=stream_start_ms)
    rec.start()
    rec.video_frame(ts_ms, annexb_access_unit, keyframe=True, has_parameter_sets=True)
    rec.audio_frame(ts_ms, l16_pcm)
    rec.gap("audio", start_ms, length_ms)
    stats = rec.close(end_ms)          # then the caller fsyncs and renames the file into place

The timing decisions live in `sinks.media_timeline`; this module only hands its values to PyAV.

Choices (checked against PyAV 18.1 / FFmpeg 8 as pinned):

* H.264 goes through `add_mux_stream` (no codec context, so no encoder's SPS/PPS can reach the
  header) and the header is written at `start()`, before any packet: the MP4 muxer then builds
  the `avcC` from the first access unit (the first speaker's SPS/PPS) and converts every Annex-B
  access unit to length-prefixed NAL units, keeping the in-band SPS/PPS in the samples. That is
  how a decoder follows a speaker switch (new SPS/PPS, maybe a new size). The sample entry is
  `avc1` (PyAV cannot set a codec tag on a stream without a codec context); FFmpeg, browsers and
  VLC honour in-band parameter sets there. Writing the header up front also stops PyAV from
  buffering every packet until a video frame shows up (its extradata wait), which would hold an
  unbounded amount of audio when the cameras start late.
* Packets are stamped in the source time bases (`VIDEO_TIME_BASE` ms, `AUDIO_TIME_BASE` samples);
  PyAV rescales them to whatever time base the muxer chose when writing the header.
* Deterministic bytes: `fflags=+bitexact` on the container (no encoder/version/time metadata)
  and the `bitexact` flag on the AAC encoder (no version string; float DSP without the
  non-bit-exact SIMD paths).
* AAC encoding is most of a rebuild's time, so the encoder runs FFmpeg's "fast" coder (~3x its
  default "twoloop" on 16 kHz speech) at a constant quality (VBR: a fixed `DEFAULT_AAC_QUALITY`
  lambda). At a target bitrate (ABR) FFmpeg re-encodes a frame whose size strays from the target
  (up to 5 more passes); at a constant quality each frame is encoded once: ~2.6x faster on
  speech, with the same noise (SNR, segmental SNR) at ~42 instead of ~47 kbit/s (BENCHMARKS.md,
  "Sinks"). A steady tone costs more than before (67 kbit/s). `aac_quality=None`: ABR at
  `aac_bitrate`.
* The track header's size is `video_size` (the negotiated RTMS resolution); the pictures' real
  sizes come from the in-band SPS.
* Fragmented MP4 by default (a fragment per keyframe, `moov` after the first fragment, `mfra`
  index at the end for seeking): a plain MP4 keeps its whole sample index in memory until the
  end (~8 MB more per hour of meeting, measured), a fragmented one flushes it per fragment, so
  memory stays flat whatever the meeting's length. The price: the audio edit list (skipping the
  AAC encoder's 1024 priming samples) has no duration in a fragmented file, and FFmpeg's
  demuxer reports the file's duration 64 ms long; decoding skips the priming and ends on time.
  `fragmented=False` writes a plain MP4.
* The PyAV calls (AAC encode, mux) run inline by default. `threaded=True` runs them on a worker
  thread (`sinks.mux_thread`) in the order this recorder makes them (the same bytes: a test
  compares both), meant to overlap the caller's work on another core; measured on a quiet
  machine it does not: each PyAV call takes the GIL back several times and waits the switch
  interval for a busy caller to drop it (`benchmarks/aac_thread_bench.py`: an AAC encoder thread
  next to a spinning Python thread ran at 7x real time instead of 1,103x), so a rebuild threaded
  used 14-21 % more CPU and took longer (BENCHMARKS.md, "Sinks"). Overlap needs another process.
* Memory otherwise: one held-back video frame, under one AAC frame of PCM, (threaded) the mux
  thread's bounded queue of calls (4 x 32: PCM frames and references to video payloads), and FFmpeg's
  interleaving queue (bounded by its max_interleave_delta, 10 s of media).
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import av
import numpy as np

from sinks.media_timeline import (
    AAC_FRAME_SAMPLES,
    AUDIO_TIME_BASE,
    DEFAULT_AUDIO_TOLERANCE_MS,
    SAMPLE_RATE,
    VIDEO_TIME_BASE,
    AudioCounts,
    AudioPlacement,
    AudioTimeline,
    PcmFrame,
    PcmFramer,
    VideoCounts,
    VideoSample,
    VideoTimeline,
)
from sinks.mux_thread import MuxThread

DEFAULT_AAC_BITRATE = 48_000
# FFmpeg's AAC encoder in constant-quality mode: its lambda (`-q:a` = lambda / 118). 177 with the
# nominal 48 kbit/s above (which sizes the psychoacoustic model's and the coder's bit budgets)
# gives speech the noise of the old 48 kbit/s ABR encode; above ~177 the coder's budget caps it.
DEFAULT_AAC_QUALITY = 177
_S16_SCALE = np.float32(2.0**-15)
_ANNEXB_STARTS = (b"\x00\x00\x01", b"\x00\x00\x00\x01")
# A fragment per video keyframe (about a second), the moov written once the first fragment is
# complete (so the avcC comes from the first access unit, not from nothing), fragments addressed
# from their own moof (what browsers' MSE and the DASH/CMAF tools expect).
_FRAGMENTED_MOVFLAGS = "+frag_keyframe+delay_moov+default_base_moof"


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
        threaded: bool = False,
    ) -> None:
        if not (video or audio):
            raise ValueError("a recording needs video, audio or both")
        self.path = Path(path)
        self.origin_ms = origin_ms
        self._video_size = video_size
        self._aac_bitrate = aac_bitrate
        self._aac_quality = aac_quality
        self._fragmented = fragmented
        self._threaded = threaded
        self._worker: MuxThread | None = None
        self.video_timeline = VideoTimeline(origin_ms) if video else None
        self.audio_timeline = AudioTimeline(origin_ms, audio_tolerance_ms) if audio else None
        self._framer = PcmFramer(AAC_FRAME_SAMPLES)
        self.state = RecorderState.NEW
        self._container: Any = None
        self._vstream: Any = None
        self._astream: Any = None
        self._aac_packets = 0
        self._stats: RecordingStats | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Create the file and write its header."""
        if self.state is not RecorderState.NEW:
            raise RuntimeError(f"start() on a recorder that is {self.state.value}")
        options = {"fflags": "+bitexact"}
        if self._fragmented:
            options["movflags"] = _FRAGMENTED_MOVFLAGS
        container = av.open(str(self.path), "w", format="mp4", container_options=options)
        try:
            if self.video_timeline is not None:
                width, height = self._video_size
                self._vstream = container.add_mux_stream("h264", width=width, height=height)
                self._vstream.time_base = VIDEO_TIME_BASE
            if self.audio_timeline is not None:
                astream = container.add_stream("aac", rate=SAMPLE_RATE)
                ctx = astream.codec_context
                ctx.layout = "mono"
                ctx.format = "fltp"
                ctx.bit_rate = self._aac_bitrate
                ctx.time_base = AUDIO_TIME_BASE
                ctx.flags |= av.codec.context.Flags.bitexact
                options = {"aac_coder": "fast"}
                if self._aac_quality is not None:
                    ctx.qscale = True  # constant quality: one encode per frame, no rate loop
                    options["global_quality"] = str(self._aac_quality)  # lambda, not q
                ctx.options = options
                astream.time_base = AUDIO_TIME_BASE
                self._astream = astream
            container.start_encoding()
        except BaseException:
            container.close()
            raise
        self._container = container
        if self._threaded:
            self._worker = MuxThread(self.path.name)
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
                    self._encode(last)
                self._call(self._drain_encoder, None)
            if self._worker is not None:
                self._worker.finish()
            self._container.close()
        except BaseException:
            self.abort()
            raise
        self.state = RecorderState.CLOSED
        self._stats = RecordingStats(
            path=str(self.path),
            duration_ms=max(end_ms - self.origin_ms, 0),
            video=self.video_timeline.counts if self.video_timeline else None,
            audio=self.audio_timeline.counts if self.audio_timeline else None,
            aac_packets=self._aac_packets,
        )
        return self._stats

    def abort(self) -> None:
        """Release the file without finishing it (idempotent); the partial file stays."""
        if self.state in (RecorderState.CLOSED, RecorderState.ABORTED):
            return
        container, self._container = self._container, None
        self.state = RecorderState.ABORTED
        if self._worker is not None:
            self._worker.abort()  # no PyAV call runs on the container past this point
        if container is not None:
            try:
                container.close()
            except (av.FFmpegError, OSError):
                pass  # the file is incomplete either way; the caller discards it

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

    def _call(self, fn: Callable[[Any], object], arg: Any) -> None:
        """A PyAV step: on the mux thread (in order) when threaded, else now."""
        if self._worker is not None:
            self._worker.submit(fn, arg)
        else:
            fn(arg)

    def _mux_video(self, sample: VideoSample | None) -> None:
        if sample is not None:
            self._call(self._mux_video_now, sample)

    def _mux_video_now(self, sample: VideoSample) -> None:
        packet = av.Packet(sample.data)
        packet.stream = self._vstream
        packet.time_base = VIDEO_TIME_BASE
        packet.pts = packet.dts = sample.pts
        packet.duration = sample.duration
        packet.is_keyframe = sample.keyframe
        self._container.mux_one(packet)

    def _place_audio(self, placement: AudioPlacement | None) -> None:
        if placement is None:
            return
        for frame in self._framer.feed(placement):
            self._encode(frame)

    def _encode(self, frame: PcmFrame) -> None:
        self._call(self._encode_now, frame)

    def _encode_now(self, frame: PcmFrame) -> None:
        # The encoder takes planar float: converted here, exactly as FFmpeg's s16 -> fltp
        # (x * 2^-15, exact in float32), which spares PyAV's resampler a conversion per frame.
        samples = np.frombuffer(frame.pcm, dtype="<i2").astype(np.float32)
        samples *= _S16_SCALE
        audio = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="fltp", layout="mono")
        audio.sample_rate = SAMPLE_RATE
        audio.time_base = AUDIO_TIME_BASE
        audio.pts = frame.position
        self._mux_aac(self._astream.encode(audio))

    def _drain_encoder(self, _: None) -> None:
        self._mux_aac(self._astream.encode(None))

    def _mux_aac(self, packets: list[Any]) -> None:
        for packet in packets:
            self._aac_packets += 1
            self._container.mux_one(packet)


__all__ = ["MediaFrameError", "Mp4Recorder", "RecorderState", "RecordingStats"]
