"""Issue 9's done-when behind the real processors: what the files of a real pipeline hold.

One emulated meeting (3 participants; 720p H.264 at 25 fps, what the worker asks for by default,
with two active-speaker switches; mixed audio with the sync beep; the flash frame; transcripts)
goes through every stage as its own process at 4x real time; the files the sinks wrote are then
compared with what ingest received from the emulator (the raw topics): the same PCM, the same NAL
units, the beep on the flash, the script's words. The same stack then plays the meeting again with
the worker asking for per-participant audio: one WAV per participant, each holding exactly that
participant's PCM at its stream time and silence elsewhere.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import re
import uuid
import wave
from collections.abc import AsyncIterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
import srt
import webvtt

from emulator.conversation import make_participants
from emulator.media import MeetingSpec, SyntheticMeeting
from tests.system.pipeline import (
    MeetingRun,
    PipelineStack,
    annexb_nal_units,
    avcc_nal_units,
    beep_onset_s,
    decode_packets,
    nal_type,
    pipeline_stack,
)

pytestmark = pytest.mark.kafka

SEED = 48  # speakers 0 -> 2 (2.12 s) -> 1 (4.32 s) in a 7 s meeting: two switches
DURATION_S = 7
PARTICIPANTS = 3
SPEED = 4


# One stack for the whole module (each test checks one file's content): it takes ~20 s to start
# and stop, so it gets topics of its own (`pipeline_stack`) instead of the per-test fixtures'.
@pytest.fixture(scope="module")
async def stack(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[PipelineStack]:
    work = tmp_path_factory.mktemp("pipeline-files")
    async with pipeline_stack(kafka_bootstrap, work, 4) as running:
        yield running


MEETING_ARGS = ["--participants", str(PARTICIPANTS), "--duration", str(DURATION_S), "--seed", str(SEED),
                "--speed", str(SPEED)]  # fmt: skip


@pytest.fixture(scope="module")
async def meeting(stack: PipelineStack) -> MeetingRun:
    """The meeting with mixed audio (the worker's default): what recording.mp4 carries."""
    return await stack.play(MEETING_ARGS, f"files-{uuid.uuid4().hex[:8]}==")


PREROLL_MS = 3000


@pytest.fixture(scope="module")
async def preroll_meeting(stack: PipelineStack, meeting: MeetingRun) -> MeetingRun:
    """The same meeting as Zoom delivers it after buffering: the first 3 s of media stamped before
    the started webhook's `event_ts` and sent at once on connect, and no first-packet event (t = 0
    then comes from the earliest media)."""
    args = [*MEETING_ARGS, "--preroll-ms", str(PREROLL_MS), "--no-first-packet-event"]
    return await stack.play(args, f"preroll-{uuid.uuid4().hex[:8]}==")


def test_preroll_media_is_stamped_before_the_webhook_and_t0_is_the_media_clock(
    preroll_meeting: MeetingRun, meeting: MeetingRun
) -> None:
    for run in (meeting, preroll_meeting):
        (started,) = [v for v in run.raw["rtms.raw.events"] if v["name"] == "rtms_started"]
        assert run.stream_started_ms == media_base_ms(run)  # t = 0: the first media, not the webhook
        if run is preroll_meeting:  # the case: media stamped before the webhook's time (by 3 s less
            # the time ingest took to connect, which a loaded machine stretches)
            before_webhook = [
                v for v in run.raw["rtms.raw.audio"] if v["timestamp_ms"] < started["timestamp_ms"]
            ]
            assert before_webhook and media_base_ms(run) < started["timestamp_ms"], started
            assert not [v for v in run.raw["rtms.raw.events"] if v["name"] == "first_packet"]
        else:  # control: the first-packet event is t = 0, and the webhook came before the media
            (first_packet,) = [v for v in run.raw["rtms.raw.events"] if v["name"] == "first_packet"]
            assert first_packet["timestamp_ms"] == run.stream_started_ms > started["timestamp_ms"]


BOTH = pytest.mark.parametrize("which", ["meeting", "preroll_meeting"])


@pytest.fixture(scope="module")
async def multi_meeting(stack: PipelineStack, meeting: MeetingRun) -> MeetingRun:
    """The same meeting with per-participant audio: RTMS sends either the mixed stream or one per
    participant, so the worker is restarted asking for the latter (after `meeting` has played)."""
    await stack.restart_worker({"RTMSFLOW_RTMS_AUDIO_MULTI": "1"})
    return await stack.play(MEETING_ARGS, f"multi-{uuid.uuid4().hex[:8]}==")


# --- what ingest received, and the emulator's script ------------------------------------------------------


def audio_frames(run: MeetingRun) -> list[dict[str, Any]]:
    """The raw mixed-audio frames in timestamp order (the order the processors restore)."""
    return sorted(run.raw["rtms.raw.audio"], key=lambda v: v["timestamp_ms"])


def video_frames(run: MeetingRun) -> list[dict[str, Any]]:
    return sorted(run.raw["rtms.raw.video"], key=lambda v: v["timestamp_ms"])


def media_base_ms(run: MeetingRun) -> int:
    """The RTMS timestamp of the emulator's media time 0: its first audio packet (mixed audio is
    sent every 20 ms from 0 on, silence included)."""
    return min(v["timestamp_ms"] for v in run.raw["rtms.raw.audio"])


def script(run: MeetingRun) -> SyntheticMeeting:
    """The meeting the emulator played, at the frame rate the worker asked for."""
    fps = video_frames(run)[0]["media"]["fps"]
    return SyntheticMeeting(MeetingSpec(seed=SEED, participants=PARTICIPANTS, duration_s=DURATION_S, fps=fps))


def stream_end_ms(run: MeetingRun) -> int:
    """Where the stream's media ends, in ms from t = 0: the end of the last audio packet or of the
    last video frame (one frame interval), whichever is later."""
    audio = max(v["timestamp_ms"] + len(v["payload"]) // 32 for v in run.raw["rtms.raw.audio"])
    video = max(v["timestamp_ms"] + 1000 // v["media"]["fps"] for v in run.raw["rtms.raw.video"])
    return max(audio, video) - run.stream_started_ms


def media_manifest(run: MeetingRun) -> dict[str, Any]:
    return dict(json.loads((run.stream_dir / "manifest.json").read_text()))


def video_samples(path: Path) -> tuple[list[av.Packet], bytes, Fraction]:
    """The MP4's video packets in file order, its avcC and the track's time base."""
    with av.open(str(path)) as mp4:
        stream = mp4.streams.video[0]
        packets = [p for p in mp4.demux(stream) if p.size]
        return packets, bytes(stream.codec_context.extradata or b""), Fraction(stream.time_base)


def avcc_parameter_sets(avcc: bytes) -> list[bytes]:
    """The SPS and PPS NAL units of an AVCDecoderConfigurationRecord (ISO 14496-15 5.3.3.1)."""
    assert avcc[0] == 1, "not an avcC record"
    out, pos = [], 5
    for mask in (0x1F, 0xFF):  # numOfSequenceParameterSets (5 bits), numOfPictureParameterSets
        count = avcc[pos] & mask
        pos += 1
        for _ in range(count):
            n = int.from_bytes(avcc[pos : pos + 2], "big")
            out.append(avcc[pos + 2 : pos + 2 + n])
            pos += 2 + n
    return out


# --- WAV ------------------------------------------------------------------------------------------------------


@BOTH
def test_wav_is_the_pcm_ingest_received_with_silence_exactly_at_the_manifest_gaps(
    which: str, request: pytest.FixtureRequest
) -> None:
    meeting: MeetingRun = request.getfixturevalue(which)
    origin = meeting.stream_started_ms
    listed = media_manifest(meeting)["streams"][0]["gaps"]
    gaps = sorted((g["start_ms"] - origin, g["duration_ms"]) for g in listed if g["kind"] == "audio")
    # t = 0 is the media clock's: the recording opens with the first packet, no connection silence
    assert not gaps or gaps[0][0] > 0, gaps
    expected = bytearray()
    for frame in audio_frames(meeting):
        while gaps and gaps[0][0] + gaps[0][1] <= frame["timestamp_ms"] - origin:
            start, length = gaps.pop(0)
            assert len(expected) == start * 32, f"the gap at {start} ms is not where the audio before it ends"
            expected += bytes(length * 32)
        expected += frame["payload"]
    for start, length in gaps:  # trailing
        assert len(expected) == start * 32
        expected += bytes(length * 32)
    # the tracks end together: where the video lane ends after the audio's trailing gap (by less
    # than a frame), the sink pads the audio with silence (counted in audio_tracks' silence_samples)
    stream = media_manifest(meeting)["streams"][0]
    assert stream["start_ms"] == origin
    padding = (stream["stop_ms"] - origin) * 32 - len(expected)
    fps = video_frames(meeting)[0]["media"]["fps"]
    assert 0 <= padding <= (1000 // fps) * 32, padding
    expected += bytes(padding)
    silence = sum(g["duration_ms"] for g in listed if g["kind"] == "audio") * 16 + padding // 2
    assert media_manifest(meeting)["audio_tracks"]["audio.wav"]["silence_samples"] == silence

    with wave.open(str(meeting.stream_dir / "audio.wav")) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (16000, 1, 2)
        pcm = wav.readframes(wav.getnframes())
    assert len(pcm) == len(expected)
    assert pcm == bytes(expected)


# --- MP4 ------------------------------------------------------------------------------------------------------


def test_mp4_has_exactly_one_h264_and_one_aac_stream(meeting: MeetingRun) -> None:
    with av.open(str(meeting.stream_dir / "recording.mp4")) as mp4:
        assert [(s.type, s.codec_context.name) for s in mp4.streams] in (
            [("video", "h264"), ("audio", "aac")],
            [("audio", "aac"), ("video", "h264")],
        )


@BOTH
def test_mp4_video_samples_are_the_raw_nal_units_in_order_at_their_times(
    which: str, request: pytest.FixtureRequest
) -> None:
    """Same bytes, same order, nothing normalised: the muxer only turns Annex-B start codes into
    4-byte lengths and keeps every NAL unit in band (SPS/PPS before each IDR included); it also
    copies the first access unit's SPS/PPS into the avcC, which is checked on its own."""
    meeting: MeetingRun = request.getfixturevalue(which)
    frames = video_frames(meeting)
    assert len({v["participant_id"] for v in frames}) == PARTICIPANTS  # the switches are in the data
    packets, avcc, time_base = video_samples(meeting.stream_dir / "recording.mp4")

    assert [avcc_nal_units(bytes(p)) for p in packets] == [annexb_nal_units(v["payload"]) for v in frames]
    assert [p.pts * time_base * 1000 for p in packets] == [
        v["timestamp_ms"] - meeting.stream_started_ms for v in frames
    ]
    assert [p.is_keyframe for p in packets] == [v["keyframe"] for v in frames]
    first = annexb_nal_units(frames[0]["payload"])
    assert avcc_parameter_sets(avcc) == [n for n in first if nal_type(n) == 7] + [
        n for n in first if nal_type(n) == 8
    ]


def test_mp4_video_decodes_every_frame_without_an_error_across_speaker_switches(meeting: MeetingRun) -> None:
    packets, avcc, _ = video_samples(meeting.stream_dir / "recording.mp4")
    samples = [bytes(p) for p in packets]
    switches = [
        i
        for i, (a, b) in enumerate(itertools.pairwise(video_frames(meeting)))
        if a["participant_id"] != b["participant_id"]
    ]
    assert len(switches) == PARTICIPANTS - 1, switches

    pictures, errors = decode_packets("h264", samples, avcc)
    assert errors == []
    assert pictures == len(samples) == len(meeting.raw["rtms.raw.video"])

    # the control: the same decoding sees damage in the middle of a picture right after a switch
    damaged = list(samples)
    hit = bytearray(damaged[switches[0] + 2])
    hit[len(hit) // 2 : len(hit) // 2 + 64] = bytes(64)
    damaged[switches[0] + 2] = bytes(hit)
    assert decode_packets("h264", damaged, avcc)[1] != []


def test_mp4_audio_decodes_without_an_error(meeting: MeetingRun) -> None:
    with av.open(str(meeting.stream_dir / "recording.mp4")) as mp4:
        stream = mp4.streams.audio[0]
        packets = [bytes(p) for p in mp4.demux(stream) if p.size]
        config = bytes(stream.codec_context.extradata or b"")
    frames, errors = decode_packets("aac", packets, config)
    assert errors == []
    assert frames == len(packets)
    damaged = [*packets[:10], packets[10][:3] + bytes(len(packets[10]) - 3), *packets[11:]]
    assert decode_packets("aac", damaged, config)[1] != []


def test_mp4_tracks_last_as_long_as_the_stream_within_one_frame(meeting: MeetingRun) -> None:
    """Each track's end, from its own timestamps (the audio's first packet is the AAC encoder's
    priming at pts -1024: an edit list skips it), is the stream's end within a video frame.

    FFmpeg's demuxer reports the fragmented file's overall duration 64 ms (the priming) longer
    than its tracks (see sinks/mp4_recorder.py); that figure is not what is checked here."""
    end_ms = stream_end_ms(meeting)
    frame_ms = 1000 // video_frames(meeting)[0]["media"]["fps"]
    assert abs(media_manifest(meeting)["streams"][0]["duration_ms"] - end_ms) <= frame_ms
    with av.open(str(meeting.stream_dir / "recording.mp4")) as mp4:
        tracks = {s.index: (s.type, Fraction(s.time_base)) for s in mp4.streams}
        packets: dict[int, list[av.Packet]] = {i: [] for i in tracks}
        for p in mp4.demux():
            if p.size:
                packets[p.stream.index].append(p)
    for index, (kind, time_base) in tracks.items():
        first, last = packets[index][0], packets[index][-1]
        track_end_ms = (last.pts + last.duration) * time_base * 1000
        assert abs(track_end_ms - end_ms) <= frame_ms, (kind, float(track_end_ms), end_ms)
        if kind == "audio":
            assert first.pts == -1024  # priming, cut by the edit list: the audio starts at t = 0


@BOTH
def test_beep_and_flash_are_at_most_40_ms_apart_in_the_decoded_mp4(
    which: str, request: pytest.FixtureRequest
) -> None:
    meeting: MeetingRun = request.getfixturevalue(which)
    path = meeting.stream_dir / "recording.mp4"
    with av.open(str(path)) as mp4:
        brightness = [(float(f.time), float(f.to_ndarray()[: f.height].mean())) for f in mp4.decode(video=0)]
    with av.open(str(path)) as mp4:
        chunks = list(mp4.decode(audio=0))
        pcm = np.concatenate([f.to_ndarray()[0] for f in chunks])
        audio_start = float(chunks[0].time)
    flashes = [t for t, luma in brightness if luma > 200]
    assert len(flashes) == 1, sorted(luma for _, luma in brightness)[-3:]
    beep = audio_start + beep_onset_s(pcm, 16000)
    assert abs(beep - flashes[0]) <= 0.040, (beep, flashes[0])

    # the controls: what was detected is the emulator's marked instant, and the WAV's beep (PCM
    # as received) starts there too
    (instant,) = [i for i in script(meeting).beep_instants_ms]
    marked_s = (media_base_ms(meeting) + instant - meeting.stream_started_ms) / 1000
    assert flashes[0] == pytest.approx(marked_s, abs=0.001)
    with wave.open(str(meeting.stream_dir / "audio.wav")) as wav:
        samples = np.frombuffer(wav.readframes(wav.getnframes()), "<i2").astype(np.float32) / 32767
    assert beep_onset_s(samples, 16000) == pytest.approx(marked_s, abs=0.005)


# --- transcripts ----------------------------------------------------------------------------------------------

TXT_LINE = re.compile(r"^\[(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)\] ([^:\n]+): (.+)$")


def expected_txt(run: MeetingRun) -> list[str]:
    """The script's turns as TXT lines: each at the emulator's media base + the turn's start."""
    people = make_participants(SEED, PARTICIPANTS)
    base = media_base_ms(run)
    lines = []
    for turn in script(run).utterances():
        at = dt.datetime.fromtimestamp((base + turn.start_ms) / 1000, dt.UTC)
        stamp = at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{(base + turn.start_ms) % 1000:03d}Z"
        lines.append(f"[{stamp}] {people[turn.speaker].user_name}: {turn.text}")
    return lines


def test_txt_lines_have_the_seed_format_and_the_script_words(meeting: MeetingRun) -> None:
    lines = (meeting.stream_dir / "transcript.txt").read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(list(script(meeting).utterances())) == PARTICIPANTS
    assert all(TXT_LINE.match(line) for line in lines), lines
    assert lines == expected_txt(meeting)
    # the pieces ingest received are the script too (one final piece per turn)
    pieces = sorted(meeting.raw["rtms.raw.transcript"], key=lambda v: v["start_time_ms"])
    assert [v["text"] for v in pieces] == [t.text for t in script(meeting).utterances()]
    # the format regex rejects what it must (the control)
    assert not TXT_LINE.match("[2025-05-15 13:42:21.000Z] John Doe: Hello everyone")
    assert TXT_LINE.match("[2025-05-15T13:42:21.000Z] John Doe: Hello everyone")


def vtt_ms(stamp: str) -> int:
    """`HH:MM:SS.mmm` in ms (webvtt-py gives cue times as these strings)."""
    hours, minutes, seconds = stamp.split(":")
    return (int(hours) * 3600 + int(minutes) * 60) * 1000 + round(float(seconds) * 1000)


@BOTH
def test_vtt_and_srt_parse_with_one_cue_per_jsonl_line(which: str, request: pytest.FixtureRequest) -> None:
    meeting: MeetingRun = request.getfixturevalue(which)
    d = meeting.stream_dir
    utterances = [
        json.loads(line) for line in (d / "transcript.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    people = make_participants(SEED, PARTICIPANTS)
    turns = list(script(meeting).utterances())
    offsets = [media_base_ms(meeting) + t.start_ms - meeting.stream_started_ms for t in turns]

    captions = webvtt.read(str(d / "transcript.vtt"))
    assert len(captions) == len(utterances) == len(turns)
    assert [c.voice for c in captions] == [people[t.speaker].user_name for t in turns]
    assert [c.text for c in captions] == [t.text for t in turns]
    assert [vtt_ms(c.start) for c in captions] == offsets

    subtitles = list(srt.parse((d / "transcript.srt").read_text(encoding="utf-8")))
    assert len(subtitles) == len(utterances)
    assert [s.content for s in subtitles] == [f"{people[t.speaker].user_name}: {t.text}" for t in turns]
    assert [round(s.start.total_seconds() * 1000) for s in subtitles] == offsets


# --- per-participant audio ------------------------------------------------------------------------------------
#
# `multi_meeting` is the same script with the worker asking RTMS for one audio stream per participant:
# Zoom sends a participant's packets only while they speak (the host's also while the sync beep
# plays), and the media sink writes one `audio-<participant id>.wav` per participant on the stream's
# timeline, silence wherever that participant sent nothing.


def frames_by_participant(run: MeetingRun) -> dict[int, list[dict[str, Any]]]:
    """The raw per-participant audio frames, by participant id, each list in timestamp order."""
    out: dict[int, list[dict[str, Any]]] = {}
    for v in sorted(run.raw["rtms.raw.audio"], key=lambda v: (v["timestamp_ms"], v["participant_id"])):
        out.setdefault(v["participant_id"], []).append(v)
    return out


def video_base_ms(run: MeetingRun) -> int:
    """The RTMS timestamp of the emulator's media time 0 when the audio does not start there (a
    participant's stream starts at their first word): the first camera frame, which is at 0."""
    return min(v["timestamp_ms"] for v in run.raw["rtms.raw.video"])


def placed_pcm(frames: list[dict[str, Any]], origin_ms: int, total_bytes: int, shift_ms: int = 0) -> bytes:
    """A track of `total_bytes` with each frame's payload at its stream time (timestamp - origin,
    plus `shift_ms`; 32 bytes a ms) and zeros everywhere else; frames must not overlap."""
    track = bytearray(total_bytes)
    end = 0
    for f in frames:
        at = (f["timestamp_ms"] + shift_ms - origin_ms) * 32
        assert at >= end, f"frame at {f['timestamp_ms']} overlaps the one before it"
        end = at + len(f["payload"])
        assert end <= total_bytes, f"frame at {f['timestamp_ms']} ends past the stream"
        track[at:end] = f["payload"]
    return bytes(track)


def silent_stretches(frames: list[dict[str, Any]], origin_ms: int, end_ms: int) -> int:
    """How many stretches of [origin_ms, end_ms) a participant's frames leave empty."""
    count, cursor = 0, origin_ms
    for f in frames:
        count += f["timestamp_ms"] > cursor
        cursor = f["timestamp_ms"] + len(f["payload"]) // 32
    return count + (end_ms > cursor)


def read_wav(path: Path) -> bytes:
    with wave.open(str(path)) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (16000, 1, 2)
        return wav.readframes(wav.getnframes())


def test_multi_audio_is_what_the_script_has_each_participant_say(multi_meeting: MeetingRun) -> None:
    """What ingest received in multi mode is the emulator's per-participant packets, at their
    media times: so the WAVs below are checked against each participant's own speech."""
    raw = multi_meeting.raw["rtms.raw.audio"]
    assert raw and all(v["media"]["mixed"] is False for v in raw)
    base = video_base_ms(multi_meeting)
    received = sorted((v["timestamp_ms"] - base, v["participant_id"], v["payload"]) for v in raw)
    sent = sorted(
        (item.offset_ms, item.user_id, item.data)
        for item in script(multi_meeting).timeline(
            audio_mode="multi", video=False, transcripts=False, events=False
        )
    )
    assert received == sent
    people = make_participants(SEED, PARTICIPANTS)
    assert set(frames_by_participant(multi_meeting)) == {p.user_id for p in people}  # all three speak


def test_multi_audio_files_are_one_wav_per_participant_listed_in_the_manifest(
    multi_meeting: MeetingRun,
) -> None:
    frames = frames_by_participant(multi_meeting)
    names = {f"audio-{pid}.wav" for pid in frames}
    d = multi_meeting.stream_dir
    assert {p.name for p in d.glob("audio*.wav")} == names  # no mixed audio.wav: RTMS sent none
    manifest = media_manifest(multi_meeting)
    assert names <= {f["name"] for f in manifest["files"]}
    people = {p.user_id: p.user_name for p in make_participants(SEED, PARTICIPANTS)}
    assert {p["participant_id"]: p["name"] for p in manifest["participants"]} == people
    tracks = manifest["audio_tracks"]
    assert set(tracks) == names
    for pid, fs in frames.items():
        assert tracks[f"audio-{pid}.wav"]["pcm_samples"] == sum(len(f["payload"]) for f in fs) // 2
    # every track is the stream's length: the files line up sample for sample
    duration_ms = manifest["streams"][0]["duration_ms"]
    assert {t["pcm_samples"] + t["silence_samples"] for t in tracks.values()} == {duration_ms * 16}
    # a participant's silences are counted, not listed: one SILENT gap record per stretch without
    # their packets (before their first, between turns, after their last up to the audio's end)
    assert [g for g in manifest["streams"][0]["gaps"] if g["kind"] == "audio"] == []
    audio_end = max(v["timestamp_ms"] for v in multi_meeting.raw["rtms.raw.audio"]) + 20
    silences = sum(silent_stretches(fs, multi_meeting.stream_started_ms, audio_end) for fs in frames.values())
    assert silences >= 2 * len(frames)  # the script has everyone silent before and after their turn
    assert manifest["participant_silent_gaps"] == silences
    assert manifest["streams"][0]["frame_counts"]["AUDIO_GAP"] == silences


def test_participant_wavs_hold_exactly_their_pcm_at_its_stream_time_and_silence_elsewhere(
    multi_meeting: MeetingRun,
) -> None:
    origin = multi_meeting.stream_started_ms
    duration_ms = media_manifest(multi_meeting)["streams"][0]["duration_ms"]
    frame_ms = 1000 // video_frames(multi_meeting)[0]["media"]["fps"]
    assert abs(duration_ms - stream_end_ms(multi_meeting)) <= frame_ms
    frames = frames_by_participant(multi_meeting)
    files = {pid: read_wav(multi_meeting.stream_dir / f"audio-{pid}.wav") for pid in frames}
    for pid, fs in frames.items():
        pcm = files[pid]
        assert len(pcm) == duration_ms * 32, (pid, len(pcm) // 32, duration_ms)
        expected = placed_pcm(fs, origin, len(pcm))
        differ = next((i for i, (a, b) in enumerate(zip(pcm, expected, strict=True)) if a != b), None)
        assert differ is None, f"audio-{pid}.wav: first wrong byte {differ}"

    # the controls: the comparison tells a participant's track from another's, from the same
    # frames one packet late, and from the frames written back to back (stream time ignored)
    first, second, *_ = sorted(frames)
    total = len(files[first])
    assert files[first] != placed_pcm(frames[second], origin, total)
    assert files[first] != placed_pcm(frames[first], origin, total, shift_ms=20)
    back_to_back = b"".join(f["payload"] for f in frames[first])
    assert files[first] != back_to_back + bytes(total - len(back_to_back))
    # and the silences are real: each file is silent somewhere another participant speaks
    for pid, pcm in files.items():
        others = [f for q, fs in frames.items() if q != pid for f in fs]
        own = {f["timestamp_ms"] for f in frames[pid]}
        quiet = [f for f in others if f["timestamp_ms"] not in own]
        assert quiet, pid
        at = (quiet[0]["timestamp_ms"] - origin) * 32
        assert pcm[at : at + 640] == bytes(640) != quiet[0]["payload"]


def test_host_wav_beeps_on_the_flash_of_the_multi_meetings_mp4(multi_meeting: MeetingRun) -> None:
    """The sync beep is in the host's (participant 0's) stream in multi mode: their WAV beeps at
    the emulator's marked instant, where the recording's video shows the flash."""
    (instant,) = script(multi_meeting).beep_instants_ms
    marked_s = (video_base_ms(multi_meeting) + instant - multi_meeting.stream_started_ms) / 1000
    host = make_participants(SEED, PARTICIPANTS)[0].user_id
    pcm = read_wav(multi_meeting.stream_dir / f"audio-{host}.wav")
    samples = np.frombuffer(pcm, "<i2").astype(np.float32) / 32767
    assert beep_onset_s(samples, 16000) == pytest.approx(marked_s, abs=0.005)
    with av.open(str(multi_meeting.stream_dir / "recording.mp4")) as mp4:
        brightness = [(float(f.time), float(f.to_ndarray()[: f.height].mean())) for f in mp4.decode(video=0)]
    flashes = [t for t, luma in brightness if luma > 200]
    assert flashes == [pytest.approx(marked_s, abs=0.001)]
