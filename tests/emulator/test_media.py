"""The emulator's synthetic meetings carry real media: H.264 that decodes, PCM with beeps exactly
where the video flashes, deterministic from the seed, cheap to play and bounded in memory."""

from __future__ import annotations

import collections
import itertools
import tracemalloc
from collections.abc import Iterable

import av
import av.video.frame
import numpy as np
import pytest

from emulator import clips
from emulator.conversation import FIRST_USER_ID
from emulator.media import MediaItem, MeetingSpec, SyntheticMeeting
from emulator.voices import BEEP_MS, SAMPLE_RATE, VOICE_POOL, from_pcm


@pytest.fixture(scope="module", autouse=True)
def _clip_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterable[None]:
    """Encode into a private cache so the tests exercise the encoder and the disk cache."""
    mp = pytest.MonkeyPatch()
    mp.setenv("RTMSFLOW_CACHE", str(tmp_path_factory.mktemp("rtmsflow-cache")))
    clips.clear_memory_cache()
    yield
    clips.clear_memory_cache()
    mp.undo()


def small(**kw: object) -> MeetingSpec:
    """A quick meeting: 360p, a beep every second (so the clip is 30 frames)."""
    base: dict[str, object] = {
        "seed": 3,
        "participants": 3,
        "duration_s": 6.0,
        "video": "360p",
        "beep_every_ms": 1000,
    }
    base.update(kw)
    return MeetingSpec(**base)  # type: ignore[arg-type]


# -- helpers that look at the media the way a receiver would ------------------------------------


def nal_types(access_unit: bytes) -> list[int]:
    """NAL unit types of an Annex-B access unit."""
    out: list[int] = []
    i = 0
    while True:
        i = access_unit.find(b"\x00\x00\x01", i)
        if i < 0 or i + 3 >= len(access_unit):
            return out
        out.append(access_unit[i + 3] & 0x1F)
        i += 3


def decode(items: list[MediaItem]) -> list[tuple[int, np.ndarray, str]]:
    """Decode video items in order: (offset_ms, luma plane, picture type) per frame."""
    ctx = av.CodecContext.create("h264", "r")
    frames: list[av.VideoFrame] = []
    for item in items:
        assert isinstance(item.data, bytes)
        frames.extend(ctx.decode(av.Packet(item.data)))
    frames.extend(ctx.decode(None))
    assert len(frames) == len(items), "one decoded picture per access unit"
    out = []
    for item, frame in zip(items, frames, strict=True):
        yuv = frame.to_ndarray(format="yuv420p")
        out.append((item.offset_ms, yuv[: frame.height], av.video.frame.PictureType(frame.pict_type).name))
    return out


def place(items: Iterable[MediaItem], duration_ms: int) -> np.ndarray:
    """Lay audio packets on a silent track at their offsets (float samples)."""
    track = np.zeros(duration_ms * SAMPLE_RATE // 1000 + SAMPLE_RATE, dtype=np.float32)
    for item in items:
        assert isinstance(item.data, bytes)
        pcm = from_pcm(item.data)
        start = item.offset_ms * SAMPLE_RATE // 1000
        track[start : start + len(pcm)] += pcm
    return track


def beep_onsets_ms(track: np.ndarray) -> list[int]:
    """Where a loud 1 kHz tone starts, found from the samples alone (5 ms Goertzel blocks)."""
    block = SAMPLE_RATE // 200
    n = len(track) // block
    x = track[: n * block].reshape(n, block).astype(np.float64)
    t = np.arange(block) / SAMPLE_RATE
    c = x @ np.cos(2 * np.pi * 1000 * t)
    s = x @ np.sin(2 * np.pi * 1000 * t)
    amplitude = 2 * np.sqrt(c**2 + s**2) / block  # of the 1 kHz component, in full-scale units
    loud = amplitude > 0.5
    onsets = []
    for i in range(n):
        if loud[i] and (i == 0 or not loud[i - 1]):
            run = 0
            while i + run < n and loud[i + run]:
                run += 1
            assert run * 5 == BEEP_MS, f"beep at {i * 5} ms lasts {run * 5} ms"
            onsets.append(i * 5)
    return onsets


# -- the media are real and in sync --------------------------------------------------------------


@pytest.mark.parametrize("audio_mode", ["mixed", "multi"])
def test_flash_frames_sit_exactly_on_the_beeps(audio_mode: str) -> None:
    meeting = SyntheticMeeting(small(deskshare=True, duration_s=9.0))
    items = list(meeting.timeline(audio_mode=audio_mode, deskshare=True))  # type: ignore[arg-type]

    audio = [i for i in items if i.kind == "audio"]
    if audio_mode == "multi":  # the beep belongs to participant 0's stream
        audio = [i for i in audio if i.user_id == meeting.participants[0].user_id]
    beeps = beep_onsets_ms(place(audio, meeting.duration_ms))

    for kind in ("video", "deskshare"):
        pictures = decode([i for i in items if i.kind == kind])
        flashes = [offset for offset, luma, _ in pictures if luma.mean() > 200]
        others = [luma.mean() for _, luma, _ in pictures if luma.mean() <= 200]
        assert max(others) < 130, "ordinary frames are clearly darker than a flash"
        if kind == "video":
            assert (
                flashes
                == beeps
                == list(meeting.beep_instants_ms)
                == [500, 1500, 2500, 3500, 4500, 5500, 6500, 7500, 8500]
            )
        else:  # screen sharing covers only part of the meeting
            assert flashes and set(flashes) <= set(beeps)


def test_720p_stream_is_constrained_baseline_with_in_band_parameter_sets() -> None:
    meeting = SyntheticMeeting(small(video="720p", duration_s=2.5))
    video = [i for i in meeting.timeline(audio=False, events=False, transcripts=False) if i.kind == "video"]
    assert len(video) == 75
    for item in video:
        assert isinstance(item.data, bytes)
        types = nal_types(item.data)
        assert item.data.startswith(b"\x00\x00\x00\x01") or item.data.startswith(b"\x00\x00\x01")
        if item.keyframe:
            assert {7, 8, 5} <= set(types), "SPS, PPS and an IDR slice in every keyframe"
        else:
            assert set(types) <= {1, 6} and 1 in types
    first = video[0].data
    assert isinstance(first, bytes)
    sps = first[first.find(b"\x00\x00\x01\x67") + 3 :]
    assert sps[1] == 66 and sps[2] & 0xC0 == 0xC0, (
        "profile_idc 66 with constraint_set0/1: constrained baseline"
    )
    assert [i.offset_ms for i in video if i.keyframe] == [0, 1000, 2000], "an IDR every second"
    pictures = decode(video)
    assert pictures[0][1].shape == (720, 1280)
    assert {ptype for _, _, ptype in pictures} == {"I", "P"}, "no B-frames"


# -- determinism ---------------------------------------------------------------------------------


def test_same_spec_gives_identical_timeline() -> None:
    spec = small(participants=4, deskshare=True)
    a = list(SyntheticMeeting(spec).timeline(audio_mode="multi", deskshare=True))
    b = list(SyntheticMeeting(spec).timeline(audio_mode="multi", deskshare=True))
    assert a == b


def test_clip_encoding_is_reproducible_and_disk_cache_round_trips() -> None:
    params = SyntheticMeeting(small(seed=99, fps=10))._clip_params("camera")
    first = clips.encode_clip(params)
    assert clips.encode_clip(params).frames == first.frames
    path = clips.clip_cache_dir() / (params.cache_key() + ".bin")
    path.unlink(missing_ok=True)
    assert clips.get_clip(params).frames == first.frames and path.exists()
    clips.clear_memory_cache()
    loaded = clips.get_clip(params)  # from disk now
    assert loaded.frames == first.frames and loaded.keyframes == first.keyframes

    path.write_bytes(path.read_bytes()[:-10])  # a torn file is ignored and rewritten
    clips.clear_memory_cache()
    assert clips.get_clip(params).frames == first.frames
    clips.clear_memory_cache()
    assert clips.get_clip(params).frames == first.frames


def _audio_by_user(spec: MeetingSpec) -> dict[int, bytes]:
    meeting = SyntheticMeeting(spec)
    out: dict[int, bytearray] = collections.defaultdict(bytearray)
    for item in meeting.timeline(audio_mode="multi", video=False, transcripts=False, events=False):
        assert isinstance(item.data, bytes)
        out[item.user_id] += item.data
    return {k: bytes(v) for k, v in out.items()}


def _pitch_hz(pcm: bytes) -> float:
    x = from_pcm(pcm)[: SAMPLE_RATE * 2]
    x = x - x.mean()
    ac = np.correlate(x[:8000], x, mode="valid")[: SAMPLE_RATE // 60]
    lo = SAMPLE_RATE // 400  # search 60..400 Hz
    return SAMPLE_RATE / (lo + int(np.argmax(ac[lo:])))


def test_participants_and_seeds_sound_different() -> None:
    by_user = _audio_by_user(small(participants=3, duration_s=20.0, beep_every_ms=None))
    assert sorted(by_user) == [FIRST_USER_ID, FIRST_USER_ID + 1024, FIRST_USER_ID + 2048], "everyone speaks"
    pitches = [_pitch_hz(pcm) for pcm in by_user.values()]
    assert min(abs(a - b) for a, b in itertools.combinations(pitches, 2)) > 5, pitches
    other_seed = _audio_by_user(small(seed=4, participants=3, duration_s=20.0, beep_every_ms=None))
    assert set(other_seed.values()).isdisjoint(by_user.values())


def test_audio_is_speech_like_with_silences() -> None:
    meeting = SyntheticMeeting(small(duration_s=20.0, beep_every_ms=None))
    pcm = b"".join(
        i.data for i in meeting.timeline(video=False) if isinstance(i.data, bytes) and i.kind == "audio"
    )
    x = from_pcm(pcm)
    rms = np.sqrt((x.reshape(-1, 320) ** 2).mean(axis=1))  # per 20 ms
    assert 0.1 < (rms < 1e-4).mean() < 0.6, "turn gaps are silent in the mixed stream"
    assert 0.02 < np.abs(x).max() <= 0.31
    power = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / SAMPLE_RATE)
    assert power[(freqs > 80) & (freqs < 4000)].sum() > 0.95 * power.sum(), "energy in the voice band"


# -- timeline shape ------------------------------------------------------------------------------


@pytest.mark.parametrize("send_rate", [20, 100])
def test_timeline_is_sorted_with_exact_cadences(send_rate: int) -> None:
    spec = small(duration_s=12.0)
    meeting = SyntheticMeeting(spec)
    for mode in ("mixed", "multi"):
        items = list(meeting.timeline(audio_mode=mode, send_rate_ms=send_rate))  # type: ignore[arg-type]
        offsets = [i.offset_ms for i in items]
        assert offsets == sorted(offsets)
        audio = [i for i in items if i.kind == "audio"]
        assert all(len(i.data) == send_rate * 32 for i in audio), "L16 16 kHz mono: 32 bytes per ms"
        if mode == "mixed":
            assert [i.offset_ms for i in audio] == list(range(0, spec.duration_ms, send_rate))
            assert {(i.user_id, i.user_name) for i in audio} == {(0, "")}
        else:
            by_user: dict[int, list[int]] = collections.defaultdict(list)
            for i in audio:
                by_user[i.user_id].append(i.offset_ms)
            for offsets_of_user in by_user.values():
                assert all(o % send_rate == 0 for o in offsets_of_user)
                steps = np.diff(offsets_of_user)
                assert steps.min() == send_rate, "one packet per send_rate per speaker, no duplicates"
                assert (steps == send_rate).mean() > 0.75, "continuous while speaking, gaps between turns"
        video = [i.offset_ms for i in items if i.kind == "video"]
        assert len(video) == spec.duration_ms * spec.fps // 1000
        assert set(np.diff(video)) <= {33, 34} and video[30] == 1000


def test_transcripts_follow_their_utterances() -> None:
    meeting = SyntheticMeeting(small(duration_s=40.0, video=None))
    items = list(meeting.timeline())
    transcripts = [i for i in items if i.kind == "transcript"]
    assert len(transcripts) >= 5
    speaker_at: dict[int, int] = {}
    for i in items:
        if i.kind == "event" and i.event and i.event["event_type"] == 2:
            speaker_at[i.offset_ms] = i.event["user_id"]
    current = None
    starts = sorted(speaker_at)
    for t in transcripts:
        assert t.start_ms is not None and t.end_ms is not None
        assert t.start_ms <= t.end_ms <= t.offset_ms <= meeting.duration_ms
        assert isinstance(t.data, str) and t.data.strip()
        current = speaker_at[max(s for s in starts if s <= t.start_ms)]
        assert t.user_id == current, "attributed to the active speaker of that turn"


def test_events_bracket_the_meeting() -> None:
    meeting = SyntheticMeeting(small(deskshare=True, duration_s=10.0))
    events = [i for i in meeting.timeline(video=False) if i.kind == "event"]
    types = [e.event["event_type"] for e in events if e.event]
    assert types[:2] == [3, 8] and types[-2:] == [9, 4]
    assert types.count(5) == types.count(6) == 1 and types.index(5) < types.index(6)
    join = events[0].event
    assert join == {
        "event_type": 3,
        "participants": [{"user_id": p.user_id, "user_name": p.user_name} for p in meeting.participants],
    }
    assert events[-1].event == {
        "event_type": 4,
        "participants": [{"user_id": p.user_id} for p in meeting.participants],
    }
    speakers = [e.event["user_id"] for e in events if e.event and e.event["event_type"] == 2]
    assert len(speakers) >= 2 and all(a != b for a, b in itertools.pairwise(speakers)), "one event per change"


def test_video_label_changes_only_on_keyframes() -> None:
    meeting = SyntheticMeeting(small(duration_s=30.0))
    video = [i for i in meeting.timeline(audio=False) if i.kind == "video"]
    changes = [b for a, b in itertools.pairwise(video) if a.user_id != b.user_id]
    assert changes and all(c.keyframe for c in changes)
    assert len({v.user_id for v in video}) > 1


def test_resumed_timeline_equals_the_tail_of_the_full_one() -> None:
    meeting = SyntheticMeeting(small(duration_s=15.0, deskshare=True))
    full = list(meeting.timeline(audio_mode="multi", deskshare=True))
    tail = list(meeting.timeline(audio_mode="multi", deskshare=True, start_ms=7_010))
    assert tail == [i for i in full if i.offset_ms >= 7_010]


def test_bad_specs_are_rejected_with_a_reason() -> None:
    with pytest.raises(ValueError, match="multiple of 100"):
        MeetingSpec(beep_every_ms=1_050)
    with pytest.raises(ValueError, match="video"):
        MeetingSpec(video="4k")
    with pytest.raises(ValueError, match="send rate"):
        list(SyntheticMeeting(small()).timeline(send_rate_ms=30))


# -- cost ----------------------------------------------------------------------------------------


def test_hour_long_timeline_plays_to_its_end_without_growing_memory() -> None:
    """Memory only; its speed is `python -m benchmarks.media_bench` (hour_us_per_item)."""
    meeting = SyntheticMeeting(small(duration_s=3600.0, beep_every_ms=5000, participants=5))
    meeting.prepare()
    timeline = meeting.timeline(audio_mode="multi")
    for _ in itertools.islice(timeline, 20_000):  # warm up: caches, first turns
        pass
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        for _ in itertools.islice(timeline, 60_000):
            pass
        middle, _ = tracemalloc.get_traced_memory()
        for _ in itertools.islice(timeline, 60_000):
            pass
        after, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert after - before < 256 * 1024 and abs(after - middle) < 64 * 1024, (before, middle, after)
    assert peak - before < 1 << 20

    rest = collections.deque(timeline, maxlen=1)  # the remaining ~50 minutes, the last item kept
    assert rest and rest[0].offset_ms == 3_600_000, "the timeline plays on to the end of the hour"


def test_hundreds_of_meetings_play_at_once_on_shared_material() -> None:
    """Meetings share the encoded clip and the voice pool; each playing timeline costs only its
    generator state (seeds 256 apart map to the same voices). Memory only; playing them round
    robin is timed by `python -m benchmarks.media_bench` (round_robin_us_per_item)."""
    specs = [small(seed=k * VOICE_POOL, duration_s=3600.0) for k in range(300)]
    SyntheticMeeting(specs[0]).prepare()
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        timelines = [SyntheticMeeting(spec).timeline(audio_mode="multi") for spec in specs]
        for timeline in timelines:  # everyone one second in
            for _ in itertools.islice(timeline, 100):
                pass
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (after - before) / len(specs) < 40 * 1024, f"{(after - before) / len(specs):.0f} bytes per meeting"


# -- individual cameras ----------------------------------------------------------------------------


def camera_items(spec: MeetingSpec) -> tuple[dict[int, list[MediaItem]], list[MediaItem]]:
    """Each participant's camera frames, and the camera on/off events, of a cameras timeline."""
    frames: dict[int, list[MediaItem]] = collections.defaultdict(list)
    events = []
    for item in SyntheticMeeting(spec).timeline(cameras=True, audio=False, transcripts=False):
        if item.kind == "video":
            frames[item.user_id].append(item)
        elif item.event and item.event["event_type"] in (8, 9):
            events.append(item)
    return frames, events


def test_every_participant_has_a_distinct_camera_at_every_frame_instant() -> None:
    spec = small(beep_every_ms=3000)
    frames, events = camera_items(spec)
    meeting = SyntheticMeeting(spec)
    ids = [p.user_id for p in meeting.participants]
    instants = [j * 1000 // spec.fps for j in range(spec.duration_ms * spec.fps // 1000)]
    assert sorted(frames) == sorted(ids)
    for uid in ids:
        assert [f.offset_ms for f in frames[uid]] == instants
        assert frames[uid][0].keyframe and nal_types(frames[uid][0].data)[:2] == [7, 8]
    assert len({frames[uid][0].data for uid in ids}) == len(ids)  # tell the cameras apart
    # the control: the only camera events are everyone's camera on at 0 and off at the end
    assert [(e.offset_ms, e.event["event_type"]) for e in events] == [(0, 8), (spec.duration_ms, 9)]  # type: ignore[index]
    assert meeting.camera_off_window() is None


def test_camera_off_leaves_the_last_participants_frames_out_and_says_so_in_events() -> None:
    spec = small(beep_every_ms=3000, camera_off=True)
    frames, events = camera_items(spec)
    meeting = SyntheticMeeting(spec)
    off = meeting.camera_off_window()
    assert off is not None and off.user_id == meeting.participants[-1].user_id
    assert 0 < off.start_ms < off.stop_ms < spec.duration_ms
    offsets = [f.offset_ms for f in frames[off.user_id]]
    assert not [t for t in offsets if off.start_ms <= t < off.stop_ms]
    resumed = next(f for f in frames[off.user_id] if f.offset_ms >= off.stop_ms)
    assert resumed.offset_ms == off.stop_ms and resumed.keyframe  # back on at a keyframe
    others = [f.offset_ms for f in frames[meeting.participants[0].user_id]]
    assert len(others) - len(offsets) == (off.end_frame - off.first_frame)
    camera = [(e.offset_ms, e.event["event_type"], e.event["participants"]) for e in events]  # type: ignore[index]
    assert (off.start_ms, 9, [{"user_id": off.user_id}]) in camera
    assert (off.stop_ms, 8, [{"user_id": off.user_id}]) in camera
    # the active-speaker video is unchanged by a camera going off
    active = [i for i in meeting.timeline(audio=False, transcripts=False) if i.kind == "video"]
    plain = SyntheticMeeting(small(beep_every_ms=3000)).timeline(audio=False, transcripts=False)
    assert active == [i for i in plain if i.kind == "video"]
