"""`rtmsflow prune` and `rtmsflow forget` on a bucket (s3proxy): the same choices as on disk."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from sinks.bucket_retention import find_expired, meeting_prefixes
from sinks.cli import forget, prune
from tests.sinks.test_retention import DAY, finished_stream
from tests.support.s3 import BucketView


def upload_tree(view: BucketView, local: Path) -> None:
    """Every file under `local` as an object under the bucket's prefix, same relative names."""
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        view.bucket.put(view.target.key(str(path.relative_to(local))), path.read_bytes())


def env_of(view: BucketView) -> dict[str, str]:
    return view.server.env(view.settings.data_dir)


def test_only_finalized_streams_that_stopped_before_the_cutoff_expire(
    s3_target: BucketView, tmp_path: Path
) -> None:
    now = 1_760_000_000_000
    local = tmp_path / "tree"
    old = finished_stream(local, "Old/Meeting==", "s1", now - 40 * DAY)
    old_transcript = finished_stream(
        local, "Old/Meeting==", "s2", now - 40 * DAY, manifest="transcript.manifest.json"
    )
    finished_stream(local, "New+Meeting==", "s1", now - 2 * DAY)
    busy = finished_stream(local, "Busy", "s1", now - 50 * DAY)
    half = finished_stream(local, "Half", "s1", now - 50 * DAY)
    (half / "manifest.json").unlink()  # no manifest: still being written
    upload_tree(s3_target, local)
    # the media sink is rebuilding the busy stream: an upload in progress under it
    s3_target.bucket.create_upload(s3_target.target.key(str((busy / "recording.mp4").relative_to(local))))
    expired = find_expired(s3_target.bucket, 30 * DAY, now)
    assert [(e.prefix, e.meeting_uuid, e.rtms_stream_id) for e in expired] == [
        (str(old.relative_to(local)), "Old/Meeting==", "s1"),
        (str(old_transcript.relative_to(local)), "Old/Meeting==", "s2"),
    ]
    assert expired[0].bytes == sum(p.stat().st_size for p in old.iterdir())
    assert find_expired(s3_target.bucket, 60 * DAY, now) == []  # positive control of the cut-off


def test_prune_dry_run_lists_and_yes_deletes(s3_target: BucketView, tmp_path: Path) -> None:
    now = int(time.time() * 1000)
    local = tmp_path / "tree"
    old = str(finished_stream(local, "Old/Meeting==", "s1", now - 40 * DAY).relative_to(local))
    recent = str(finished_stream(local, "Recent", "s1", now - DAY).relative_to(local))
    upload_tree(s3_target, local)
    runner = CliRunner()
    uri = s3_target.settings.data_dir
    dry = runner.invoke(prune, ["--older-than", "30d"], env=env_of(s3_target))
    assert dry.exit_code == 0, dry.output
    assert f"would delete {uri}/{old} (" in dry.output and recent not in dry.output
    assert any(k.startswith(old) for k in s3_target.objects())  # a dry run deletes nothing
    done = runner.invoke(prune, ["--older-than", "30d", "--yes"], env=env_of(s3_target))
    assert done.exit_code == 0, done.output
    left = s3_target.objects()
    assert not any(k.startswith(old) for k in left) and any(k.startswith(recent) for k in left)


@pytest.mark.kafka
async def test_forget_deletes_the_meeting_s_objects_only(
    s3_target: BucketView, kafka_topics: dict[str, str], settings_env: dict[str, str], tmp_path: Path
) -> None:
    local = tmp_path / "tree"
    finished_stream(local, "Forget/Me+==", "s1", 1_747_316_541_000)
    finished_stream(local, "Forget/Me+==", "s2", 1_747_416_541_000)  # started the next day
    kept = str(finished_stream(local, "Keep/Me==", "s1", 1_747_316_541_000).relative_to(local))
    upload_tree(s3_target, local)
    assert len(meeting_prefixes(s3_target.bucket, "Forget/Me+==")) == 2
    env = {**settings_env, **env_of(s3_target)}
    runner = CliRunner()
    done = await asyncio.to_thread(runner.invoke, forget, ["--meeting", "Forget/Me+==", "--yes"], env=env)
    assert done.exit_code == 0, done.output
    assert done.output.count(f"deleting {s3_target.settings.data_dir}/") == 2
    assert meeting_prefixes(s3_target.bucket, "Forget/Me+==") == []
    assert sorted({k.rsplit("/", 1)[0] for k in s3_target.objects()}) == [kept]
