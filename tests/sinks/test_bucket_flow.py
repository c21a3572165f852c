"""The sinks writing to a bucket (s3proxy) through the real broker: kill -9 of both sink processes
mid-stream and a restart give the same bytes as an undisturbed run on disk, and a storage server
killed mid-meeting and brought back leaves the meeting's objects complete and identical."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from emulator.media import MeetingSpec, SyntheticMeeting
from rtmsflow.jvm import free_port
from rtmsflow.s3_server import LocalS3
from rtmsflow.service import serve_health
from rtmsflow.settings import Settings
from sinks.kinds import MEDIA_SINK, TRANSCRIPT_SINK
from sinks.replay import replay_meeting
from sinks.stream_sink import SinkService
from tests.sinks.support import from_meeting, produce, stream_dir, wait_for
from tests.sinks.test_restart import files_of, sinks, split
from tests.support.s3 import BucketView, make_bucket_view

pytestmark = pytest.mark.kafka
MEETING = "bUcket+9/Me=="
MEDIA = ["audio.wav", "manifest.json", "recording.mp4"]
TRANSCRIPT = [
    "chat.jsonl",
    "chat.txt",
    "transcript.jsonl",
    "transcript.manifest.json",
    "transcript.srt",
    "transcript.txt",
    "transcript.vtt",
]


def relative(settings: Settings, stream: object) -> str:
    """A stream directory's path under the data dir (its key under the bucket's prefix)."""
    return str(stream_dir(settings, stream, Path("/")).relative_to("/"))  # type: ignore[arg-type]


async def undisturbed(settings: Settings, reference: Path, streams: list[object], tag: str) -> list[Path]:
    """Both sinks on disk, undisturbed, over the same topics: the bytes to compare with."""
    ref = dataclasses.replace(settings, data_dir=str(reference))
    dirs = [stream_dir(settings, s, reference) for s in streams]  # type: ignore[arg-type]
    async with MEDIA_SINK.service(ref, f"{tag}-m"), TRANSCRIPT_SINK.service(ref, f"{tag}-t"):
        await wait_for(
            lambda: all(
                (d / n).is_file() for d in dirs for n in ("manifest.json", "transcript.manifest.json")
            ),
            120,
            "the undisturbed run on disk",
        )
    return dirs


def spool_files(spool: Path) -> list[str]:
    return [name for _, _, names in os.walk(spool) for name in names]


def committed_within_open(service: SinkService) -> bool:
    """Nothing committed past the first record of a stream that is not yet in storage."""
    return all(
        service._committed.get(tp, 0) <= first
        for entry in service.core.open.values()
        for tp, first in entry.first_offsets.items()
    )


async def health(service: SinkService) -> tuple[int, dict[str, Any]]:
    """GET the sink's /health (served for the call on a free port)."""
    port = free_port()
    runner = await serve_health(service, "127.0.0.1", port)
    try:
        async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/health") as r:
            return r.status, await r.json()
    finally:
        await runner.cleanup()


async def test_kill_9_of_the_sinks_writing_to_a_bucket_gives_the_disk_run_s_bytes(
    settings: Settings,
    settings_env: dict[str, str],
    kafka_topics: dict[str, str],
    s3_target: BucketView,
    tmp_path: Path,
) -> None:
    meeting = SyntheticMeeting(MeetingSpec(seed=9, participants=3, duration_s=20, video="360p", fps=25))
    long = from_meeting(meeting, MEETING, "aa11", pause=(11_000, 12_000))
    short = from_meeting(
        SyntheticMeeting(MeetingSpec(seed=3, participants=2, duration_s=4, video="360p", fps=25)),
        MEETING,
        "bb22",
    )
    head, tail = split(long, 0.4)
    await produce(settings, [head, short])

    s3 = s3_target.settings
    env = {**settings_env, **s3_target.server.env(s3.data_dir), "RTMSFLOW_SPOOL_DIR": s3.spool_dir}
    spool = Path(s3.spool_dir)
    r_long, r_short = relative(settings, long), relative(settings, short)
    media_spool = spool / "media" / r_long
    transcript_spool = spool / "transcripts" / r_long

    def objects(rel: str) -> set[str]:
        return {k.rsplit("/", 1)[-1] for k in s3_target.objects(rel + "/")}

    with sinks(env, tmp_path) as procs:
        await wait_for(
            lambda: (
                {"manifest.json", "transcript.manifest.json"} <= objects(r_short)
                and (media_spool / ".recording.mp4.partial").is_file()
                and (media_spool / ".recording.mp4.partial").stat().st_size > 100_000
                and (transcript_spool / ".transcript.txt.partial").is_file()
                and (transcript_spool / ".transcript.txt.partial").stat().st_size > 0
            ),
            90,
            "the short stream in the bucket and the long one half written",
        )
        for proc in procs:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    assert objects(r_long) == set()  # killed mid-stream: nothing of it is visible
    short_manifest = s3_target.read(r_short + "/manifest.json")

    await produce(settings, [tail])
    with sinks(env, tmp_path):
        await wait_for(
            lambda: {"manifest.json", "transcript.manifest.json"} <= objects(r_long),
            120,
            "the long stream in the bucket after the restart",
        )

    ref_long, ref_short = await undisturbed(settings, tmp_path / "reference", [long, short], "undisturbed")
    for rel, ref_dir in ((r_long, ref_long), (r_short, ref_short)):
        got, want = s3_target.files(rel), files_of(ref_dir)
        assert sorted(got) == sorted(want) == sorted(MEDIA + TRANSCRIPT)
        for name in want:
            assert got[name] == want[name], f"{name} in the bucket differs from the disk run's"
    assert s3_target.read(r_short + "/manifest.json") == short_manifest
    assert s3_target.uploads() == []  # no multipart upload left behind
    assert spool_files(spool) == []  # the spool holds nothing after publishing


async def test_the_storage_server_dies_mid_meeting_and_returns_the_objects_are_complete_and_identical(
    settings: Settings, kafka_topics: dict[str, str], tmp_path: Path
) -> None:
    server = LocalS3(tmp_path / "s3-outage")
    server.start()
    try:
        view = make_bucket_view(server, settings, tmp_path)
        meeting = SyntheticMeeting(MeetingSpec(seed=5, participants=2, duration_s=12, video="360p", fps=25))
        stream = from_meeting(meeting, MEETING, "cc33")
        head, tail = split(stream, 0.5)
        await produce(settings, [head])
        rel = relative(settings, stream)
        spool = Path(view.settings.spool_dir)
        media = MEDIA_SINK.service(view.settings, "outage-m")
        transcripts = TRANSCRIPT_SINK.service(view.settings, "outage-t")
        async with media, transcripts:
            await wait_for(
                lambda: (
                    (spool / "media" / rel / ".recording.mp4.partial").is_file()
                    and (spool / "transcripts" / rel / ".transcript.txt.partial").is_file()
                ),
                90,
                "the stream half written",
            )
            server.kill()
            await produce(settings, [tail])
            # both sinks reach the end of the stream and wait for storage: unhealthy, nothing committed
            await wait_for(
                lambda: (
                    media.core.outage.current() is not None and transcripts.core.outage.current() is not None
                ),
                90,
                "both sinks reporting the outage",
            )
            outage = media.core.outage.current()
            assert outage is not None and outage["kind"] == "unreachable"
            assert media.core.open and transcripts.core.open  # the stream is still open, not dropped
            assert all(committed_within_open(c) for c in (media, transcripts))
            status, body = await health(media)  # /health answers while the batch waits for storage
            assert status == 503 and body["status"] == "storage unavailable"
            assert body["storage"]["outage"]["kind"] == "unreachable"
            server.start()
            await wait_for(
                lambda: (
                    media.core.outage.current() is None
                    and transcripts.core.outage.current() is None
                    and not media.core.open
                    and not transcripts.core.open
                ),
                120,
                "both sinks finalized after storage returned",
            )
            assert (await health(media))[0] == 200  # healthy again, by itself
        (ref_dir,) = await undisturbed(settings, tmp_path / "reference", [stream], "outage-ref")
        got, want = view.files(rel), files_of(ref_dir)
        assert sorted(got) == sorted(want) == sorted(MEDIA + TRANSCRIPT)
        for name in want:
            assert got[name] == want[name], f"{name} differs after the storage outage"
        assert view.uploads() == []
    finally:
        server.stop()


async def test_replay_out_to_a_bucket_writes_the_bytes_of_a_replay_to_disk(
    settings: Settings,
    settings_env: dict[str, str],
    kafka_topics: dict[str, str],
    s3_target: BucketView,
    tmp_path: Path,
) -> None:
    meeting = SyntheticMeeting(
        MeetingSpec(seed=4, participants=2, duration_s=6, video="360p", fps=25, deskshare=True)
    )
    stream = from_meeting(meeting, MEETING, "dd44", pause=(3000, 3500), deskshare=True)
    await produce(settings, [stream])
    uri = s3_target.settings.data_dir + "/replayed"
    env = {**settings_env, **s3_target.server.env(uri), "RTMSFLOW_SPOOL_DIR": s3_target.settings.spool_dir}
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "rtmsflow.cli", "replay", "--meeting", MEETING, "--out", uri, "--no-index"],
        env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"in {s3_target.target.bucket}/rec/replayed/" in done.stdout  # where the files went
    disk = tmp_path / "disk"
    await replay_meeting(settings, MEETING, disk, use_index=False)
    got = s3_target.files("replayed/" + relative(settings, stream))
    want = files_of(stream_dir(settings, stream, disk))
    assert "deskshare.mp4" in want and sorted(got) == sorted(want)
    for name in want:
        assert got[name] == want[name], f"{name} replayed to the bucket differs from the disk replay"
    assert s3_target.uploads() == []
    assert spool_files(Path(s3_target.settings.spool_dir)) == []  # the replay's private spool is gone
