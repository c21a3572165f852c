"""The media sink through the real broker: ordered records in, recordings checked by content."""

from __future__ import annotations

import dataclasses
import json
import wave
from pathlib import Path

import av
import numpy as np
import pytest

from emulator.clips import ClipParams, VideoClip, get_clip
from emulator.media import MeetingSpec, SyntheticMeeting
from rtmsflow.settings import Settings
from schemas.codec import Codec
from schemas.topics import AUDIO, VIDEO
from sinks.kinds import MEDIA_SINK
from sinks.media_timeline import SAMPLE_RATE
from tests.sinks.support import OrderedStream, from_meeting, produce, stream_dir, wait_for
from tests.sinks.test_mp4 import (
    _beep_onsets_s,
    annexb_nal_units,
    decode_audio,
    decode_video,
    length_prefixed_nal_units,
    video_packets,
)

pytestmark = pytest.mark.kafka
MEETING = "aB3+/xYz9Q==meeting"


def wav_samples(path: Path) -> bytes:
    with wave.open(str(path), "rb") as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2)
        return w.readframes(w.getnframes())


async def record_streams(
    settings: Settings, kafka_topics: dict[str, str], *streams: OrderedStream
) -> list[Path]:
    await produce(settings, streams)
    dirs = [stream_dir(settings, s) for s in streams]
    async with MEDIA_SINK.service(settings, "g-media"):
        await wait_for(lambda: all((d / "manifest.json").is_file() for d in dirs), 90, "the manifests")
    return dirs


async def test_meeting_with_a_pause_records_exact_wav_and_an_mp4_in_sync(
    settings: Settings, kafka_topics: dict[str, str]
) -> None:
    meeting = SyntheticMeeting(MeetingSpec(seed=5, participants=2, duration_s=12, video="360p", fps=25))
    stream = from_meeting(meeting, MEETING, "0a1b2c", pause=(5000, 6000))  # between the beeps (2.5 s, 7.5 s)
    (d,) = await record_streams(settings, kafka_topics, stream)

    # the WAV is the PCM sent, with exactly the pause's length of zeros where the gap record was
    samples = wav_samples(d / "audio.wav")
    assert samples == bytes(stream.pcm["audio.wav"])
    assert len(samples) == 12 * SAMPLE_RATE * 2
    pause = np.frombuffer(samples, "<i2")[5000 * 16 : 6000 * 16]
    assert not pause.any() and np.frombuffer(samples, "<i2")[4000 * 16 : 5000 * 16].any()

    mp4 = d / "recording.mp4"
    with av.open(str(mp4)) as container:
        assert [(s.type, s.codec_context.name) for s in container.streams] == [
            ("video", "h264"),
            ("audio", "aac"),
        ]
    frames, errors = decode_video(mp4)
    assert errors == [] and len(frames) == len(stream.video)
    stored = [length_prefixed_nal_units(bytes(p)) for p in video_packets(mp4)]
    assert stored == [annexb_nal_units(au) for au in stream.video]
    last = video_packets(mp4)[-1]
    assert last.pts is not None and last.duration is not None and last.time_base is not None
    assert abs(float((last.pts + last.duration) * last.time_base) * 1000 - 12_000) <= 40  # within one frame
    # the beep and the flash agree (<= 40 ms), outside the pause
    flashes = [float(f.time) for f in frames if f.to_ndarray()[: f.height].mean() > 200]
    first_s, audio = decode_audio(mp4)
    beeps = _beep_onsets_s(first_s, audio)
    assert len(flashes) == len(beeps) == 2
    for flash, beep in zip(flashes, beeps, strict=True):
        assert abs(flash - beep) <= 0.040
    # the held frame covers the pause: the last frame before it lasts until the first after it
    held = [p for p in video_packets(mp4) if p.duration is not None and p.time_base is not None
            and p.duration * p.time_base > 0.5]  # fmt: skip
    assert len(held) == 1 and held[0].pts is not None and held[0].time_base is not None
    assert float(held[0].pts * held[0].time_base) == pytest.approx(4.96)

    manifest = json.loads((d / "manifest.json").read_text())
    (summary,) = manifest["streams"]
    assert summary["ended"]["how"] == "marker" and summary["ended"]["matched"] is True
    assert {
        "start_ms": stream.origin_ms + 5000,
        "kind": "audio",
        "participant_id": 0,
        "duration_ms": 1000,
        "reason": "PAUSE",
    } in summary["gaps"]
    assert [f["name"] for f in manifest["files"]] == ["audio.wav", "recording.mp4"]


async def test_speaker_switches_deskshare_and_participant_tracks(
    settings: Settings, kafka_topics: dict[str, str]
) -> None:
    camera: VideoClip = get_clip(ClipParams("camera", "360p", 25, 50, gop=25, flash_index=None))
    screen: VideoClip = get_clip(ClipParams("screen", "720p", 25, 50, gop=25, flash_index=None))
    stream = OrderedStream(MEETING, "5e6f")
    offset = 0
    for speaker, clip in ((1, camera), (2, screen), (1, camera)):  # each switch: a new encoder, SPS/PPS
        for data, key in zip(clip.frames, clip.keyframes, strict=True):
            stream.frame("VIDEO", offset, data, key, (1280, 720), 25, (speaker, f"P{speaker}"))
            offset += 40
    for i, (data, key) in enumerate(zip(screen.frames, screen.keyframes, strict=True)):
        stream.frame("DESKSHARE", 1000 + 40 * i, data, key, (1280, 720), 25)
    tone = (3000 * np.sin(np.arange(320) / 3)).astype("<i2").tobytes()
    for at in range(0, 6000, 20):  # participant 1 talks first, participant 2 from 2 s to 4 s
        stream.audio(at, tone, (1, "P1") if at < 2000 or at >= 4000 else (2, "P2"))
    stream.end(6000)
    (d,) = await record_streams(settings, kafka_topics, stream)

    mp4 = d / "recording.mp4"
    frames, errors = decode_video(mp4)
    assert errors == []
    assert [(f.width, f.height) for f in frames] == [(640, 360)] * 50 + [(1280, 720)] * 50 + [(640, 360)] * 50
    assert [length_prefixed_nal_units(bytes(p)) for p in video_packets(mp4)] == [
        annexb_nal_units(a) for a in stream.video
    ]
    with av.open(str(mp4)) as container:
        assert [s.type for s in container.streams] == ["video", "audio"]  # silent AAC: no mixed lane

    share, share_errors = decode_video(d / "deskshare.mp4")
    assert share_errors == [] and len(share) == 50 and round(float(share[0].time) * 1000) == 1000
    with av.open(str(d / "deskshare.mp4")) as container:
        assert [s.type for s in container.streams] == ["video"]

    p1, p2 = wav_samples(d / "audio-1.wav"), wav_samples(d / "audio-2.wav")
    assert p1 == bytes(stream.pcm["audio-1.wav"]) and p2 == bytes(stream.pcm["audio-2.wav"])
    assert len(p1) == len(p2) == 6000 * 32  # one timeline: same length, sample for sample
    two = np.frombuffer(p2, "<i2")
    assert not two[: 2000 * 16].any() and two[2000 * 16 : 4000 * 16].any()  # silence until their first word
    assert not (d / "audio.wav").exists()
    manifest = json.loads((d / "manifest.json").read_text())
    assert manifest["streams"][0]["ended"]["matched"] is True
    assert [p["participant_id"] for p in manifest["participants"]] == [1, 2]


async def test_a_record_that_cannot_be_muxed_is_dead_lettered_and_the_stream_finalizes(
    settings: Settings, kafka_topics: dict[str, str]
) -> None:
    from tests.ingest.support import read_topic

    camera = get_clip(ClipParams("camera", "360p", 25, 50, gop=25, flash_index=None))
    stream = OrderedStream(MEETING, "bad0")
    for i, (data, key) in enumerate(zip(camera.frames, camera.keyframes, strict=True)):
        stream.frame("VIDEO", 40 * i, data if i != 10 else b"\x65\x88 not annex-b", key, (640, 360), 25)
    for at in range(0, 2000, 20):
        stream.audio(at, bytes(640) if at != 500 else bytes(641))  # an odd byte count: not L16
    stream.end(2000)
    (d,) = await record_streams(settings, kafka_topics, stream)

    letters = [v for _k, v, _p, _o in await read_topic(settings, kafka_topics["rtms.deadletter"])]
    # one dead letter per bad record (at least once: a stop during the flush's acks sends the
    # unacknowledged letters again, by design, rather than lose one)
    sources = {(v["error"], v["source"], v["source_offset"]) for v in letters}
    assert sorted(error for error, _, _ in sources) == ["MediaFrameError", "WavError"], sources
    assert {source for _, source, _ in sources} == {"rtms.video", "rtms.audio"}
    assert {v["stage"] for v in letters} == {"sinks"} and {v["meeting_uuid"] for v in letters} == {MEETING}
    frames, errors = decode_video(d / "recording.mp4")
    assert errors == [] and len(frames) == 49  # the one bad access unit is out, the rest decodes
    assert (d / "manifest.json").is_file()


def test_queued_video_rejected_while_audio_is_fed_is_dead_lettered_as_video(tmp_path: Path) -> None:
    """No broker: every video record arrives before any audio (the order that once crashed the
    sink), so the bad access unit is rejected while an audio record is being fed."""
    from sinks.kinds import MEDIA_SINK

    settings = dataclasses.replace(Settings(), data_dir=str(tmp_path))
    camera = get_clip(ClipParams("camera", "360p", 25, 50, gop=25, flash_index=None))
    stream = OrderedStream(MEETING, "bad1")
    for i, (data, key) in enumerate(zip(camera.frames, camera.keyframes, strict=True)):
        stream.frame("VIDEO", 40 * i, data if i != 10 else b"\x65\x88 not annex-b", key, (640, 360), 25)
    for at in range(0, 2000, 20):
        stream.audio(at, bytes(640))
    stream.end(2000)
    core = MEDIA_SINK.core(settings)
    codec = Codec(settings.schema_registry_url, settings.topic_prefix)
    for base in (VIDEO.name, AUDIO.name):  # all video first: it waits for the audio
        for offset, (value, headers) in enumerate(stream.records[base]):
            data = None if value is None else codec.encode(base, value)
            core.feed(base, 0, offset, MEETING.encode(), data, headers)
    assert [(d["source"], d["error"], d["source_offset"]) for d in core.dead_letters] == [
        ("rtms.video", "MediaFrameError", 10)
    ]
    assert codec.decode(VIDEO.name, core.dead_letters[0]["payload"])["seq"] == 10  # the video record itself
    assert [f.how for f in core.finalized] == ["marker"]
    frames, errors = decode_video(stream_dir(settings, stream) / "recording.mp4")
    assert errors == [] and len(frames) == 49


def test_video_waiting_for_audio_is_tallied_per_partition_for_the_back_pressure(tmp_path: Path) -> None:
    """Video held until its audio arrives is what the sink pauses a partition for: the tally of all
    partitions in one pass equals each partition's own sum, and falls to nothing once the audio came."""

    settings = dataclasses.replace(Settings(), data_dir=str(tmp_path))
    camera = get_clip(ClipParams("camera", "360p", 25, 50, gop=25, flash_index=None))
    core = MEDIA_SINK.core(settings)
    codec = Codec(settings.schema_registry_url, settings.topic_prefix)
    streams = {0: OrderedStream("m0==", "s0"), 3: OrderedStream("m3==", "s3"), 5: OrderedStream("m5==", "s5")}

    def feed(partition: int, stream: OrderedStream, topic: str) -> None:
        key = stream.meeting_uuid.encode()
        for offset, (value, headers) in enumerate(stream.records[topic]):
            core.feed(topic, partition, offset, key, codec.encode(topic, value), headers)

    for partition, stream in streams.items():
        frames = camera.frames[: 10 + partition]  # a different amount held per partition
        for i, (data, key) in enumerate(zip(frames, camera.keyframes, strict=False)):
            stream.frame("VIDEO", 40 * i, data, key, (640, 360), 25)
        for at in range(0, 40 * len(frames), 20):
            stream.audio(at, bytes(640))
        feed(partition, stream, VIDEO.name)
    held = core.buffered_by_partition()
    assert set(held) == {0, 3, 5} and all(n > 0 for n in held.values())
    each = {
        p: sum(e.files.buffered_bytes() for e in core.open.values() if e.partition == p) for p in (0, 3, 5)
    }
    assert held == each
    assert held[5] > held[0]  # more frames waiting
    for partition, stream in streams.items():  # the audio comes: the video can be written
        feed(partition, stream, AUDIO.name)
    assert core.buffered_by_partition() == {0: 0, 3: 0, 5: 0}
