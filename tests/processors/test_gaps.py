"""Gap records: audio tiling and the jitter rule, video thresholds, edges and reasons (pure)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.gaps import (
    AudioGapTracker,
    GapReason,
    GapRecord,
    VideoGapTracker,
    audio_duration_ms,
    video_max_gap_ms,
)

FRAME = 640  # bytes: 20 ms of 16 kHz mono L16
ORIGIN = 1_700_000_000_000


def feed(tracker: AudioGapTracker, timestamps: list[int], epochs: list[int] | None = None) -> list[GapRecord]:
    gaps = []
    for i, ts in enumerate(timestamps):
        gap = tracker.frame(ts, FRAME, epochs[i] if epochs else 0)
        if gap is not None:
            gaps.append(gap)
    return gaps


def test_gap_reason_values_are_exactly_the_avro_symbols() -> None:
    schema = json.loads((Path(__file__).parents[2] / "schemas/avro/audio_frame.avsc").read_text())
    gap_field = next(f for f in schema["fields"] if f["name"] == "gap")
    gap_record = next(t for t in gap_field["type"] if isinstance(t, dict))
    reason = next(f for f in gap_record["fields"] if f["name"] == "reason")
    assert [r.value for r in GapReason] == reason["type"]["symbols"]


def test_audio_duration_comes_from_the_payload_size() -> None:
    assert audio_duration_ms(640, 16_000, 1) == 20
    assert audio_duration_ms(3_840, 48_000, 2) == 20
    assert audio_duration_ms(320, 8_000, 1) == 20
    assert audio_duration_ms(641, 16_000, 1) == 20  # 20.03 ms rounds to 20
    assert audio_duration_ms(656, 16_000, 1) == 21  # 20.5 ms rounds half up
    with pytest.raises(ValueError, match="must be positive"):
        audio_duration_ms(640, 0, 1)


def test_contiguous_audio_has_no_gaps_and_one_missing_frame_is_one_gap() -> None:
    tracker = AudioGapTracker(ORIGIN)
    assert feed(tracker, [ORIGIN, ORIGIN + 20, ORIGIN + 40]) == []
    assert tracker.frame(ORIGIN + 80, FRAME) == GapRecord(ORIGIN + 60, 20, GapReason.LOSS)
    assert tracker.cursor_ms == ORIGIN + 100


def test_jitter_under_one_frame_makes_no_gap_but_a_whole_frame_does() -> None:
    jittery = AudioGapTracker(ORIGIN)
    assert feed(jittery, [ORIGIN, ORIGIN + 20, ORIGIN + 59]) == []  # 19 ms missing: jitter
    assert jittery.cursor_ms == ORIGIN + 60  # the frame was placed at the cursor
    control = AudioGapTracker(ORIGIN)
    assert feed(control, [ORIGIN, ORIGIN + 20, ORIGIN + 60]) == [GapRecord(ORIGIN + 40, 20, GapReason.LOSS)]


def test_a_frame_overlapping_the_previous_one_never_makes_a_negative_gap() -> None:
    tracker = AudioGapTracker(ORIGIN)
    assert feed(tracker, [ORIGIN, ORIGIN + 5, ORIGIN + 10, ORIGIN + 60]) == []
    assert tracker.cursor_ms == ORIGIN + 80
    gap = tracker.frame(ORIGIN + 130, FRAME)  # 50 ms after the cursor: a real gap, realigned exactly
    assert gap == GapRecord(ORIGIN + 80, 50, GapReason.LOSS)
    assert tracker.cursor_ms == ORIGIN + 150


def test_leading_and_trailing_gaps_are_exact() -> None:
    tracker = AudioGapTracker(ORIGIN)
    assert tracker.frame(ORIGIN + 3, FRAME) == GapRecord(ORIGIN, 3, GapReason.LOSS)
    assert tracker.end(ORIGIN + 30) == GapRecord(ORIGIN + 23, 7, GapReason.LOSS)
    assert tracker.end(ORIGIN + 90) is None  # a repeated end is a no-op
    aligned = AudioGapTracker(ORIGIN)
    assert aligned.frame(ORIGIN, FRAME) is None
    assert aligned.end(ORIGIN + 20) is None


def test_a_lane_with_no_frames_is_one_gap_from_origin_to_end() -> None:
    tracker = AudioGapTracker(ORIGIN, default_reason=GapReason.SILENT)
    assert tracker.end(ORIGIN + 5_000) == GapRecord(ORIGIN, 5_000, GapReason.SILENT)
    with pytest.raises(RuntimeError, match="after end"):
        tracker.frame(ORIGIN + 6_000, FRAME)


def test_reason_comes_from_marks_then_epoch_change_then_default() -> None:
    tracker = AudioGapTracker(ORIGIN, default_reason=GapReason.SILENT)
    tracker.mark(ORIGIN + 100, ORIGIN + 400, GapReason.PAUSE)
    tracker.mark(ORIGIN + 390, ORIGIN + 460, GapReason.LOSS)  # overlaps the gap less than the pause
    gaps = feed(
        tracker,
        [ORIGIN, ORIGIN + 500, ORIGIN + 700, ORIGIN + 900, ORIGIN + 920],
        epochs=[1, 1, 1, 2, 2],
    )
    assert gaps == [
        GapRecord(ORIGIN + 20, 480, GapReason.PAUSE),
        GapRecord(ORIGIN + 520, 180, GapReason.SILENT),  # same epoch, no mark: the lane's default
        GapRecord(ORIGIN + 720, 180, GapReason.INGEST_DIED),  # epoch 1 -> 2 across the gap
    ]
    assert tracker.gap_count == 3


def test_video_gap_needs_more_than_the_threshold_and_holds_the_last_frame_one_interval() -> None:
    assert video_max_gap_ms(30) == 200 and video_max_gap_ms(5) == 600
    tracker = VideoGapTracker(ORIGIN, fps=30)  # interval 34 ms, threshold 200 ms
    assert tracker.frame(ORIGIN + 150) is None  # leading 150 ms: under the threshold
    assert tracker.frame(ORIGIN + 350) is None  # exactly 200 ms: not a gap
    assert tracker.frame(ORIGIN + 551) == GapRecord(ORIGIN + 384, 167, GapReason.LOSS)
    assert tracker.end(ORIGIN + 700) is None
    late_start = VideoGapTracker(ORIGIN, fps=30)
    assert late_start.frame(ORIGIN + 1_000) == GapRecord(ORIGIN, 1_000, GapReason.LOSS)
    assert late_start.end(ORIGIN + 2_000) == GapRecord(ORIGIN + 1_034, 966, GapReason.LOSS)


def test_video_off_mark_names_the_video_gap() -> None:
    tracker = VideoGapTracker(ORIGIN, fps=5)
    tracker.frame(ORIGIN)
    tracker.mark(ORIGIN + 300, ORIGIN + 5_000, GapReason.VIDEO_OFF)
    assert tracker.frame(ORIGIN + 5_000) == GapRecord(ORIGIN + 200, 4_800, GapReason.VIDEO_OFF)
    assert tracker.frame(ORIGIN + 6_000, ingest_epoch=1) == GapRecord(
        ORIGIN + 5_200, 800, GapReason.INGEST_DIED
    )
    with pytest.raises(ValueError, match="below one frame interval"):
        VideoGapTracker(ORIGIN, fps=5, max_gap_ms=100)


# -- properties -------------------------------------------------------------------------------


def tile(origin: int, events: list[tuple[str, int, int]]) -> int:
    """Walk frames and gaps in write order; assert each starts where the previous ended; return the
    end. `events`: ("gap", start, length) or ("frame", timestamp, duration)."""
    position = origin
    for kind, start, length in events:
        assert length > 0
        if kind == "gap":
            assert start == position, "gaps must start exactly where the timeline stands"
        position += length
    return position


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(-19, 200), max_size=80),
    st.integers(0, 100),
    st.integers(0, 400),
    st.sampled_from([320, 640, 1_280]),
)
def test_audio_frames_and_gaps_tile_origin_to_end_exactly(
    steps: list[int], lead: int, tail: int, payload: int
) -> None:
    duration = audio_duration_ms(payload, 16_000)
    tracker = AudioGapTracker(ORIGIN)
    events: list[tuple[str, int, int]] = []
    ts = ORIGIN + lead
    for step in [0, *steps]:
        ts += duration + step if events else 0
        gap = tracker.frame(ts, payload)
        if gap is not None:
            events.append(("gap", gap.start_ms, gap.length_ms))
        events.append(("frame", ts, duration))
    end = max(tracker.cursor_ms, ts + duration) + tail
    trailing = tracker.end(end)
    if trailing is not None:
        events.append(("gap", trailing.start_ms, trailing.length_ms))
    assert tile(ORIGIN, events) == end
    # every interior gap is at least one whole frame
    interior = [e for i, e in enumerate(events) if e[0] == "gap" and 0 < i < len(events) - 1]
    assert all(length >= duration for _, _, length in interior)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(-19, 19), max_size=100))
def test_jitter_under_one_frame_never_makes_a_gap(jitter: list[int]) -> None:
    tracker = AudioGapTracker(ORIGIN)
    timestamps = [ORIGIN] + [ORIGIN + 20 * (i + 1) + j for i, j in enumerate(jitter)]
    assert feed(tracker, timestamps) == []
    assert tracker.end(ORIGIN + 20 * len(timestamps)) is None
    # positive control: the same lane with the second frame really missing gets exactly one gap
    control = AudioGapTracker(ORIGIN)
    assert feed(control, [ORIGIN] + [ORIGIN + 20 * (i + 2) for i in range(len(jitter))]) == (
        [GapRecord(ORIGIN + 20, 20, GapReason.LOSS)] if jitter else []
    )


@settings(max_examples=200, deadline=None)
@given(st.lists(st.booleans(), min_size=1, max_size=120))
def test_gaps_are_exactly_the_missing_runs_of_a_grid(present: list[bool]) -> None:
    tracker = AudioGapTracker(ORIGIN)
    gaps = feed(tracker, [ORIGIN + 20 * i for i, here in enumerate(present) if here])
    trailing = tracker.end(ORIGIN + 20 * len(present))
    gaps += [trailing] if trailing else []
    missing_runs = []
    i = 0
    while i < len(present):
        if present[i]:
            i += 1
            continue
        j = i
        while j < len(present) and not present[j]:
            j += 1
        missing_runs.append(GapRecord(ORIGIN + 20 * i, 20 * (j - i), GapReason.LOSS))
        i = j
    assert gaps == missing_runs
