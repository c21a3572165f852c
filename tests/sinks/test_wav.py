"""sinks.wav_writer: PCM bit-exact on the stream's timeline, silence exactly where the gaps are."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sinks.wav_writer import (
    HEADER_BYTES,
    PcmFormat,
    PcmTimeline,
    WavError,
    WavTracks,
    WavWriter,
)

ORIGIN_MS = 1_747_316_541_000
FRAME_MS = 20
FRAME_SAMPLES = 320  # 20 ms at 16 kHz


def pcm_frame(seed: int, samples: int = FRAME_SAMPLES) -> bytes:
    """Distinct non-zero samples per frame, so a misplaced or dropped frame shows."""
    rng = np.random.default_rng(seed)
    values = rng.integers(1, 32767, size=samples, dtype=np.int16) * rng.choice([-1, 1], size=samples)
    return values.astype("<i2").tobytes()


def read_wav(path: Path) -> tuple[wave.Wave_read, np.ndarray]:
    with wave.open(str(path), "rb") as wav:
        samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
        return wav, samples


def write(path: Path, frames: list[tuple[int, bytes]], origin_ms: int = ORIGIN_MS) -> WavWriter:
    with WavWriter(path, origin_ms) as writer:
        for ts, pcm in frames:
            writer.write_frame(ts, pcm)
    return writer


def test_contiguous_frames_are_the_pcm_sent_bit_for_bit(tmp_path: Path) -> None:
    frames = [(ORIGIN_MS + i * FRAME_MS, pcm_frame(i)) for i in range(50)]
    stats = write(tmp_path / "audio.wav", frames).close()
    wav, samples = read_wav(tmp_path / "audio.wav")
    assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (16000, 1, 2)
    assert samples.tobytes() == b"".join(pcm for _, pcm in frames)
    assert (stats.frames, stats.pcm_samples, stats.silence_samples) == (50, 50 * FRAME_SAMPLES, 0)
    assert (tmp_path / "audio.wav").stat().st_size == HEADER_BYTES + 50 * FRAME_SAMPLES * 2


def test_a_gap_becomes_exactly_that_much_silence_at_its_place(tmp_path: Path) -> None:
    # Frames 0..4, then 3 frames lost (60 ms), then frames 8..9.
    kept = [0, 1, 2, 3, 4, 8, 9]
    frames = [(ORIGIN_MS + i * FRAME_MS, pcm_frame(i)) for i in kept]
    stats = write(tmp_path / "audio.wav", frames).close()
    _, samples = read_wav(tmp_path / "audio.wav")
    assert len(samples) == 10 * FRAME_SAMPLES
    for i in range(10):
        chunk = samples[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES].tobytes()
        assert chunk == (pcm_frame(i) if i in kept else bytes(FRAME_SAMPLES * 2)), i
    assert (stats.silence_runs, stats.silence_samples) == (1, 3 * FRAME_SAMPLES)


def test_a_participant_file_starts_with_silence_up_to_their_first_word(tmp_path: Path) -> None:
    first_word_ms = ORIGIN_MS + 1500
    frames = [(first_word_ms + i * FRAME_MS, pcm_frame(i)) for i in range(5)]
    write(tmp_path / "audio-16778240.wav", frames).close()
    _, samples = read_wav(tmp_path / "audio-16778240.wav")
    lead = 1500 * 16
    assert not samples[:lead].any()
    assert samples[lead:].tobytes() == b"".join(pcm for _, pcm in frames)
    assert samples[lead] != 0  # positive control: speech starts exactly there


def test_jitter_below_half_a_frame_is_appended_contiguously(tmp_path: Path) -> None:
    frames = [(ORIGIN_MS, pcm_frame(0)), (ORIGIN_MS + 29, pcm_frame(1)), (ORIGIN_MS + 35, pcm_frame(2))]
    writer = write(tmp_path / "a.wav", frames)
    stats = writer.close()
    _, samples = read_wav(tmp_path / "a.wav")
    # +9 ms late (< 10 ms) and -5 ms early: both appended, nothing inserted, nothing dropped.
    assert samples.tobytes() == b"".join(pcm for _, pcm in frames)
    assert stats.silence_samples == 0
    assert stats.early_frames == 0


def test_a_frame_more_than_half_a_frame_late_gets_its_silence(tmp_path: Path) -> None:
    frames = [(ORIGIN_MS, pcm_frame(0)), (ORIGIN_MS + 31, pcm_frame(1))]
    stats = write(tmp_path / "a.wav", frames).close()
    _, samples = read_wav(tmp_path / "a.wav")
    assert stats.silence_samples == 11 * 16
    assert samples[FRAME_SAMPLES + 11 * 16 :].tobytes() == pcm_frame(1)
    assert not samples[FRAME_SAMPLES : FRAME_SAMPLES + 11 * 16].any()


def test_a_set_tolerance_replaces_the_half_frame_threshold(tmp_path: Path) -> None:
    frames = [(ORIGIN_MS, pcm_frame(0)), (ORIGIN_MS + 31, pcm_frame(1)), (ORIGIN_MS + 80, pcm_frame(2))]
    with WavWriter(tmp_path / "a.wav", ORIGIN_MS, tolerance_ms=20) as writer:
        placements = [writer.write_frame(ts, pcm) for ts, pcm in frames]
    stats = writer.close()
    # +11 ms is within 20 ms: appended; the next frame, 40 ms after the write position, gets silence.
    silences = [
        (p.start_sample - p.silence_samples, p.silence_samples) for p in placements if p.silence_samples
    ]
    assert silences == [(2 * FRAME_SAMPLES, 40 * 16)]
    assert (stats.silence_runs, stats.silence_samples) == (1, 40 * 16)


def test_an_overlapping_frame_is_appended_and_counted_never_dropped(tmp_path: Path) -> None:
    # The third frame claims the same instant as the second (an overlap): it is kept, after it.
    frames = [(ORIGIN_MS, pcm_frame(0)), (ORIGIN_MS + 20, pcm_frame(1)), (ORIGIN_MS + 20, pcm_frame(2))]
    stats = write(tmp_path / "a.wav", frames).close()
    _, samples = read_wav(tmp_path / "a.wav")
    assert samples.tobytes() == b"".join(pcm for _, pcm in frames)
    assert stats.early_frames == 1
    assert stats.max_ahead_samples == FRAME_SAMPLES


def test_a_frame_before_the_origin_is_kept_at_the_start(tmp_path: Path) -> None:
    stats = write(tmp_path / "a.wav", [(ORIGIN_MS - 40, pcm_frame(0))]).close()
    _, samples = read_wav(tmp_path / "a.wav")
    assert samples.tobytes() == pcm_frame(0)
    assert stats.max_ahead_samples == 40 * 16


def test_same_frames_give_the_same_bytes(tmp_path: Path) -> None:
    frames = [(ORIGIN_MS + i * 25, pcm_frame(i)) for i in range(0, 40, 3)]
    write(tmp_path / "one.wav", frames).close()
    write(tmp_path / "two.wav", frames).close()
    assert (tmp_path / "one.wav").read_bytes() == (tmp_path / "two.wav").read_bytes()


def test_frames_that_are_not_whole_samples_are_refused(tmp_path: Path) -> None:
    with WavWriter(tmp_path / "a.wav", ORIGIN_MS) as writer:
        with pytest.raises(WavError):
            writer.write_frame(ORIGIN_MS, b"\x01\x02\x03")
        writer.write_frame(ORIGIN_MS, b"\x01\x02")  # positive control
    assert writer.close().pcm_samples == 1


def test_a_closed_writer_refuses_frames_and_close_is_idempotent(tmp_path: Path) -> None:
    writer = write(tmp_path / "a.wav", [(ORIGIN_MS, pcm_frame(0))])
    assert writer.close() == writer.close()
    with pytest.raises(WavError):
        writer.write_frame(ORIGIN_MS + 20, pcm_frame(1))


def test_a_long_gap_is_written_in_full(tmp_path: Path) -> None:
    frames = [(ORIGIN_MS, pcm_frame(0)), (ORIGIN_MS + 60_000, pcm_frame(1))]
    stats = write(tmp_path / "a.wav", frames).close()
    assert stats.silence_samples == 60_000 * 16 - FRAME_SAMPLES
    assert (tmp_path / "a.wav").stat().st_size == HEADER_BYTES + (60_000 * 16 + FRAME_SAMPLES) * 2


def test_tracks_share_the_timeline_and_end_together(tmp_path: Path) -> None:
    tracks = WavTracks(lambda name: tmp_path / name, ORIGIN_MS)
    for i in range(10):
        tracks.write_mixed(ORIGIN_MS + i * FRAME_MS, pcm_frame(i))
    tracks.write_participant(7, ORIGIN_MS + 60, pcm_frame(100))
    tracks.write_participant(7, ORIGIN_MS + 140, pcm_frame(101))
    stats = tracks.close()
    assert sorted(stats) == ["audio-7.wav", "audio.wav"]
    _, mixed = read_wav(tmp_path / "audio.wav")
    _, alice = read_wav(tmp_path / "audio-7.wav")
    assert len(mixed) == len(alice) == 10 * FRAME_SAMPLES
    assert mixed.tobytes() == b"".join(pcm_frame(i) for i in range(10))
    expected = np.zeros(10 * FRAME_SAMPLES, dtype="<i2")
    expected[3 * FRAME_SAMPLES : 4 * FRAME_SAMPLES] = np.frombuffer(pcm_frame(100), dtype="<i2")
    expected[7 * FRAME_SAMPLES : 8 * FRAME_SAMPLES] = np.frombuffer(pcm_frame(101), dtype="<i2")
    assert np.array_equal(alice, expected)


def test_tracks_pad_to_a_later_stream_end(tmp_path: Path) -> None:
    tracks = WavTracks(lambda name: tmp_path / name, ORIGIN_MS)
    tracks.write_mixed(ORIGIN_MS, pcm_frame(0))
    stats = tracks.close(end_ms=ORIGIN_MS + 100)
    assert stats["audio.wav"].total_samples == 100 * 16


def test_other_formats_write_their_header(tmp_path: Path) -> None:
    fmt = PcmFormat(sample_rate=48000, channels=2)
    with WavWriter(tmp_path / "a.wav", 0, fmt) as writer:
        writer.write_frame(0, bytes(4 * 480))  # 10 ms of stereo frames at 48 kHz
        writer.write_frame(10, b"\x01\x00\x02\x00" * 480)
    wav, samples = read_wav(tmp_path / "a.wav")
    assert (wav.getframerate(), wav.getnchannels()) == (48000, 2)
    assert len(samples) == 2 * 960
    assert samples[2 * 480 :].tolist() == [1, 2] * 480


frame_plans = st.lists(
    st.tuples(
        st.integers(min_value=-15, max_value=200),  # ms after the previous frame's nominal end
        st.integers(min_value=1, max_value=3).map(lambda n: n * 160),  # 10, 20 or 30 ms frames
    ),
    min_size=1,
    max_size=40,
)


@given(frame_plans, st.integers(min_value=0, max_value=500))
@settings(max_examples=150, deadline=None)
def test_the_file_is_the_pcm_received_plus_silence_only_at_the_recorded_places(
    plan: list[tuple[int, int]], first_offset_ms: int
) -> None:
    timeline = PcmTimeline(ORIGIN_MS)
    out = bytearray()
    sent = []
    ts = ORIGIN_MS + first_offset_ms
    for seed, (step_ms, samples) in enumerate(plan):
        pcm = pcm_frame(seed, samples)
        placement = timeline.place(ts, len(pcm))
        out += bytes(placement.silence_samples * 2) + pcm
        sent.append((placement, pcm))
        ts += samples // 16 + step_ms
    data = np.frombuffer(bytes(out), dtype="<i2")
    # Each frame sits whole at its start, never before the previous frame's end, at its place if it could.
    end = 0
    for placement, pcm in sent:
        assert placement.start_sample >= end
        assert placement.start_sample == max(placement.target_sample, end) or placement.silence_samples == 0
        assert data[placement.start_sample : placement.start_sample + placement.samples].tobytes() == pcm
        end = placement.start_sample + placement.samples
    # Everything else is silence, exactly the recorded runs.
    mask = np.ones(len(data), dtype=bool)
    for placement, _ in sent:
        mask[placement.start_sample : placement.start_sample + placement.samples] = False
    assert not data[mask].any()
    stats = timeline.stats()
    assert int(mask.sum()) == stats.silence_samples == sum(p.silence_samples for p, _ in sent)
    assert stats.silence_runs == sum(1 for p, _ in sent if p.silence_samples)
    assert stats.pcm_samples == sum(p.samples for p, _ in sent)
