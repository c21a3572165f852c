"""recording.mp4 checked by content: real PyAV files from real H.264 (libx264 via the emulator's
clips) and PCM, read back with PyAV's demuxer and decoders."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from emulator.clips import ClipParams, VideoClip, get_clip
from emulator.media import MeetingSpec, SyntheticMeeting
from sinks.media_timeline import SAMPLE_RATE
from sinks.mp4_recorder import DEFAULT_AAC_QUALITY, MediaFrameError, Mp4Recorder, RecorderState

ORIGIN = 1_747_316_541_000  # the stream's start: RTMS timestamps are ms since the epoch
FRAME_MS = 40  # 25 fps


# -- media to feed --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def camera() -> VideoClip:
    """One participant's encoder: 360p camera (libx264 baseline, SPS/PPS before every IDR)."""
    return get_clip(ClipParams("camera", "360p", 25, 50, gop=25, flash_index=None))


@pytest.fixture(scope="module")
def screen() -> VideoClip:
    """Another encoder with other settings: 720p, half the bitrate, other content."""
    return get_clip(ClipParams("screen", "720p", 25, 50, gop=25, flash_index=None))


@dataclass(frozen=True)
class Frame:
    timestamp_ms: int
    data: bytes
    keyframe: bool


def speaker_switches(*clips: VideoClip, start_ms: int = 0) -> list[Frame]:
    """The active speaker's video: each clip in turn, each starting with SPS + PPS + IDR."""
    frames: list[Frame] = []
    for clip in clips:
        for data, key in zip(clip.frames, clip.keyframes, strict=True):
            frames.append(Frame(ORIGIN + start_ms + len(frames) * FRAME_MS, data, key))
    return frames


def tone_packets(
    start_ms: int, end_ms: int, hz: float = 440.0, packet_ms: int = 20
) -> Iterator[tuple[int, bytes]]:
    """A steady sine in 20 ms L16 packets: any silence in the decoded file is one we made."""
    for at in range(start_ms, end_ms, packet_ms):
        n = np.arange(at * 16, (at + packet_ms) * 16)
        pcm = (0.3 * 32767 * np.sin(2 * np.pi * hz * n / SAMPLE_RATE)).astype("<i2")
        yield ORIGIN + at, pcm.tobytes()


def record(
    path: Path,
    video: Iterable[Frame] = (),
    audio: Iterable[tuple[int, bytes]] = (),
    *,
    end_ms: int,
    gaps: Iterable[tuple[str, int, int]] = (),
    with_video: bool = True,
    with_audio: bool = True,
    video_size: tuple[int, int] = (1280, 720),
    fragmented: bool = True,
    process: bool = False,
) -> Mp4Recorder:
    """Feed everything in timestamp order (video, then audio, then gaps at equal times)."""
    items: list[tuple[int, int, object]] = []
    items += [(f.timestamp_ms, 0, f) for f in video]
    items += [(ts, 1, pcm) for ts, pcm in audio]
    items += [(ORIGIN + start, 2, (kind, ORIGIN + start, length)) for kind, start, length in gaps]
    items.sort(key=lambda item: (item[0], item[1]))
    rec = Mp4Recorder(
        path,
        ORIGIN,
        video=with_video,
        audio=with_audio,
        video_size=video_size,
        fragmented=fragmented,
        process=process,
    )
    rec.start()
    for _ts, prio, item in items:
        if prio == 0:
            assert isinstance(item, Frame)
            rec.video_frame(
                item.timestamp_ms, item.data, keyframe=item.keyframe, has_parameter_sets=item.keyframe
            )
        elif prio == 1:
            assert isinstance(item, bytes)
            rec.audio_frame(_ts, item)
        else:
            assert isinstance(item, tuple)
            kind, start, length = item
            rec.gap(kind, start, length)
    rec.close(ORIGIN + end_ms)
    return rec


# -- reading back -----------------------------------------------------------------------------------

_START_CODE = re.compile(b"\x00?\x00\x00\x01")


def annexb_nal_units(access_unit: bytes) -> list[bytes]:
    """NAL units of an Annex-B access unit (x264 NAL units never end in a zero byte)."""
    return [nal for nal in _START_CODE.split(access_unit) if nal]


def length_prefixed_nal_units(sample: bytes, size: int = 4) -> list[bytes]:
    out = []
    pos = 0
    while pos < len(sample):
        n = int.from_bytes(sample[pos : pos + size], "big")
        out.append(sample[pos + size : pos + size + n])
        pos += size + n
    assert pos == len(sample), "sample does not split into length-prefixed NAL units"
    return out


def nal_type(nal: bytes) -> int:
    return nal[0] & 0x1F


def video_packets(path: Path) -> list[av.Packet]:
    with av.open(str(path)) as container:
        return [p for p in container.demux(video=0) if p.size]


def decode_video(path: Path) -> tuple[list[av.VideoFrame], list[tuple[int, str, str]]]:
    """Every picture, and every FFmpeg log line at ERROR or worse while demuxing and decoding."""
    level = av.logging.get_level()
    av.logging.set_level(av.logging.ERROR)  # PyAV passes no FFmpeg logs on by default
    try:
        with av.logging.Capture() as logs, av.open(str(path)) as container:
            frames = list(container.decode(video=0))
    finally:
        av.logging.set_level(level)
    return frames, [entry for entry in logs if entry[0] <= av.logging.ERROR]


def decode_audio(path: Path) -> tuple[float, np.ndarray]:
    """(time of the first sample in s, float samples) of the audio track."""
    with av.open(str(path)) as container:
        frames = list(container.decode(audio=0))
    assert frames and frames[0].time is not None
    return float(frames[0].time), np.concatenate([f.to_ndarray()[0] for f in frames])


def rms_per_window(samples: np.ndarray, first_s: float, window_ms: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """(window start times in s, RMS) of consecutive windows."""
    w = SAMPLE_RATE * window_ms // 1000
    n = len(samples) // w
    rms = np.sqrt((samples[: n * w].reshape(n, w) ** 2).mean(axis=1))
    return first_s + np.arange(n) * window_ms / 1000, rms


# -- the tests --------------------------------------------------------------------------------------


@pytest.mark.parametrize("fragmented", [True, False], ids=["fragmented", "plain"])
def test_mp4_has_one_h264_and_one_aac_stream_and_decodes_through_speaker_switches(
    tmp_path: Path, camera: VideoClip, screen: VideoClip, fragmented: bool
) -> None:
    video = speaker_switches(camera, screen, camera)
    out = tmp_path / "recording.mp4"
    record(out, video, tone_packets(0, 6000), end_ms=6000, fragmented=fragmented)

    with av.open(str(out)) as container:
        kinds = [(s.type, s.codec_context.name) for s in container.streams]
    assert kinds == [("video", "h264"), ("audio", "aac")]
    frames, errors = decode_video(out)
    assert errors == []
    assert len(frames) == len(video)
    sizes = [(f.width, f.height) for f in frames]
    assert sizes == [(640, 360)] * 50 + [(1280, 720)] * 50 + [(640, 360)] * 50


def test_decode_error_check_sees_a_switch_without_its_parameter_sets(
    tmp_path: Path, camera: VideoClip, screen: VideoClip
) -> None:
    """Positive control for the zero-errors check: drop the second speaker's SPS/PPS."""
    video = speaker_switches(camera, screen)
    switch = video[50]
    stripped = b"".join(
        b"\x00\x00\x00\x01" + nal for nal in annexb_nal_units(switch.data) if nal_type(nal) not in (7, 8)
    )
    video[50] = Frame(switch.timestamp_ms, stripped, True)
    out = tmp_path / "broken.mp4"
    rec = Mp4Recorder(out, ORIGIN, audio=False)
    rec.start()
    for f in video:
        rec.video_frame(f.timestamp_ms, f.data, keyframe=f.keyframe, has_parameter_sets=f.keyframe)
    rec.close(ORIGIN + 4000)
    frames, errors = decode_video(out)
    assert errors or len(frames) < len(video)


@pytest.mark.parametrize("fragmented", [True, False], ids=["fragmented", "plain"])
def test_video_nal_units_equal_the_h264_sent_in_order(
    tmp_path: Path, camera: VideoClip, screen: VideoClip, fragmented: bool
) -> None:
    video = speaker_switches(camera, screen, camera, start_ms=120)
    out = tmp_path / "recording.mp4"
    record(out, video, tone_packets(0, 6200), end_ms=6200, fragmented=fragmented)

    sent = [annexb_nal_units(f.data) for f in video]
    stored = [length_prefixed_nal_units(bytes(p)) for p in video_packets(out)]
    assert stored == sent  # same bytes, same order, sample for sample (SPS/PPS stay in-band)
    assert sum(nal_type(n) == 7 for au in stored for n in au) == 6  # one SPS per IDR: 2 GOPs x 3 segments
    with av.open(str(out)) as container:
        avcc = container.streams.video[0].codec_context.extradata
    first_sps, first_pps = sent[0][0], sent[0][1]
    assert (nal_type(first_sps), nal_type(first_pps)) == (7, 8)
    assert avcc is not None and avcc[0] == 1  # avcC built from the first speaker's own SPS/PPS
    assert first_sps in avcc and first_pps in avcc


@pytest.mark.parametrize("fragmented", [True, False], ids=["fragmented", "plain"])
def test_duration_matches_the_stream_within_one_frame(
    tmp_path: Path, camera: VideoClip, fragmented: bool
) -> None:
    video = speaker_switches(camera, camera, camera)  # 6 s of video
    end_ms = 6000 + 500  # the stream ended half a second after the last frame arrived
    out = tmp_path / "recording.mp4"
    record(out, video, tone_packets(0, 5000), end_ms=end_ms, fragmented=fragmented)

    packets = video_packets(out)
    last = packets[-1]
    assert last.pts is not None and last.duration is not None and last.time_base is not None
    video_end_ms = float((last.pts + last.duration) * last.time_base) * 1000
    assert abs(video_end_ms - end_ms) <= FRAME_MS
    first_s, samples = decode_audio(out)
    audio_end_ms = (first_s + len(samples) / SAMPLE_RATE) * 1000
    assert abs(audio_end_ms - end_ms) <= FRAME_MS
    with av.open(str(out)) as container:
        assert container.duration is not None
        # A fragmented file's edit list has no duration (it is written before the end is known),
        # so FFmpeg's demuxer reports the audio track with the AAC encoder's priming frame
        # (1024 samples = 64 ms) included; the decoded audio above skips it and ends on time.
        allowed = 1024 * 1000 / SAMPLE_RATE if fragmented else FRAME_MS
        assert abs(container.duration / 1000 - end_ms) <= allowed


def test_audio_gap_is_silence_at_its_place_and_video_gap_holds_the_previous_frame(
    tmp_path: Path, camera: VideoClip
) -> None:
    video = [
        f for f in speaker_switches(camera, camera, camera) if not 2000 <= f.timestamp_ms - ORIGIN < 3000
    ]
    audio = [(ts, pcm) for ts, pcm in tone_packets(0, 6000) if not 3000 <= ts - ORIGIN < 4000]
    out = tmp_path / "recording.mp4"
    record(out, video, audio, end_ms=6000, gaps=[("video", 2000, 1000), ("audio", 3000, 1000)])

    first_s, samples = decode_audio(out)
    times, rms = rms_per_window(samples, first_s)
    in_gap = (times >= 3.03) & (times < 3.97)  # leave the codec's transition windows out
    outside = ((times >= 0.1) & (times < 2.9)) | ((times >= 4.1) & (times < 5.9))
    assert rms[in_gap].max() < 0.005  # silence...
    assert rms[outside].min() > 0.15  # ...only there: the tone (0.3 peak, 0.21 RMS) elsewhere
    assert len(samples) / SAMPLE_RATE == pytest.approx(6.0, abs=0.07)  # the gap took its 1 s

    packets = video_packets(out)
    assert len(packets) == len(video)  # no invented frames
    held = next(
        p
        for p in packets
        if p.pts is not None and p.time_base is not None and p.pts * p.time_base == Fraction(1960, 1000)
    )
    assert held.duration is not None and held.time_base is not None
    assert held.duration * held.time_base == Fraction(1040, 1000)  # shown from 1.96 s until 3.00 s
    frames, errors = decode_video(out)
    assert errors == []
    assert [round(float(f.time) * 1000) for f in frames] == [f.timestamp_ms - ORIGIN for f in video]


def _beep_onsets_s(first_s: float, samples: np.ndarray, window: int = 80) -> list[float]:
    """Start times of the 1 kHz beeps: 5 ms windows whose 1 kHz amplitude crosses 0.4 of full
    scale (voices peak at 0.3, the beep is 0.8)."""
    n = len(samples) // window
    t = np.arange(window) / SAMPLE_RATE
    seg = samples[: n * window].reshape(n, window)
    amp = 2 * np.hypot(seg @ np.sin(2 * np.pi * 1000 * t), seg @ np.cos(2 * np.pi * 1000 * t)) / window
    loud = amp > 0.4
    return [first_s + i * window / SAMPLE_RATE for i in range(1, n) if loud[i] and not loud[i - 1]]


def test_av_offset_at_each_beep_and_flash_is_within_40_ms(tmp_path: Path) -> None:
    meeting = SyntheticMeeting(MeetingSpec(seed=5, participants=2, duration_s=12, video="360p", fps=25))
    out = tmp_path / "recording.mp4"
    rec = Mp4Recorder(out, ORIGIN, video_size=(640, 360))
    rec.start()
    for item in meeting.timeline(events=False, transcripts=False):
        if item.kind == "audio":
            assert isinstance(item.data, bytes)
            rec.audio_frame(ORIGIN + item.offset_ms, item.data)
        elif item.kind == "video":
            assert isinstance(item.data, bytes)
            rec.video_frame(
                ORIGIN + item.offset_ms, item.data, keyframe=item.keyframe, has_parameter_sets=item.keyframe
            )
    rec.close(ORIGIN + meeting.duration_ms)

    frames, errors = decode_video(out)
    assert errors == []
    flashes = [float(f.time) for f in frames if f.to_ndarray()[: f.height].mean() > 200]
    beeps = _beep_onsets_s(*decode_audio(out))
    instants = [ms / 1000 for ms in meeting.beep_instants_ms]
    assert len(instants) == 2
    assert len(flashes) == len(beeps) == len(instants)  # every mark found, nothing else
    for instant, flash, beep in zip(instants, flashes, beeps, strict=True):
        assert abs(flash - beep) <= 0.040
        assert abs(flash - instant) <= 0.040 and abs(beep - instant) <= 0.040  # on the meeting clock


@pytest.mark.parametrize("fragmented", [True, False], ids=["fragmented", "plain"])
def test_two_recordings_of_the_same_input_are_byte_identical(
    tmp_path: Path, camera: VideoClip, screen: VideoClip, fragmented: bool
) -> None:
    video = speaker_switches(camera, screen)
    first, second = tmp_path / "a.mp4", tmp_path / "b.mp4"
    record(first, video, tone_packets(0, 4000), end_ms=4000, fragmented=fragmented)
    record(second, video, tone_packets(0, 4000), end_ms=4000, fragmented=fragmented)
    blob = first.read_bytes()
    assert blob == second.read_bytes()
    assert b"Lavf" not in blob and b"Lavc" not in blob  # no muxer/encoder version strings


@pytest.mark.parametrize("fragmented", [True, False], ids=["fragmented", "plain"])
def test_recording_with_the_muxer_in_its_own_process_is_byte_identical_to_the_inline_one(
    tmp_path: Path, camera: VideoClip, screen: VideoClip, fragmented: bool
) -> None:
    video = [
        f for f in speaker_switches(camera, screen, camera) if not 2000 <= f.timestamp_ms - ORIGIN < 2600
    ]
    audio = [(ts, pcm) for ts, pcm in tone_packets(0, 6000) if not 3000 <= ts - ORIGIN < 3500]
    gaps = [("video", 2000, 600), ("audio", 3000, 500)]
    other, inline = tmp_path / "process.mp4", tmp_path / "inline.mp4"
    a = record(other, video, audio, end_ms=6000, gaps=gaps, fragmented=fragmented, process=True)
    b = record(inline, video, audio, end_ms=6000, gaps=gaps, fragmented=fragmented, process=False)
    assert a.close(ORIGIN + 6000).aac_packets == b.close(ORIGIN + 6000).aac_packets > 90
    assert other.read_bytes() == inline.read_bytes()


def _meeting_pcm(seconds: int) -> list[tuple[int, bytes]]:
    meeting = SyntheticMeeting(MeetingSpec(seed=11, duration_s=seconds, video=None, transcripts=False))
    items = meeting.timeline(events=False, transcripts=False)
    return [(ORIGIN + i.offset_ms, i.data) for i in items if i.kind == "audio" and isinstance(i.data, bytes)]


def _snr_db(sent: np.ndarray, decoded: np.ndarray) -> float:
    n = min(len(sent), len(decoded))
    noise = sent[:n] - decoded[:n]
    return float(10 * np.log10(np.sum(sent[:n] ** 2) / np.sum(noise**2)))


def test_constant_quality_aac_is_as_close_to_the_speech_as_the_48_kbit_encode(tmp_path: Path) -> None:
    """The default encode (constant quality, one pass a frame) against the former one (48 kbit/s
    ABR): the decoded speech carries no more noise, and the file is not larger."""
    audio = _meeting_pcm(10)
    sent = np.frombuffer(b"".join(pcm for _, pcm in audio), dtype="<i2") / 32768.0
    snr: dict[str, float] = {}
    size: dict[str, int] = {}
    for name, quality in (("vbr", DEFAULT_AAC_QUALITY), ("abr", None)):
        out = tmp_path / f"{name}.mp4"
        rec = Mp4Recorder(out, ORIGIN, video=False, aac_quality=quality)
        rec.start()
        for ts, pcm in audio:
            rec.audio_frame(ts, pcm)
        rec.close(ORIGIN + 10_000)
        first_s, decoded = decode_audio(out)
        assert first_s == 0.0
        snr[name], size[name] = _snr_db(sent, decoded), out.stat().st_size
    assert snr["abr"] > 25  # the measure works: a faithful encode scores high...
    assert snr["vbr"] >= snr["abr"] - 0.5  # ...and the faster one is as faithful
    assert size["vbr"] <= size["abr"] * 1.05
    assert size["vbr"] != size["abr"]  # really two encodes (the quality setting took effect)


def test_version_string_check_sees_an_mp4_written_without_bitexact(tmp_path: Path) -> None:
    """Positive control: this FFmpeg does write its versions when not told to be bit-exact."""
    out = tmp_path / "plain.mp4"
    with av.open(str(out), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=SAMPLE_RATE)
        stream.codec_context.layout = "mono"
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), dtype="<i2"), format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = 0
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    blob = out.read_bytes()
    assert b"Lavf" in blob and b"Lavc" in blob


def test_deskshare_only_recording_has_video_and_no_audio(tmp_path: Path, screen: VideoClip) -> None:
    video = speaker_switches(screen, start_ms=300)
    out = tmp_path / "deskshare.mp4"
    record(out, video, end_ms=2400, with_audio=False)
    with av.open(str(out)) as container:
        assert [s.type for s in container.streams] == ["video"]
    frames, errors = decode_video(out)
    assert errors == [] and len(frames) == 50
    assert round(float(frames[0].time) * 1000) == 300  # starts where the share started


def test_frames_before_the_origin_keep_every_access_unit_and_trim_audio(
    tmp_path: Path, camera: VideoClip
) -> None:
    video = speaker_switches(camera, start_ms=-200)  # the first 5 frames precede t = 0
    out = tmp_path / "recording.mp4"
    rec = record(out, video, tone_packets(-200, 2000), end_ms=2000)
    assert rec.video_timeline is not None and rec.audio_timeline is not None
    assert rec.video_timeline.counts.clamped_before_origin == 5
    assert rec.audio_timeline.counts.trimmed_samples == 200 * 16
    packets = video_packets(out)
    assert len(packets) == 50
    pts = [p.pts for p in packets if p.pts is not None]
    assert len(pts) == 50 and pts == sorted(set(pts)) and pts[0] >= 0  # strictly increasing, from 0
    first_s, samples = decode_audio(out)
    assert first_s == 0.0 and len(samples) / SAMPLE_RATE == pytest.approx(2.0, abs=0.07)


def test_recorder_lifecycle_is_explicit(tmp_path: Path, camera: VideoClip) -> None:
    rec = Mp4Recorder(tmp_path / "r.mp4", ORIGIN)
    with pytest.raises(RuntimeError, match="new"):
        rec.audio_frame(ORIGIN, b"\x00\x00")
    rec.start()
    with pytest.raises(MediaFrameError) as bad:
        rec.video_frame(ORIGIN, b"\x65\x88", keyframe=True, has_parameter_sets=True)
    assert bad.value.kind == "video" and "Annex-B" in bad.value.reason
    rec.video_frame(ORIGIN, camera.frames[0], keyframe=True, has_parameter_sets=True)
    stats = rec.close(ORIGIN + 1000)
    assert rec.close(ORIGIN + 5000) is stats  # idempotent
    assert rec.state is RecorderState.CLOSED
    with pytest.raises(RuntimeError, match="closed"):
        rec.video_frame(ORIGIN + 40, camera.frames[1], keyframe=False, has_parameter_sets=False)


def test_context_manager_aborts_an_unfinished_recording(tmp_path: Path) -> None:
    with pytest.raises(KeyError), Mp4Recorder(tmp_path / "r.mp4", ORIGIN) as rec:
        rec.audio_frame(ORIGIN, bytes(640))
        raise KeyError("the caller failed")
    assert rec.state is RecorderState.ABORTED
    rec.abort()  # idempotent
    assert rec.state is RecorderState.ABORTED
