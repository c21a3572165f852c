"""The README's main job (`rtmsflow demo`, what `scripts/run` runs) as a user runs it: stages as
separate processes, one emulated meeting, a summary of every raw topic on stdout and on disk."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rtmsflow.settings import Settings

pytestmark = pytest.mark.kafka


def test_demo_plays_a_meeting_through_ingest_and_summarizes_every_raw_topic(
    settings: Settings, settings_env: dict[str, str], kafka_topics: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    run = subprocess.run(
        [sys.executable, "-m", "rtmsflow.cli", "demo", "--participants", "2", "--duration", "4",
         "--video", "360p", "--speed", "2", "--out", str(out)],
        env=settings_env, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    (summary_file,) = out.glob("*/*/raw_summary.json")
    summary = json.loads(summary_file.read_text())
    topics = summary["topics"]
    raw = {kafka_topics[n] for n in ("rtms.raw.audio", "rtms.raw.video", "rtms.raw.transcript", "rtms.raw.events")}
    assert raw <= set(topics)
    for name in raw:
        assert topics[name]["end_of_stream_markers"] == 1, name
        assert topics[name]["end_of_stream_last"], name
    audio = topics[kafka_topics["rtms.raw.audio"]]
    assert audio["records"] == 4 * 50  # mixed audio: one 20 ms packet a tick for 4 s of media
    assert audio["bytes"] == 4 * 50 * 640
    assert topics[kafka_topics["rtms.raw.video"]]["records"] == 4 * 25  # the worker asks for 25 fps
    assert topics[kafka_topics["rtms.raw.events"]]["by_name"]["participant_join"] >= 1
    assert f"{kafka_topics['rtms.raw.audio']}" in run.stdout and "records" in run.stdout
