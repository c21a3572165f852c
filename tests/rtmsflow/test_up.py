"""`rtmsflow up` as an operator runs it: every stage supervised, and Ctrl-C during a meeting leaves
finalized files (the stream closed at Zoom with its markers) and no process behind."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from rtmsflow.settings import Settings
from rtmsflow.stack import free_ports
from tests.ingest.support import alive, wait_gone, worker_env

pytestmark = pytest.mark.kafka


def spawn(
    args: list[str], env: dict[str, str], stdout: int = subprocess.DEVNULL, stderr: int = subprocess.DEVNULL
) -> subprocess.Popen[str]:
    """`rtmsflow <args>` as a child process (by default its stderr, JSON logs, dropped)."""
    return subprocess.Popen(
        [sys.executable, "-m", "rtmsflow.cli", *args],
        env=env,
        stdout=stdout,
        stderr=stderr,
        text=True,
    )


async def wait_for(predicate, timeout_s: float, what: str) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout_s):
        while True:
            if await predicate():
                return
            await asyncio.sleep(0.3)


async def test_ctrl_c_during_a_meeting_leaves_finalized_files_and_no_orphan_process(
    settings: Settings, settings_env: dict[str, str], kafka_topics: dict[str, str], tmp_path: Path
) -> None:
    http_port, metrics_base = free_ports(2)
    data = tmp_path / "data"
    env = {
        **worker_env(settings_env),
        "ZOOM_SECRET_TOKEN": "up-test-webhook-secret",
        "RTMSFLOW_HTTP_PORT": str(http_port),
        "RTMSFLOW_DATA_DIR": str(data),
    }
    up = spawn(["up", "--logs", str(tmp_path / "logs"), "--verbose"], env, subprocess.PIPE, subprocess.PIPE)
    emulator: subprocess.Popen[str] | None = None
    try:

        async def ready() -> bool:
            try:
                async with aiohttp.ClientSession() as http:
                    async with http.get(f"http://127.0.0.1:{http_port}/health") as resp:
                        return resp.status == 200
            except aiohttp.ClientError:
                return False

        await wait_for(ready, 120, "the webhook endpoint")
        emulator = spawn(
            ["emulator", "meeting", "--participants", "2", "--duration", "60", "--video-resolution", "360p",
             "--meeting-uuid", "up-test==", "--webhook", f"http://127.0.0.1:{http_port}/webhook"],
            env,
        )  # fmt: skip

        async def recording() -> bool:  # the media sink is writing the stream's files
            return any(data.glob("*/*/*/.recording.mp4.partial")) or any(data.glob("*/*/*/.*.partial"))

        await wait_for(recording, 90, "the sinks' temporary files")
        up.send_signal(signal.SIGINT)
        out, err = await asyncio.to_thread(up.communicate, timeout=180)
    finally:
        if up.poll() is None:
            up.kill()
        if emulator is not None and emulator.poll() is None:
            emulator.kill()
            emulator.wait()
    assert up.returncode == 0, out[-3000:]
    pids = [int(p) for p in re.findall(r"pid (\d+)", out)]
    assert len(pids) == 5, out  # five stages were running
    assert not [pid for pid in pids if alive(pid)], "a stage outlived rtmsflow up"

    (manifest_path,) = data.glob("*/*/*/manifest.json")
    stream_dir = manifest_path.parent
    assert (stream_dir / "transcript.manifest.json").exists()
    assert not list(stream_dir.glob(".*.partial")), "temporary files left behind"
    (stream,) = json.loads(manifest_path.read_text())["streams"]
    assert stream["ended"]["how"] == "marker" and stream["ended"]["stop_reason"] == 20  # closed by us
    assert stream["ended"]["matched"] is True
    assert stream["frame_counts"]["AUDIO"] > 0 and (stream_dir / "recording.mp4").stat().st_size > 10_000

    # what the operator saw (not a terminal: plain lines), and the end summary naming the files
    shown = out.splitlines()
    assert any(line.endswith("meeting up-test== started") for line in shown), out
    assert any(line.endswith(f"finalized media: {stream_dir}/ (audio.wav, recording.mp4)") for line in shown)
    assert "this run: 1 meeting(s) started, 1 stream directory(ies) written" in out
    assert f"\n  {stream_dir}/\n" in out and "also written" not in out
    assert not [line for line in shown if line.lstrip().startswith("{")]  # no JSON on stdout...
    # ...but --verbose streams every stage's JSON lines (and up's own, from logs/up.log) to stderr
    streamed = [line.split(" | ", 1) for line in err.splitlines() if " | {" in line]
    assert {source for source, _ in streamed} >= {"up", "ingest-http", "ingest-worker", "processor"}, err[
        -2000:
    ]
    assert all(isinstance(json.loads(body), dict) for _, body in streamed)
    assert (tmp_path / "logs" / "up.log").stat().st_size > 0


async def test_a_killed_rtmsflow_up_takes_its_stages_with_it(
    settings: Settings, settings_env: dict[str, str], kafka_topics: dict[str, str], tmp_path: Path
) -> None:
    http_port, _ = free_ports(2)
    env = {
        **worker_env(settings_env),
        "ZOOM_SECRET_TOKEN": "up-test-webhook-secret",
        "RTMSFLOW_HTTP_PORT": str(http_port),
        "RTMSFLOW_DATA_DIR": str(tmp_path / "data"),
    }
    up = spawn(["up", "--logs", str(tmp_path / "logs")], env, stdout=subprocess.PIPE)
    assert up.stdout is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(120):  # every stage healthy: up prints the endpoint last
            while not (lines and lines[-1].startswith("webhook endpoint:")):
                line = await asyncio.to_thread(up.stdout.readline)
                assert line, f"rtmsflow up ended: {lines}"
                lines.append(line)
        pids = [int(p) for p in re.findall(r"pid (\d+)", "".join(lines))]
        assert len(pids) == 5 and all(alive(pid) for pid in pids), lines  # the control
        up.kill()  # SIGKILL: no chance to stop its stages in order
        up.wait()
        for pid in pids:
            await asyncio.to_thread(wait_gone, pid)
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
        for pid in [int(p) for p in re.findall(r"pid (\d+)", "".join(lines))]:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
