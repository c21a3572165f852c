"""Individual video in the media sink without a broker: a `video-<participant>.mp4` per camera."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import pytest

from emulator.media import MeetingSpec, SyntheticMeeting
from sinks.layout import StreamLayout
from sinks.media_stream_files import MediaStreamFiles
from sinks.mp4_recorder import MediaFrameError
from sinks.participant_videos import MAX_PARTICIPANT_VIDEOS

T0 = 1_732_400_000_000
FPS = 25


@pytest.fixture(scope="module")
def clip() -> Any:
    return SyntheticMeeting(MeetingSpec(video="360p", fps=FPS, beep_every_ms=2000)).video_clip()


def frame(clip: Any, pid: int, i: int, mode: str = "INDIVIDUAL") -> dict[str, Any]:
    k = i % clip.frame_count
    return {"meeting_uuid": "m==", "rtms_stream_id": "s", "stream_kind": "VIDEO", "participant_id": pid,
            "participant_name": f"p{pid}", "timestamp_ms": T0 + i * 40, "offset_ms": i * 40, "seq": i,
            "payload": clip.frames[k], "keyframe": clip.keyframes[k], "has_parameter_sets": clip.keyframes[k],
            "gap": None, "media": {"codec": "H264", "width": 640, "height": 360, "fps": FPS, "mode": mode}}  # fmt: skip


def gap(pid: int, start_i: int, length_ms: int) -> dict[str, Any]:
    return {"meeting_uuid": "m==", "rtms_stream_id": "s", "stream_kind": "VIDEO", "participant_id": pid,
            "participant_name": f"p{pid}", "timestamp_ms": T0 + start_i * 40, "offset_ms": start_i * 40,
            "seq": start_i, "payload": b"", "keyframe": False, "has_parameter_sets": False,
            "gap": {"start_ms": T0 + start_i * 40, "length_ms": length_ms, "reason": "VIDEO_OFF"},
            "media": {"codec": "H264", "width": 640, "height": 360, "fps": FPS, "mode": "INDIVIDUAL"}}  # fmt: skip


def open_stream(tmp_path: Path) -> MediaStreamFiles:
    files = MediaStreamFiles(StreamLayout(tmp_path, "m==", "s", T0), fragmented=False)
    files.begin()
    return files


def samples(path: Path) -> tuple[list[int], list[bytes], int]:
    """An MP4 video track's pts in ms, its samples (AVCC) and the number of streams in the file."""
    with av.open(str(path)) as mp4:
        stream = mp4.streams.video[0]
        tb = Fraction(stream.time_base)
        packets = [p for p in mp4.demux(stream) if p.size]
        return [int(p.pts * tb * 1000) for p in packets], [bytes(p) for p in packets], len(mp4.streams)


def test_each_camera_gets_its_own_video_only_mp4_at_its_times_with_its_gap_listed(
    clip: Any, tmp_path: Path
) -> None:
    files = open_stream(tmp_path)
    for i in range(50):
        files.add("rtms.video", frame(clip, 5, i))
        if i < 10 or i >= 25:
            files.add("rtms.video", frame(clip, 7, i))
        elif i == 10:
            files.add("rtms.video", gap(7, 10, 600))
    assert files.open_files == 2
    done = files.finalize("idle_timeout")
    names = sorted(p.name for p in done.paths)
    assert names == ["manifest.json", "video-5.mp4", "video-7.mp4"]  # no active-speaker recording
    d = files.layout.stream_dir
    pts5, _, streams5 = samples(d / "video-5.mp4")
    pts7, data7, _ = samples(d / "video-7.mp4")
    assert streams5 == 1
    assert pts5 == [i * 40 for i in range(50)]
    assert pts7 == [i * 40 for i in (*range(10), *range(25, 50))]
    assert len({*data7}) > 1
    manifest = json.loads((d / "manifest.json").read_text())
    (stream,) = manifest["streams"]
    assert stream["gaps"] == [
        {
            "start_ms": T0 + 400,
            "kind": "video",
            "participant_id": 7,
            "duration_ms": 600,
            "reason": "VIDEO_OFF",
        }
    ]


def test_active_speaker_frames_still_go_to_the_recording(clip: Any, tmp_path: Path) -> None:
    """The control: the same frames as active-speaker video make recording.mp4, no camera file."""
    files = open_stream(tmp_path)
    for i in range(10):
        files.add("rtms.video", frame(clip, 5, i, mode="ACTIVE_SPEAKER"))
    names = sorted(p.name for p in files.finalize("idle_timeout").paths)
    assert names == ["manifest.json", "recording.mp4"]


@pytest.mark.parametrize("pid", [0, -3])
def test_a_camera_without_a_participant_is_rejected(clip: Any, tmp_path: Path, pid: int) -> None:
    files = open_stream(tmp_path)
    with pytest.raises(MediaFrameError):
        files.add("rtms.video", frame(clip, pid, 0))
    files.add("rtms.video", frame(clip, 5, 0))  # the control: a real participant's camera is taken
    assert files.open_files == 1
    files.abort()


def test_camera_files_are_bounded_per_stream(clip: Any, tmp_path: Path) -> None:
    files = open_stream(tmp_path)
    for pid in range(1, MAX_PARTICIPANT_VIDEOS + 1):
        files.add("rtms.video", frame(clip, pid, 0))
    assert files.open_files == MAX_PARTICIPANT_VIDEOS
    with pytest.raises(MediaFrameError):
        files.add("rtms.video", frame(clip, MAX_PARTICIPANT_VIDEOS + 1, 0))
    files.add("rtms.video", frame(clip, 1, 1))  # a camera already recorded goes on
    files.abort()
    assert not list(files.layout.stream_dir.glob("video-*.mp4"))  # nothing published
