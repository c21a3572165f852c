"""`rtmsflow.output`, what the demo's and `rtmsflow up`'s view and summary read the sinks' files
through: a directory and a bucket (the tests' real s3proxy) holding the same files read back alike."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import pytest

from rtmsflow.live import ManifestFollower
from rtmsflow.output import BucketOutput, DirectoryOutput, ManifestRef, open_output
from rtmsflow.settings import Settings
from tests.support.s3 import BucketView

STREAM = "2026-12-07/meeting-a/stream-1"
OLD = "2026-12-06/meeting-b/stream-2"


def manifest(meeting: str, *names: str) -> bytes:
    return json.dumps({"meeting_uuid": meeting, "files": [{"name": n} for n in names]}).encode()


# relative path -> bytes: two streams as the sinks leave them, with what is not a stream's file
FILES = {
    f"{STREAM}/audio.wav": b"RIFF" + bytes(96),
    f"{STREAM}/transcript.txt": b"[t] A: hi\n",
    f"{STREAM}/.recording.mp4.partial": b"unfinished",  # hidden: not shown
    f"{STREAM}/sub/manifest.json": manifest("nested"),  # too deep: not a stream's manifest
    f"{STREAM}/manifest.json": manifest("meeting-a", "audio.wav"),
    f"{STREAM}/transcript.manifest.json": manifest("meeting-a", "transcript.txt"),
    f"{OLD}/manifest.json": manifest("meeting-b", "audio.wav"),
}


def test_a_directory_and_a_bucket_are_read_back_alike(
    settings: Settings, s3_target: BucketView, tmp_path: Path
) -> None:
    directory = tmp_path / "data"
    for rel, data in FILES.items():
        (directory / rel).parent.mkdir(parents=True, exist_ok=True)
        (directory / rel).write_bytes(data)
        s3_target.bucket.put(s3_target.target.key(rel), data)
    local = open_output(dataclasses.replace(settings, data_dir=str(directory)))
    bucket = open_output(s3_target.settings)
    assert isinstance(local, DirectoryOutput) and isinstance(bucket, BucketOutput)
    assert bucket.where == s3_target.settings.data_dir == f"s3://{s3_target.target.bucket}/rec"

    for output, root in ((local, str(directory)), (bucket, s3_target.settings.data_dir)):
        refs = output.manifests(0)
        assert refs == [
            ManifestRef(f"{root}/{OLD}", "manifest.json"),
            ManifestRef(f"{root}/{STREAM}", "manifest.json"),
            ManifestRef(f"{root}/{STREAM}", "transcript.manifest.json"),
        ], output
        assert output.manifests(time.time() + 3600) == []  # none published after that
        assert output.read(refs[1])["meeting_uuid"] == "meeting-a"
        report = output.describe(0)
        assert list(report) == [f"{root}/{OLD}", f"{root}/{STREAM}"]
        entry = report[f"{root}/{STREAM}"]
        assert entry["meeting_uuid"] == "meeting-a"
        assert entry["files"] == {
            "audio.wav": 100,
            "manifest.json": len(FILES[f"{STREAM}/manifest.json"]),
            "transcript.manifest.json": len(FILES[f"{STREAM}/transcript.manifest.json"]),
            "transcript.txt": 10,
        }
        assert entry["manifests"]["transcript.manifest.json"]["files"] == [{"name": "transcript.txt"}]

    # a directory's manifest renamed into place before `since` is not this run's
    old = directory / OLD / "manifest.json"
    os.utime(old, (old.stat().st_atime, time.time() - 600))
    assert [ref.stream_dir for ref in local.manifests(time.time() - 60)] == [str(directory / STREAM)] * 2


def test_a_bucket_that_cannot_be_read_is_an_os_error_and_followed_again(s3_target: BucketView) -> None:
    name = f"{s3_target.target.bucket}-later"
    output = open_output(dataclasses.replace(s3_target.settings, data_dir=f"s3://{name}/rec"))
    with pytest.raises(OSError, match=f"cannot list s3://{name}/rec/"):
        output.manifests(0)
    with pytest.raises(OSError, match=f"cannot read s3://{name}/rec/{STREAM}/manifest.json"):
        output.read(ManifestRef(f"s3://{name}/rec/{STREAM}", "manifest.json"))
    follower = ManifestFollower(output, 0)
    assert follower.poll() == [] and follower.failing  # the live view goes on

    s3_target.server.create_bucket(name)
    key = f"rec/{STREAM}/manifest.json"
    assert isinstance(output, BucketOutput)
    output.client.put_object(Bucket=name, Key=key, Body=FILES[f"{STREAM}/manifest.json"])
    ((ref, facts),) = follower.poll()
    assert (
        ref == ManifestRef(f"s3://{name}/rec/{STREAM}", "manifest.json")
        and facts["meeting_uuid"] == "meeting-a"
    )
    assert not follower.failing and follower.poll() == []  # each manifest once
