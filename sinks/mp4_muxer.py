"""The PyAV half of a recording: the MP4 container, H.264 stream copy, the AAC encoder.

`Mp4Recorder` (`sinks.mp4_recorder`) makes every timing decision and hands this muxer finished
values: video samples (pts, duration, bytes, keyframe) and PCM frames of exactly 1024 samples at
their sample position. The muxer only turns them into PyAV calls, so it can run in the recorder's
process or in a process of its own (`sinks.mux_process`) and write the same bytes.

Choices (checked against PyAV 18.1 / FFmpeg 8 as pinned):

* H.264 goes through `add_mux_stream` (no codec context, so no encoder's SPS/PPS can reach the
  header) and the header is written at `open()`, before any packet: the MP4 muxer then builds
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
* Memory: FFmpeg's interleaving queue (bounded by its max_interleave_delta, 10 s of media).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import av
import numpy as np

from sinks.media_timeline import AUDIO_TIME_BASE, SAMPLE_RATE, VIDEO_TIME_BASE

DEFAULT_AAC_BITRATE = 48_000
# FFmpeg's AAC encoder in constant-quality mode: its lambda (`-q:a` = lambda / 118). 177 with the
# nominal 48 kbit/s above (which sizes the psychoacoustic model's and the coder's bit budgets)
# gives speech the noise of the old 48 kbit/s ABR encode; above ~177 the coder's budget caps it.
DEFAULT_AAC_QUALITY = 177
_S16_SCALE = np.float32(2.0**-15)
# A fragment per video keyframe (about a second), the moov written once the first fragment is
# complete (so the avcC comes from the first access unit, not from nothing), fragments addressed
# from their own moof (what browsers' MSE and the DASH/CMAF tools expect).
_FRAGMENTED_MOVFLAGS = "+frag_keyframe+delay_moov+default_base_moof"


@dataclass(frozen=True, slots=True)
class MuxerSpec:
    """Everything that decides a recording's bytes besides its input (picklable: a muxer process
    is built from it)."""

    path: str
    video: bool
    audio: bool
    video_size: tuple[int, int] = (1280, 720)
    aac_bitrate: int = DEFAULT_AAC_BITRATE
    aac_quality: int | None = DEFAULT_AAC_QUALITY
    fragmented: bool = True


class Mp4Muxer:
    """One MP4 file: `open()`, then `mux_video` / `encode` in the recorder's order, then `finish()`
    (drain the encoder, write the index) or `abort()`."""

    def __init__(self, spec: MuxerSpec) -> None:
        self.spec = spec
        self.aac_packets = 0
        self._container: Any = None
        self._vstream: Any = None
        self._astream: Any = None

    def open(self) -> None:
        """Create the file and write its header."""
        spec = self.spec
        options = {"fflags": "+bitexact"}
        if spec.fragmented:
            options["movflags"] = _FRAGMENTED_MOVFLAGS
        container = av.open(spec.path, "w", format="mp4", container_options=options)
        try:
            if spec.video:
                width, height = spec.video_size
                self._vstream = container.add_mux_stream("h264", width=width, height=height)
                self._vstream.time_base = VIDEO_TIME_BASE
            if spec.audio:
                astream = container.add_stream("aac", rate=SAMPLE_RATE)
                ctx = astream.codec_context
                ctx.layout = "mono"
                ctx.format = "fltp"
                ctx.bit_rate = spec.aac_bitrate
                ctx.time_base = AUDIO_TIME_BASE
                ctx.flags |= av.codec.context.Flags.bitexact
                codec_options = {"aac_coder": "fast"}
                if spec.aac_quality is not None:
                    ctx.qscale = True  # constant quality: one encode per frame, no rate loop
                    codec_options["global_quality"] = str(spec.aac_quality)  # lambda, not q
                ctx.options = codec_options
                astream.time_base = AUDIO_TIME_BASE
                self._astream = astream
            container.start_encoding()
        except BaseException:
            container.close()
            raise
        self._container = container

    def mux_video(self, pts: int, duration: int, data: bytes, keyframe: bool) -> None:
        """One H.264 access unit, pts == dts in ms since the origin."""
        packet = av.Packet(data)
        packet.stream = self._vstream
        packet.time_base = VIDEO_TIME_BASE
        packet.pts = packet.dts = pts
        packet.duration = duration
        packet.is_keyframe = keyframe
        self._container.mux_one(packet)

    def encode(self, position: int, pcm: bytes | memoryview) -> None:
        """One frame of s16le PCM at sample `position`, through the AAC encoder into the file (read
        at once: `pcm` may be a view of memory that is reused after the call)."""
        # The encoder takes planar float: converted here, exactly as FFmpeg's s16 -> fltp
        # (x * 2^-15, exact in float32), which spares PyAV's resampler a conversion per frame.
        samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32)
        samples *= _S16_SCALE
        audio = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="fltp", layout="mono")
        audio.sample_rate = SAMPLE_RATE
        audio.time_base = AUDIO_TIME_BASE
        audio.pts = position
        self._mux_aac(self._astream.encode(audio))

    def finish(self) -> int:
        """Drain the encoder, write the index, close the file; returns the AAC packet count."""
        if self._astream is not None:
            self._mux_aac(self._astream.encode(None))
        container, self._container = self._container, None
        container.close()
        return self.aac_packets

    def abort(self) -> None:
        """Release the file without finishing it (idempotent, never raises)."""
        container, self._container = self._container, None
        if container is not None:
            try:
                container.close()
            except (av.FFmpegError, OSError):
                pass  # the file is incomplete either way; the caller discards it

    def _mux_aac(self, packets: list[Any]) -> None:
        for packet in packets:
            self.aac_packets += 1
            self._container.mux_one(packet)


__all__ = ["DEFAULT_AAC_BITRATE", "DEFAULT_AAC_QUALITY", "Mp4Muxer", "MuxerSpec"]
