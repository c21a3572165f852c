"""Streaming WAV files on the stream's timeline: `audio.wav` (mixed) and one file per participant.

`PcmTimeline.place` fills a hole of more than half a frame with exactly that many zero samples and
appends anything else contiguously: received PCM is never dropped or resampled. Memory is bounded; the
RIFF sizes are fixed up on close."""

from __future__ import annotations

import contextlib
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from sinks.layout import participant_wav_name

HEADER_BYTES = 44
MIXED_WAV_NAME = "audio.wav"
# RIFF sizes are 32-bit; past this a WAV file cannot describe its data.
MAX_DATA_BYTES = 0xFFFFFFFF - (HEADER_BYTES - 8)
_ZEROS = bytes(64 * 1024)


@dataclass(frozen=True)
class PcmFormat:
    """Linear PCM, signed little endian: 16 kHz, mono, 16-bit unless said otherwise."""

    sample_rate: int = 16000
    channels: int = 1
    sample_width: int = 2

    def __post_init__(self) -> None:
        if self.sample_rate <= 0 or self.channels <= 0 or self.sample_width not in (1, 2, 3, 4):
            raise ValueError(f"unsupported PCM format: {self}")

    @property
    def block_bytes(self) -> int:
        """Bytes of one sample across all channels (WAV's block align)."""
        return self.channels * self.sample_width

    def samples_at(self, offset_ms: int) -> int:
        """The sample index of `offset_ms` after the origin (floor; negative before the origin)."""
        return offset_ms * self.sample_rate // 1000

    def ms_of(self, samples: int) -> int:
        """Milliseconds spanned by `samples` (floor)."""
        return samples * 1000 // self.sample_rate


def wav_header(fmt: PcmFormat, data_bytes: int) -> bytes:
    """The 44-byte canonical RIFF/WAVE header of a PCM file with `data_bytes` of samples."""
    if not 0 <= data_bytes <= MAX_DATA_BYTES:
        raise WavError(f"data size {data_bytes} does not fit a WAV header")
    byte_rate = fmt.sample_rate * fmt.block_bytes
    return (
        b"RIFF"
        + struct.pack("<I", HEADER_BYTES - 8 + data_bytes)
        + b"WAVEfmt "
        + struct.pack(
            "<IHHIIHH", 16, 1, fmt.channels, fmt.sample_rate, byte_rate, fmt.block_bytes, fmt.sample_width * 8
        )
        + b"data"
        + struct.pack("<I", data_bytes)
    )


class WavError(ValueError):
    """A frame or a size a WAV track cannot take (odd byte count, too long, writer closed)."""


@dataclass(frozen=True)
class Placement:
    """Where one frame went: `silence_samples` of zeros, then its samples from `start_sample`."""

    timestamp_ms: int
    target_sample: int
    start_sample: int
    silence_samples: int
    samples: int

    @property
    def ahead_samples(self) -> int:
        """How many samples earlier than its timestamp's place the frame had to go (0 if none)."""
        return max(0, self.start_sample - self.target_sample)


@dataclass(frozen=True)
class WavStats:
    """What a track holds, for the manifest: counts in samples of its `PcmFormat`.

    Counters only, no list of silences: a participant's track has a silence between every two
    words, so a list would grow with the meeting. Each `Placement` says where its silence went.
    """

    frames: int
    pcm_samples: int
    silence_samples: int
    silence_runs: int
    early_frames: int
    max_ahead_samples: int

    @property
    def total_samples(self) -> int:
        """Samples in the file: the PCM received plus inserted silence."""
        return self.pcm_samples + self.silence_samples


@dataclass
class PcmTimeline:
    """The pure placement decisions of one track; no I/O.

    A frame's place T is `(timestamp_ms - origin_ms) * sample_rate // 1000`; P is the write position.
    T - P > half the frame's length: exactly T - P zero samples, then the frame at T (one lost 20 ms
    frame must become 20 ms of silence, for sync). Otherwise (jitter, overlap, a frame before the
    origin) the frame is appended at P: received PCM is never dropped, trimmed or resampled.

    `tolerance_ms` replaces the half-a-frame threshold when set (e.g. to match the MP4's audio
    timeline). `early_frames` counts frames appended more than the threshold before their place.
    """

    origin_ms: int
    fmt: PcmFormat = field(default_factory=PcmFormat)
    tolerance_ms: int | None = None
    position: int = 0
    frames: int = 0
    pcm_samples: int = 0
    silence_samples: int = 0
    early_frames: int = 0
    max_ahead_samples: int = 0
    silence_runs: int = 0

    def place(self, timestamp_ms: int, nbytes: int) -> Placement:
        """Decide where a frame of `nbytes` bytes stamped `timestamp_ms` goes, and advance."""
        if nbytes % self.fmt.block_bytes:
            raise WavError(f"{nbytes} bytes is not a whole number of {self.fmt.block_bytes}-byte samples")
        samples = nbytes // self.fmt.block_bytes
        target = self.fmt.samples_at(timestamp_ms - self.origin_ms)
        drift = target - self.position
        if samples == 0:
            # Nothing to place: an empty frame says nothing about where speech is.
            return Placement(timestamp_ms, target, self.position, 0, 0)
        threshold = samples // 2 if self.tolerance_ms is None else self.fmt.samples_at(self.tolerance_ms)
        silence = drift if drift > threshold else 0
        if silence:
            self.silence_runs += 1
            self.silence_samples += silence
        elif -drift > threshold:
            self.early_frames += 1
        placement = Placement(timestamp_ms, target, self.position + silence, silence, samples)
        self.max_ahead_samples = max(self.max_ahead_samples, placement.ahead_samples)
        self.position += silence + samples
        self.frames += 1
        self.pcm_samples += samples
        return placement

    def pad_to(self, end_ms: int) -> int:
        """Silence from the write position up to `end_ms` (0 if already there); returns its samples."""
        return self.pad_to_sample(self.fmt.samples_at(end_ms - self.origin_ms))

    def pad_to_sample(self, end_sample: int) -> int:
        """Silence from the write position up to sample `end_sample`; returns its samples."""
        silence = max(0, end_sample - self.position)
        if silence:
            self.silence_runs += 1
            self.silence_samples += silence
            self.position += silence
        return silence

    def stats(self) -> WavStats:
        """A snapshot of the counters."""
        return WavStats(
            self.frames,
            self.pcm_samples,
            self.silence_samples,
            self.silence_runs,
            self.early_frames,
            self.max_ahead_samples,
        )


class WavWriter:
    """One WAV file written as frames arrive: header placeholder, samples, sizes fixed on close.

    Use as a context manager or call `close()`; `close()` flushes and fsyncs, and is idempotent.
    """

    def __init__(
        self,
        path: Path,
        origin_ms: int,
        fmt: PcmFormat | None = None,
        buffer_bytes: int = 64 * 1024,
        tolerance_ms: int | None = None,
    ) -> None:
        self.path = path
        self.timeline = PcmTimeline(origin_ms, fmt or PcmFormat(), tolerance_ms)
        # Held open for the stream's life, closed by close().
        self._file: BinaryIO | None = open(path, "wb", buffering=buffer_bytes)
        self._file.write(wav_header(self.timeline.fmt, 0))
        self._stats: WavStats | None = None

    @property
    def fmt(self) -> PcmFormat:
        return self.timeline.fmt

    def _handle(self) -> BinaryIO:
        if self._file is None:
            raise WavError(f"{self.path} is closed")
        return self._file

    def _write_silence(self, samples: int) -> None:
        handle = self._handle()
        remaining = samples * self.fmt.block_bytes
        while remaining:
            chunk = min(remaining, len(_ZEROS))
            handle.write(_ZEROS[:chunk])
            remaining -= chunk

    def _check_room(self, extra_samples: int) -> None:
        if (self.timeline.position + extra_samples) * self.fmt.block_bytes > MAX_DATA_BYTES:
            raise WavError(f"{self.path} would exceed the 4 GiB a WAV file can describe")

    def write_frame(self, timestamp_ms: int, pcm: bytes) -> Placement:
        """Write one frame at its place on the timeline (silence first if there is a gap)."""
        handle = self._handle()
        before = self.timeline.position
        target_room = max(0, self.fmt.samples_at(timestamp_ms - self.timeline.origin_ms) - before)
        self._check_room(target_room + len(pcm) // self.fmt.block_bytes)
        placement = self.timeline.place(timestamp_ms, len(pcm))
        self._write_silence(placement.silence_samples)
        handle.write(pcm)
        return placement

    def pad_to(self, end_ms: int) -> int:
        """Append silence up to `end_ms` (so tracks of one stream can end together)."""
        return self.pad_to_sample(self.fmt.samples_at(end_ms - self.timeline.origin_ms))

    def pad_to_sample(self, end_sample: int) -> int:
        """Append silence up to sample `end_sample`; returns the samples added."""
        self._handle()
        self._check_room(max(0, end_sample - self.timeline.position))
        silence = self.timeline.pad_to_sample(end_sample)
        self._write_silence(silence)
        return silence

    def flush(self) -> None:
        """Push buffered samples to the file, so another handle can read them back (no fsync)."""
        self._handle().flush()

    def close(self) -> WavStats:
        """Fix the RIFF sizes, flush, fsync and close; returns the track's stats."""
        if self._file is not None:
            handle, self._file = self._file, None
            try:
                data_bytes = self.timeline.position * self.fmt.block_bytes
                handle.seek(0)
                handle.write(wav_header(self.fmt, data_bytes))
                handle.flush()
                os.fsync(handle.fileno())
            finally:
                handle.close()
            self._stats = self.timeline.stats()
        assert self._stats is not None
        return self._stats

    def __enter__(self) -> WavWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class WavTracks:
    """The WAV tracks of one stream: the mixed `audio.wav` and `audio-<participant>.wav` files.

    `path_for(name)` maps a final file name to where to write it (e.g. `FileGroup.partial`). A
    participant's file is opened at their first frame; since it shares the stream's origin it starts
    with silence up to their first word. `close()` pads every track to the common end, so all the
    files of a stream have the same length and line up sample for sample.
    """

    def __init__(
        self,
        path_for: Callable[[str], Path],
        origin_ms: int,
        fmt: PcmFormat | None = None,
        tolerance_ms: int | None = None,
    ) -> None:
        self._path_for = path_for
        self.origin_ms = origin_ms
        self.fmt = fmt or PcmFormat()
        self.tolerance_ms = tolerance_ms
        self._writers: dict[str, WavWriter] = {}

    def _writer(self, name: str) -> WavWriter:
        writer = self._writers.get(name)
        if writer is None:
            writer = self._writers[name] = WavWriter(
                self._path_for(name), self.origin_ms, self.fmt, tolerance_ms=self.tolerance_ms
            )
        return writer

    def write_mixed(self, timestamp_ms: int, pcm: bytes) -> Placement:
        """A frame of the mixed stream (RTMS user_id 0)."""
        return self._writer(MIXED_WAV_NAME).write_frame(timestamp_ms, pcm)

    def write_participant(self, participant_id: int, timestamp_ms: int, pcm: bytes) -> Placement:
        """A frame of one participant's own audio."""
        return self._writer(participant_wav_name(participant_id)).write_frame(timestamp_ms, pcm)

    def writer(self, name: str) -> WavWriter:
        """The track `name` (`audio.wav`, `audio-<participant>.wav`), opened on first use."""
        return self._writer(name)

    def gap(self, name: str, end_ms: int) -> int:
        """A gap record in track `name`: silence up to `end_ms` (opens the track if needed)."""
        return self._writer(name).pad_to(end_ms)

    @property
    def names(self) -> list[str]:
        """The tracks opened so far, sorted."""
        return sorted(self._writers)

    def abort(self) -> None:
        """Close every file without fixing its header (the caller discards the partial files)."""
        for writer in self._writers.values():
            handle, writer._file = writer._file, None
            if handle is not None:
                with contextlib.suppress(OSError):  # a full disk fails the buffer's flush: dropped anyway
                    handle.close()

    def close(self, end_ms: int | None = None) -> dict[str, WavStats]:
        """Pad every track to the longest one's end (or `end_ms` if later), close; stats by file name."""
        positions = [w.timeline.position for w in self._writers.values()]
        end_sample = max(positions, default=0)
        if end_ms is not None:
            end_sample = max(end_sample, self.fmt.samples_at(end_ms - self.origin_ms))
        stats = {}
        for name in sorted(self._writers):
            writer = self._writers[name]
            writer.pad_to_sample(end_sample)
            stats[name] = writer.close()
        return stats
