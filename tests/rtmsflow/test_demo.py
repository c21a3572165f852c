"""The README's main job (`rtmsflow demo`, what `scripts/run` runs) as a user runs it: every stage a
separate process under the supervisor, one emulated meeting, and the files it became."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
import wave
from pathlib import Path

import av
import pyte
import pytest

from rtmsflow.settings import Settings
from tests.processors.support import StreamPlan, write_raw
from tests.support.s3 import BucketView

pytestmark = pytest.mark.kafka

TXT_LINE = re.compile(r"^\[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\] [^:]+: .+$")


LEFTOVER = "leftover-meeting=="


async def leave_a_meeting_on_the_broker(settings: Settings) -> None:
    """Raw records of another meeting that no processor has read yet (audio, transcript, events and
    its end-of-stream markers), as a crashed earlier run would leave them."""
    plan = StreamPlan(LEFTOVER, "old-stream", seconds=1.0, duplicates=0)
    plan.build()
    plan.records = [r for r in plan.records if r.topic != "rtms.raw.video"]
    await write_raw(settings, plan.records + plan.markers())


def test_demo_turns_a_meeting_into_recordings_and_transcripts(
    settings: Settings, settings_env: dict[str, str], kafka_topics: dict[str, str], tmp_path: Path
) -> None:
    asyncio.run(leave_a_meeting_on_the_broker(settings))
    out = tmp_path / "out"
    run = subprocess.run(
        [sys.executable, "-m", "rtmsflow.cli", "demo", "--participants", "2", "--duration", "4",
         "--video-resolution", "360p", "--speed", "2", "--out", str(out)],
        env=settings_env, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    meeting = json.loads(next(out.glob("summary-*.json")).read_text())["meeting_uuid"]
    (stream_dir,) = {
        p.parent
        for p in (out / "data").glob("*/*/*/manifest.json")
        if json.loads(p.read_text())["meeting_uuid"] == meeting
    }
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

    # Not a terminal: plain lines, no JSON log line (the stages' and the demo's own logs are files).
    shown = run.stdout.splitlines()
    assert not [line for line in shown + run.stderr.splitlines() if line.lstrip().startswith("{")]
    assert any(line.endswith(f"meeting {meeting} started") for line in shown), run.stdout
    assert any(f"meeting {meeting}: joined " in line for line in shown), run.stdout
    spoken = [line.split("] ", 1)[1] for line in lines]  # "Name: text" of transcript.txt
    assert any(line.endswith(f"{meeting} | {spoken[0]}") for line in shown), (spoken, run.stdout)
    assert any(line.endswith(f"finalized media: {stream_dir}/ (audio.wav, recording.mp4)") for line in shown)
    # the closing status line: every stage stopped by the supervisor, what it did, both meetings finalized
    status = re.compile(
        r".*\] stages: ingest-http stopped in - \([1-9]\d*\) out - \([1-9]\d*\) dead 0; "
        r"ingest-worker stopped in - \([1-9][\d,]*\) out - \([1-9][\d,]*\) dead 0; "
        r"processor stopped in - \([1-9][\d,]*\) out - \([1-9][\d,]*\) lag \d+ dead 0; "
        r"sink-media stopped in - \([1-9][\d,]*\) lag \d+ dead 0 finalized 2; "
        r"sink-transcripts stopped in - \([1-9][\d,]*\) lag \d+ dead 0 finalized 2"
    )
    assert any(status.fullmatch(line) for line in shown), run.stdout
    log_dir = out / "logs"
    assert {p.name for p in log_dir.glob("*/*.log")} >= {"demo.log", "processor.log", "sink-media.log"}
    # the broker's earlier contents: processed too, and named as leftovers (positive control: ours not)
    (old_dir,) = {p.parent for p in (out / "data").glob("*/*/*/*manifest.json")} - {stream_dir}
    assert any(line.endswith(f"meeting {LEFTOVER}: from the broker's earlier contents (started before this run)")
               for line in shown), run.stdout  # fmt: skip
    assert not any(line.endswith(f"meeting {meeting}: from the broker's earlier contents (started before this run)")
                   for line in shown)  # fmt: skip
    summary = run.stdout[run.stdout.index("played, processed and written") :]
    assert f"  {stream_dir}/\n" in summary and "also written: 1 stream(s) of 1 leftover meeting(s)" in summary
    assert f"  {old_dir}/  (meeting {LEFTOVER})" in summary
    report = json.loads(next(out.glob("summary-*.json")).read_text())
    assert list(report["streams"]) == [str(stream_dir)] and list(report["leftover_streams"]) == [str(old_dir)]


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
    manifest = json.loads(s3_target.read(f"{stream}/manifest.json"))
    sizes = {f["name"]: f["size"] for f in manifest["files"]}
    assert sizes["recording.mp4"] == objects[f"{stream}/recording.mp4"] > 0
    # the output names the objects: the plain line as the sink published the stream, then the summary
    # (what the bucket holds, read back from it: sizes and the manifests' facts)
    uri, mp4_size = f"{s3_target.settings.data_dir}/{stream}", objects[f"{stream}/recording.mp4"]
    published = f"finalized media: {uri}/ (audio.wav, recording.mp4)"
    assert any(line.endswith(published) for line in run.stdout.splitlines()), run.stdout
    summary = run.stdout[run.stdout.index("played, processed and written") :]
    assert f"  {uri}/\n" in summary, summary
    assert re.search(rf"^ +recording\.mp4 +{mp4_size:,} bytes$", summary, re.M), summary
    assert re.search(r"^ +media: .*finalized by marker", summary, re.M), summary
    assert re.search(r"^ +transcript: .*finalized by marker", summary, re.M), summary
    assert "also written" not in summary
    report = json.loads(next(out.glob("summary-*.json")).read_text())
    assert list(report["streams"]) == [uri] and report["leftover_streams"] == {}
    assert report["streams"][uri]["files"]["recording.mp4"] == mp4_size
    # nothing written to the local data dir: out/ holds the logs and the summary only
    assert not (out / "data").exists()
    assert sorted(p.name for p in out.iterdir()) == ["logs", next(out.glob("summary-*.json")).name]


def read_screen(master_fd: int, screen: pyte.Screen, seen: dict[str, bool], checks: dict[str, object],
                shown: set[str], timeout_s: float) -> bytes:  # fmt: skip
    """Feed what the demo writes to its terminal into `screen` until it closes the terminal; after
    each chunk, note which `checks` (name -> predicate on the screen's lines) held at that moment."""
    stream = pyte.ByteStream(screen)
    everything = bytearray()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master_fd], [], [], 1.0)
        if not ready:
            continue
        try:
            chunk = os.read(master_fd, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        everything += chunk
        stream.feed(chunk)
        shown.update(line.rstrip() for line in screen.display)
        for name, check in checks.items():
            seen[name] = seen.get(name, False) or bool(check(screen.display))  # type: ignore[operator]
    return bytes(everything)


def test_demo_on_a_terminal_shows_a_live_view(
    settings: Settings, settings_env: dict[str, str], kafka_topics: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    columns, rows = 220, 60
    master_fd, slave_fd = pty.openpty()
    fcntl.ioctl(slave_fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    # the terminal's own size and colours, whatever the test runner's environment says
    env = {k: v for k, v in settings_env.items() if k not in ("COLUMNS", "LINES", "NO_COLOR")}
    env["TERM"] = "xterm-256color"
    proc = subprocess.Popen(
        [sys.executable, "-m", "rtmsflow.cli", "demo", "--participants", "2", "--duration", "4",
         "--video-resolution", "360p", "--speed", "2", "--out", str(out)],
        env=env, stdin=slave_fd, stdout=slave_fd, stderr=slave_fd, close_fds=True,
    )  # fmt: skip
    os.close(slave_fd)
    screen = pyte.Screen(columns, rows)
    seen: dict[str, bool] = {}
    shown: set[str] = set()  # every line the screen showed at some moment

    def has(pattern: str) -> object:
        return lambda lines: any(re.search(pattern, line) for line in lines)

    checks = {
        "meeting": has(r"demo-\S+== +\d:\d\d / 0:02 +2 participant\(s\): \w+"),  # elapsed / expected
        "stages": lambda lines: all(
            any(re.match(rf"^│ {n} +ok ", line) for line in lines)
            for n in ("ingest-http", "ingest-worker", "processor", "sink-media", "sink-transcripts")
        ),  # fmt: skip
        "rates": has(r"^│ processor +ok +[\d,]+/s +[\d,]+/s "),
        "finalized": has(rf"│ │ media +{re.escape(str(out / 'data'))}/\S+/  audio.wav, recording.mp4 +│ │"),
    }
    try:
        everything = read_screen(master_fd, screen, seen, checks, shown, timeout_s=240)
        assert proc.wait(timeout=30) == 0, everything.decode(errors="replace")[-3000:]
    finally:
        os.close(master_fd)
        if proc.poll() is None:
            proc.kill()
    text = "\n".join(screen.display)
    assert all(seen.get(name) for name in checks), (seen, text)
    (stream_dir,) = {p.parent for p in (out / "data").glob("*/*/*/manifest.json")}
    spoken = [line.split("] ", 1)[1] for line in (stream_dir / "transcript.txt").read_text().splitlines()]
    # captions: the transcript's utterances as the transcript file has them, each shown at some moment
    captions = {line.split("│ │ ", 1)[1].rstrip(" │") for line in shown if line.startswith("│ │ ")}
    assert any(re.fullmatch(r"│ +stage +health +in +out +lag +dead letters +finalized +restarts +│", line)
               for line in shown)  # fmt: skip
    assert set(spoken) <= captions, (spoken, captions)
    # after the view: the summary (the files), and no JSON log line anywhere on the terminal
    assert f"{stream_dir}/" in text and "recording.mp4" in text and "summary: " in text, text
    assert b'{"ts": ' not in everything
