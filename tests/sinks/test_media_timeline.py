"""The recording's clock without PyAV: pts, durations, sample positions, silence, trims, framing."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sinks.media_timeline import (
    AAC_FRAME_SAMPLES,
    BYTES_PER_SAMPLE,
    SAMPLES_PER_MS,
    AudioPlacement,
    AudioTimeline,
    PcmFrame,
    PcmFramer,
    VideoSample,
    VideoTimeline,
)

ORIGIN = 1_747_316_541_000  # RTMS timestamps are ms since the epoch


def _pcm(ms: int, value: int = 1000) -> bytes:
    return value.to_bytes(2, "little", signed=True) * (ms * SAMPLES_PER_MS)


def _video(timeline: VideoTimeline, ts: int, key: bool = False) -> VideoSample | None:
    return timeline.push(
        ts, b"\x00\x00\x00\x01" + ts.to_bytes(8, "big"), keyframe=key, has_parameter_sets=key
    )


# -- video --------------------------------------------------------------------------------------


def test_video_frame_duration_reaches_the_next_frame_and_the_last_lasts_until_the_end() -> None:
    tl = VideoTimeline(ORIGIN)
    assert _video(tl, ORIGIN + 100, key=True) is None  # held until its duration is known
    first = _video(tl, ORIGIN + 140)
    assert first is not None and (first.pts, first.duration, first.keyframe) == (100, 40, True)
    last = tl.close(ORIGIN + 1000)
    assert last is not None and (last.pts, last.duration, last.keyframe) == (140, 860, False)
    assert tl.close(ORIGIN + 2000) is None  # close is idempotent


def test_video_gap_holds_the_previous_frame_over_it() -> None:
    tl = VideoTimeline(ORIGIN)
    _video(tl, ORIGIN + 0, key=True)
    tl.gap(ORIGIN + 40, 2000)
    held = _video(tl, ORIGIN + 2040)
    assert held is not None and held.pts == 0 and held.duration == 2040
    assert (tl.counts.gaps, tl.counts.gap_ms) == (1, 2000)


def test_video_before_the_first_keyframe_with_parameter_sets_is_dropped() -> None:
    tl = VideoTimeline(ORIGIN)
    assert _video(tl, ORIGIN + 0) is None
    # a keyframe without SPS/PPS does not start the stream either
    assert tl.push(ORIGIN + 40, b"\x00\x00\x01\x65", keyframe=True, has_parameter_sets=False) is None
    assert _video(tl, ORIGIN + 80, key=True) is None
    out = _video(tl, ORIGIN + 120)
    assert out is not None and out.pts == 80 and out.keyframe
    assert tl.counts.dropped_before_keyframe == 2
    assert tl.counts.samples_out == 1


def test_video_before_the_origin_is_clamped_to_zero_then_kept_strictly_increasing() -> None:
    tl = VideoTimeline(ORIGIN)
    _video(tl, ORIGIN - 80, key=True)
    a = _video(tl, ORIGIN - 40)
    b = _video(tl, ORIGIN + 40)
    assert a is not None and b is not None
    assert (a.pts, a.duration) == (0, 1) and (b.pts, b.duration) == (1, 39)
    assert tl.counts.clamped_before_origin == 2
    assert tl.counts.retimed == 0  # clamping is counted once, not also as a retime


def test_video_duplicate_timestamp_is_bumped_not_dropped() -> None:
    tl = VideoTimeline(ORIGIN)
    _video(tl, ORIGIN + 40, key=True)
    first = _video(tl, ORIGIN + 40)
    second = _video(tl, ORIGIN + 80)
    assert first is not None and second is not None
    assert (first.pts, second.pts) == (40, 41)
    assert tl.counts.retimed == 1


def test_video_timeline_refuses_frames_after_close() -> None:
    tl = VideoTimeline(ORIGIN)
    tl.close(ORIGIN)
    with pytest.raises(RuntimeError, match="closed"):
        _video(tl, ORIGIN, key=True)


@settings(max_examples=150, deadline=None)
@given(
    deltas=st.lists(st.integers(min_value=-50, max_value=400), min_size=1, max_size=60),
    start=st.integers(min_value=-500, max_value=500),
    tail=st.integers(min_value=-100, max_value=3000),
)
def test_video_pts_strictly_increase_and_durations_tile_the_timeline(
    deltas: list[int], start: int, tail: int
) -> None:
    tl = VideoTimeline(ORIGIN)
    ts = ORIGIN + start
    out: list[VideoSample] = []
    for i, d in enumerate(deltas):
        ts += max(d, 0) if i else 0  # timestamp order (duplicates allowed), as the processors deliver
        sample = _video(tl, ts, key=(i == 0))
        if sample is not None:
            out.append(sample)
    end = ts + tail
    last = tl.close(end)
    assert last is not None
    out.append(last)
    assert len(out) == len(deltas)
    assert all(s.pts >= 0 and s.duration >= 1 for s in out)
    assert all(a.pts < b.pts for a, b in zip(out, out[1:], strict=False))
    assert all(a.pts + a.duration == b.pts for a, b in zip(out, out[1:], strict=False))
    assert out[-1].pts + out[-1].duration == max(end - ORIGIN, out[-1].pts + 1)


# -- audio --------------------------------------------------------------------------------------


def test_audio_packets_on_time_are_appended_without_silence() -> None:
    tl = AudioTimeline(ORIGIN)
    for k in range(5):
        placement = tl.push(ORIGIN + 20 * k, _pcm(20))
        assert placement == AudioPlacement(0, _pcm(20))
    assert tl.position == 100 * SAMPLES_PER_MS


def test_audio_hole_beyond_the_tolerance_is_filled_with_silence_within_it_is_not() -> None:
    tl = AudioTimeline(ORIGIN, tolerance_ms=20)
    tl.push(ORIGIN, _pcm(20))
    jitter = tl.push(ORIGIN + 35, _pcm(20))  # 15 ms late: jitter, appended right there
    assert jitter is not None and jitter.silence == 0
    hole = tl.push(ORIGIN + 100, _pcm(20))  # 60 ms after the audio ends: a hole
    assert hole is not None and hole.silence == 60 * SAMPLES_PER_MS
    assert tl.position == 120 * SAMPLES_PER_MS
    assert tl.counts.resyncs == 1


def test_audio_overlap_beyond_the_tolerance_is_trimmed() -> None:
    tl = AudioTimeline(ORIGIN, tolerance_ms=10)
    tl.push(ORIGIN, _pcm(100, value=1))
    later = _pcm(30, value=2)
    placement = tl.push(ORIGIN + 80, later)  # 20 ms of it overlap what is placed
    assert placement == AudioPlacement(0, later[20 * SAMPLES_PER_MS * BYTES_PER_SAMPLE :])
    assert tl.counts.trimmed_samples == 20 * SAMPLES_PER_MS
    assert tl.push(ORIGIN + 50, _pcm(20)) is None  # wholly inside placed audio
    assert tl.position == 110 * SAMPLES_PER_MS


def test_audio_before_the_origin_is_trimmed_exactly() -> None:
    tl = AudioTimeline(ORIGIN, tolerance_ms=20)
    assert tl.push(ORIGIN - 40, _pcm(20)) is None
    straddling = (bytes(range(256)) * 3)[:640]  # 20 ms; the trimmed bytes differ from the kept ones
    placement = tl.push(ORIGIN - 5, straddling)
    assert placement == AudioPlacement(0, straddling[5 * SAMPLES_PER_MS * BYTES_PER_SAMPLE :])
    assert tl.position == 15 * SAMPLES_PER_MS
    assert tl.counts.trimmed_samples == 25 * SAMPLES_PER_MS


def test_audio_gap_and_close_pad_with_silence_to_the_meeting_clock() -> None:
    tl = AudioTimeline(ORIGIN)
    tl.push(ORIGIN, _pcm(20))
    gap = tl.gap(ORIGIN + 20, 1000)
    assert gap == AudioPlacement(1000 * SAMPLES_PER_MS, b"")
    after = tl.push(ORIGIN + 1020, _pcm(20))
    assert after == AudioPlacement(0, _pcm(20))  # the gap already brought the audio there
    end = tl.close(ORIGIN + 2000)
    assert end == AudioPlacement((2000 - 1040) * SAMPLES_PER_MS, b"")
    assert tl.close(ORIGIN + 3000) is None
    assert tl.counts.silence_samples == (1000 + 960) * SAMPLES_PER_MS


def test_audio_rejects_an_odd_byte_count() -> None:
    tl = AudioTimeline(ORIGIN)
    with pytest.raises(ValueError, match="even"):
        tl.push(ORIGIN, b"\x00\x00\x00")
    assert tl.push(ORIGIN, b"\x00\x00") is not None  # control: an even count is fine


@settings(max_examples=150, deadline=None)
@given(
    packets=st.lists(
        st.tuples(st.integers(min_value=-30, max_value=200), st.integers(min_value=0, max_value=60)),
        min_size=1,
        max_size=40,
    ),
    start=st.integers(min_value=-200, max_value=200),
    tolerance=st.integers(min_value=0, max_value=40),
)
def test_audio_stays_within_the_tolerance_of_its_timestamps(
    packets: list[tuple[int, int]], start: int, tolerance: int
) -> None:
    tl = AudioTimeline(ORIGIN, tolerance_ms=tolerance)
    ts = ORIGIN + start
    written = 0
    for step, length_ms in packets:
        ts += step
        before = tl.position
        placement = tl.push(ts, _pcm(length_ms))
        if placement is None:
            assert tl.position == before
            continue
        written += placement.silence + len(placement.pcm) // BYTES_PER_SAMPLE
        assert tl.position == written
        kept = len(placement.pcm) // BYTES_PER_SAMPLE
        placed_at = before + placement.silence
        # where the packet's kept part ends vs where its timestamp says it ends
        intended_end = (ts - ORIGIN + length_ms) * SAMPLES_PER_MS
        assert abs(placed_at + kept - intended_end) <= tolerance * SAMPLES_PER_MS
    end = ts + 100
    tl.close(end)
    assert tl.position == max(written, (end - ORIGIN) * SAMPLES_PER_MS)


# -- framing ------------------------------------------------------------------------------------


def test_framer_turns_a_long_silence_into_frames_without_holding_it() -> None:
    framer = PcmFramer()
    total = 10 * 60 * 16_000 + 100  # ten minutes and a bit
    frames = framer.feed(AudioPlacement(total, b""))
    count = 0
    for frame in frames:
        assert frame.samples == AAC_FRAME_SAMPLES and frame.position == count * AAC_FRAME_SAMPLES
        count += 1
        assert framer.buffered_samples < AAC_FRAME_SAMPLES
    assert count == total // AAC_FRAME_SAMPLES
    tail = framer.flush()
    assert tail is not None and tail.samples == total % AAC_FRAME_SAMPLES
    assert tail.pcm == bytes(len(tail.pcm))


@settings(max_examples=200, deadline=None)
@given(
    pieces=st.lists(
        st.tuples(st.integers(min_value=0, max_value=3000), st.binary(max_size=900)), min_size=1, max_size=12
    ),
    frame=st.sampled_from([7, 160, AAC_FRAME_SAMPLES]),
)
def test_framer_output_is_the_input_in_whole_frames(pieces: list[tuple[int, bytes]], frame: int) -> None:
    framer = PcmFramer(frame)
    expected = bytearray()
    out: list[PcmFrame] = []
    for silence, raw in pieces:
        pcm = raw[: len(raw) // 2 * 2]
        expected += bytes(silence * BYTES_PER_SAMPLE) + pcm
        out.extend(framer.feed(AudioPlacement(silence, pcm)))
        assert framer.buffered_samples < frame
    tail = framer.flush()
    if tail is not None:
        assert 0 < tail.samples < frame
        out.append(tail)
    assert b"".join(f.pcm for f in out) == bytes(expected)
    assert all(f.samples == frame for f in out[:-1] if f is not tail)
    starts = [0, *itertools.accumulate(f.samples for f in out)][:-1]
    assert [f.position for f in out] == starts
