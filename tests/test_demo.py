"""The README's main job (`rtmsflow demo`, what `scripts/run` runs) as a user runs it: every stage a
separate process under the supervisor, one emulated meeting, and the files it became."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import wave
from pathlib import Path

import av
import pytest
from s3_support import BucketView

from rtmsflow.settings import Settings

pytestmark = pytest.mark.kafka

TXT_LINE = re.compile(r"^\[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\] [^:]+: .+$")


def test_demo_turns_a_meeting_into_recordings_and_transcripts(
    settings: Settings, settings_env: dict[str, str], kafka_topics: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    run = subprocess.run(
        [sys.executable, "-m", "rtmsflow.cli", "demo", "--participants", "2", "--duration", "4",
         "--video-resolution", "360p", "--speed", "2", "--out", str(out)],
        env=settings_env, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    (stream_dir,) = {p.parent for p in (out / "data").glob("*/*/*/manifest.json")}
    files = {p.name for p in stream_dir.iterdir()}
    expected = {"recording.mp4", "audio.wav", "transcript.txt", "transcript.vtt", "transcript.srt"}
    assert expected <= files, files
    assert str(stream_dir) in run.stdout and "recording.mp4" in run.stdout
    # and what they hold, from the manifests
    assert "media: " in run.stdout and f"{4 * 50} audio" in run.stdout and f"{4 * 25} video" in run.stdout
    assert "finalized by marker" in run.stdout

    manifest = json.loads((stream_dir / "manifest.json").read_text())
    (stream,) = manifest["streams"]
    assert stream["ended"]["how"] == "marker" and stream["ended"]["matched"] is True
    assert stream["frame_counts"]["AUDIO"] == 4 * 50  # 4 s of mixed audio, a 20 ms packet a tick
    assert stream["frame_counts"]["VIDEO"] == 4 * 25  # the worker asks for 25 fps

    with wave.open(str(stream_dir / "audio.wav")) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (16000, 1, 2)
        # 4 s of PCM plus the silence from the started webhook (t = 0) to the first packet
        assert 4 * 16000 <= wav.getnframes() < 6 * 16000
    with av.open(str(stream_dir / "recording.mp4")) as mp4:
        assert sorted(s.codec_context.name for s in mp4.streams) == ["aac", "h264"]
        assert sum(1 for _ in mp4.decode(video=0)) == 4 * 25
    lines = (stream_dir / "transcript.txt").read_text().splitlines()
    assert lines and all(TXT_LINE.match(line) for line in lines), lines


def test_the_demo_writes_to_a_bucket_with_one_setting(
    settings: Settings,
    settings_env: dict[str, str],
    kafka_topics: dict[str, str],
    s3_target: BucketView,
    tmp_path: Path,
) -> None:
    """README: `RTMSFLOW_DATA_DIR=s3://... RTMSFLOW_S3_ENDPOINT=... scripts/run`: the same files, as
    objects of the bucket, and none on disk."""
    out = tmp_path / "out"
    env = {**settings_env, **s3_target.server.env(s3_target.settings.data_dir),
           "RTMSFLOW_SPOOL_DIR": s3_target.settings.spool_dir}  # fmt: skip
    run = subprocess.run(
        [sys.executable, "-m", "rtmsflow.cli", "demo", "--participants", "2", "--duration", "4",
         "--video-resolution", "360p", "--speed", "2", "--out", str(out)],
        env=env, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    objects = s3_target.objects()
    (stream,) = {k.rsplit("/", 1)[0] for k in objects if k.endswith("/manifest.json")}
    names = {k.rsplit("/", 1)[1] for k in objects if k.startswith(stream + "/")}
    assert {
        "recording.mp4",
        "audio.wav",
        "transcript.txt",
        "manifest.json",
        "transcript.manifest.json",
    } <= names
    assert f"{s3_target.settings.data_dir}/{stream}/" in run.stdout and "recording.mp4" in run.stdout
    assert "finalized by marker" in run.stdout
    manifest = json.loads(s3_target.read(f"{stream}/manifest.json"))
    sizes = {f["name"]: f["size"] for f in manifest["files"]}
    assert sizes["recording.mp4"] == objects[f"{stream}/recording.mp4"] > 0
    assert not (out / "data").exists()  # nothing written to the local data dir
