"""The PyAV half of a recording: the MP4 container, H.264 stream copy, the AAC encoder.

`Mp4Muxer` turns the recorder's finished values into PyAV calls, in-process or in `sinks.mux_process`,
with the same bytes. Its choices (in-band SPS/PPS, bit-exact flags, AAC "fast" coder at constant quality,
fragmented MP4 for flat memory) are in docs/DECISIONS.md, "Sinks", and the `Mp4Muxer` docstring."""

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
    (drain the encoder, write the index) or `abort()`.

    H.264 goes through `add_mux_stream` (no codec context, so no encoder's SPS/PPS reaches the header)
    and the header is written at `open()`: the muxer builds the `avcC` from the first access unit and
    keeps in-band SPS/PPS in the samples (how a decoder follows a speaker switch); the sample entry is
    `avc1`, and PyAV does not buffer audio waiting for video's extradata. Packets are stamped in the
    source time bases and rescaled by PyAV. The track header's size is the negotiated `video_size`; the
    pictures' real sizes come from the SPS. Fragmented (a fragment per keyframe, `mfra` at the end) by
    default: the audio edit list (AAC priming) then has no duration, so FFmpeg reports the file 64 ms
    long; decoding skips the priming and ends on time. `fragmented=False` writes a plain MP4."""

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
