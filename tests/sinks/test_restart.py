"""kill -9 mid-stream: `rtmsflow sink media` and `rtmsflow sink transcripts` as real processes,
killed with SIGKILL while a stream is half written, restarted: the files are byte-identical to an
undisturbed run's, and a stream finalized before the kill is skipped, not rebuilt."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from emulator.media import MeetingSpec, SyntheticMeeting
from rtmsflow.children import die_with_parent
from rtmsflow.settings import Settings
from sinks.kinds import MEDIA_SINK, TRANSCRIPT_SINK
from tests.sinks.support import OrderedStream, from_meeting, produce, stream_dir, wait_for

pytestmark = pytest.mark.kafka
MEETING = "kIll+9/Me=="


def split(stream: OrderedStream, fraction: float) -> tuple[OrderedStream, OrderedStream]:
    """The stream's records cut in two per topic: the first `fraction`, and the rest (with the markers)."""
    head = dataclasses.replace(
        stream, records={t: r[: int(len(r) * fraction)] for t, r in stream.records.items()}
    )
    tail = dataclasses.replace(
        stream, records={t: r[int(len(r) * fraction) :] for t, r in stream.records.items()}
    )
    return head, tail


def files_of(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


@contextmanager
def sinks(env: dict[str, str], logs: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Both sinks as `rtmsflow sink ...` processes (stopped with SIGTERM unless killed before)."""
    procs = []
    for kind in ("media", "transcripts"):
        with open(logs / f"{kind}.log", "ab") as log:
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "rtmsflow.cli", "sink", kind, "--group", f"crash-{kind}"],
                    env=env,
                    stdout=log,
                    stderr=log,
                    preexec_fn=die_with_parent,  # a killed test run takes them along
                )
            )
    try:
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def test_kill_9_mid_stream_and_restart_gives_byte_identical_files(
    settings: Settings, settings_env: dict[str, str], kafka_topics: dict[str, str], tmp_path: Path
) -> None:
    meeting = SyntheticMeeting(MeetingSpec(seed=9, participants=3, duration_s=20, video="360p", fps=25))
    long = from_meeting(meeting, MEETING, "aa11", pause=(11_000, 12_000))
    short = from_meeting(
        SyntheticMeeting(MeetingSpec(seed=3, participants=2, duration_s=4, video="360p", fps=25)),
        MEETING,
        "bb22",
    )
    head, tail = split(long, 0.4)
    # the long stream starts first, the short one ends inside it: the sinks cannot commit past the
    # long stream's first record, so after the kill they read the short one again and must skip it
    await produce(settings, [head, short])

    reference = tmp_path / "reference"
    ref = dataclasses.replace(settings, data_dir=str(reference))
    crash = tmp_path / "crash"
    env = {**settings_env, "RTMSFLOW_DATA_DIR": str(crash), "RTMSFLOW_LOG_LEVEL": "INFO"}
    d_long, d_short = stream_dir(settings, long, crash), stream_dir(settings, short, crash)

    with sinks(env, tmp_path) as procs:
        await wait_for(
            lambda: (
                (d_short / "manifest.json").is_file()
                and (d_short / "transcript.manifest.json").is_file()
                and (d_long / ".recording.mp4.partial").is_file()
                and (d_long / ".recording.mp4.partial").stat().st_size > 100_000
                and (d_long / ".transcript.txt.partial").is_file()
                and (d_long / ".transcript.txt.partial").stat().st_size > 0
                and (d_long / ".chat.txt.partial").is_file()
                and (d_long / ".chat.txt.partial").stat().st_size > 0
            ),
            90,
            "the short stream finalized and the long one half written",
        )
        for proc in procs:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    assert not (d_long / "recording.mp4").exists()  # killed mid-stream: nothing published yet
    short_manifests = {
        n: (d_short / n).stat().st_mtime_ns for n in ("manifest.json", "transcript.manifest.json")
    }

    await produce(settings, [tail])
    with sinks(env, tmp_path):
        await wait_for(
            lambda: (d_long / "manifest.json").is_file() and (d_long / "transcript.manifest.json").is_file(),
            120,
            "the long stream finalized after the restart",
        )

    async with (
        MEDIA_SINK.service(ref, "undisturbed-m"),
        TRANSCRIPT_SINK.service(ref, "undisturbed-t"),
    ):
        ref_long, ref_short = stream_dir(settings, long, reference), stream_dir(settings, short, reference)
        await wait_for(
            lambda: all(
                (d / n).is_file()
                for d in (ref_long, ref_short)
                for n in ("manifest.json", "transcript.manifest.json")
            ),
            120,
            "the undisturbed run",
        )

    for crashed, undisturbed in ((d_long, ref_long), (d_short, ref_short)):
        got, want = files_of(crashed), files_of(undisturbed)
        assert sorted(got) == sorted(want)
        assert {n for n in got if n.endswith(".partial")} == set()
        for name in want:
            assert got[name] == want[name], f"{name} differs after kill -9 + restart"
    assert sorted(files_of(d_long)) == [
        "audio.wav",
        "chat.jsonl",
        "chat.txt",
        "manifest.json",
        "recording.mp4",
        "transcript.jsonl",
        "transcript.manifest.json",
        "transcript.srt",
        "transcript.txt",
        "transcript.vtt",
    ]
    assert len((d_long / "chat.txt").read_text().splitlines()) == len(long.records["rtms.chat"]) - 1 > 2
    # the stream finalized before the kill was skipped after it, not rebuilt
    assert {n: (d_short / n).stat().st_mtime_ns for n in short_manifests} == short_manifests
