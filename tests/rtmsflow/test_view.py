"""The live view's model (`rtmsflow.view`): what it shows, given stage metrics, /health answers,
topic records, manifests and log lines; and its drawing and end summary (`rtmsflow.live`), without
a broker."""

from __future__ import annotations

import json
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from rich.console import Console

from rtmsflow.live import LogFollower, render, summary_lines
from rtmsflow.view import (
    LEFTOVER_NOTE,
    LiveView,
    meeting_line,
    parse_log_line,
    rate_per_s,
    split_by_run,
    stage_summary,
)

STAGES = ["ingest-http", "ingest-worker", "processor", "sink-media", "sink-transcripts"]
MEETING = "abc=="
T0_MS = 1_700_000_000_000


class ProcessorMetrics:
    """A processor's /metrics, made by prometheus_client itself (names as the stage declares them)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.events_in = Counter("rtmsflow_processors_events_in", "", ["topic"], registry=self.registry)
        self.events_out = Counter("rtmsflow_processors_events_out", "", ["topic"], registry=self.registry)
        self.dead = Counter("rtmsflow_processors_dead_letters", "", registry=self.registry)
        self.lag = Gauge("rtmsflow_processors_lag", "", registry=self.registry)

    def text(self) -> str:
        return generate_latest(self.registry).decode()


def started(uuid: str = MEETING, at_ms: int = T0_MS) -> dict[str, object]:
    return {"meeting_uuid": uuid, "action": "STARTED", "event_ts_ms": at_ms, "received_at_ms": at_ms}


def joined(uuid: str, *people: tuple[int, str], name: str = "participant_join") -> dict[str, object]:
    return {
        "meeting_uuid": uuid,
        "name": name,
        "stream_started_ms": T0_MS,
        "participants": [{"user_id": pid, "user_name": who} for pid, who in people],
    }


def utterance(uid: str, text: str, final: bool, uuid: str = MEETING) -> dict[str, object]:
    return {
        "meeting_uuid": uuid,
        "utterance_id": uid,
        "participant_id": 16778240,
        "participant_name": "Alice",
        "text": text,
        "final": final,
    }


def test_processor_rates_lag_and_dead_letters_come_from_its_metrics() -> None:
    view, metrics = LiveView(STAGES), ProcessorMetrics()
    metrics.events_in.labels("rtms.raw.audio").inc(100)
    metrics.events_out.labels("rtms.audio").inc(90)
    view.stage_sample("processor", 10.0, metrics_text=metrics.text(), health_status=200)
    assert view.stage_row("processor").in_per_s is None  # one scrape: no rate yet
    metrics.events_in.labels("rtms.raw.audio").inc(300)
    metrics.events_in.labels("rtms.raw.video").inc(100)
    metrics.events_out.labels("rtms.audio").inc(200)
    metrics.dead.inc(2)
    metrics.lag.set(37)
    view.stage_sample("processor", 12.0, metrics_text=metrics.text(), health_status=200)
    row = view.stage_row("processor")
    assert (row.health, row.in_per_s, row.out_per_s, row.lag, row.dead_letters) == ("ok", 200.0, 100.0, 37, 2)
    assert row.finalized is None  # only sinks finalize
    assert stage_summary(row) == "processor ok in 200/s (500) out 100/s (290) lag 37 dead 2"
    view.stage_sample("processor", 13.0, metrics_text=None, health_status=None, running=False, stopping=True)
    assert (
        stage_summary(view.stage_row("processor")) == "processor stopped in - (500) out - (290) lag 37 dead 2"
    )


def test_rates_look_back_a_window_and_survive_a_restart() -> None:
    view = LiveView(STAGES, window_s=5.0)
    text = '# TYPE rtmsflow_processors_events_in counter\nrtmsflow_processors_events_in_total{topic="a"} %d\n'
    for at_s, total in ((0.0, 0), (5.0, 500), (10.0, 1500)):
        view.stage_sample("processor", at_s, metrics_text=text % total, health_status=200)
    assert view.stage_row("processor").in_per_s == 200.0  # (1500 - 500) / 5 s: the first scrape aged out
    assert rate_per_s(1500, 100, 2.0) == 50.0  # a restarted stage's counter starts again from 0


def test_ingest_worker_out_is_what_the_broker_acknowledged() -> None:
    view = LiveView(STAGES)
    text = (
        "# TYPE rtmsflow_ingest_frames counter\n"
        'rtmsflow_ingest_frames_total{kind="audio"} %d\nrtmsflow_ingest_frames_total{kind="video"} %d\n'
        "# TYPE rtmsflow_ingest_in_flight gauge\nrtmsflow_ingest_in_flight %d\n"
    )
    view.stage_sample("ingest-worker", 0.0, metrics_text=text % (0, 0, 0), health_status=200)
    view.stage_sample("ingest-worker", 1.0, metrics_text=text % (50, 25, 15), health_status=200)
    row = view.stage_row("ingest-worker")
    assert (row.in_per_s, row.out_per_s, row.lag) == (75.0, 60.0, None)


def test_sink_row_counts_records_in_and_streams_finalized() -> None:
    view = LiveView(STAGES)
    text = (
        "# TYPE rtmsflow_sink_records counter\n"
        'rtmsflow_sink_records_total{sink="media",topic="rtms.audio"} %d\n'
        "# TYPE rtmsflow_sink_streams_finalized counter\n"
        'rtmsflow_sink_streams_finalized_total{sink="media",how="marker"} %d\n'
        "# TYPE rtmsflow_sink_lag gauge\n"
        'rtmsflow_sink_lag{sink="media",topic="audio"} 4\nrtmsflow_sink_lag{sink="media",topic="video"} 3\n'
    )
    view.stage_sample("sink-media", 0.0, metrics_text=text % (0, 0), health_status=200)
    view.stage_sample("sink-media", 2.0, metrics_text=text % (100, 1), health_status=200)
    row = view.stage_row("sink-media")
    assert (row.in_per_s, row.out_per_s, row.lag, row.finalized) == (50.0, None, 7, 1)


def test_health_says_ok_the_stages_own_status_down_or_restarting() -> None:
    view = LiveView(STAGES)
    assert view.stage_row("processor").health == "starting"  # never scraped
    view.stage_sample("processor", 0.0, metrics_text=None, health_status=200)
    assert view.stage_row("processor").health == "ok"
    view.stage_sample(
        "processor", 1.0, metrics_text=None, health_status=503, health_body={"status": "stopped"}
    )
    assert view.stage_row("processor").health == "stopped"
    view.stage_sample("processor", 2.0, metrics_text=None, health_status=None)
    assert view.stage_row("processor").health == "down"
    view.stage_sample("processor", 3.0, metrics_text=None, health_status=None, restarts=2, running=False)
    row = view.stage_row("processor")
    assert (row.health, row.restarts) == ("restarting", 2)
    view.stage_sample("processor", 4.0, metrics_text=None, health_status=None, running=False, stopping=True)
    assert view.stage_row("processor").health == "stopped"  # stopped by the supervisor: not "down"


def test_a_meeting_started_in_this_run_shows_its_time_and_participants() -> None:
    view = LiveView(STAGES, expected_s={MEETING: 20.0})
    view.session(started())
    view.event(joined(MEETING, (1, "Alice"), (2, "Bob"), (3, "Carol")))
    view.event(joined(MEETING, (2, ""), name="participant_leave"))
    (meeting,) = view.snapshot(T0_MS + 12_000).meetings
    assert meeting.this_run and meeting.expected_s == 20.0
    assert meeting.elapsed_s(T0_MS + 12_000) == 12.0
    assert list(meeting.participants.values()) == ["Alice", "Carol"]
    assert view.take_lines() == [
        f"meeting {MEETING} started",
        f"meeting {MEETING}: joined Alice, Bob, Carol",
        f"meeting {MEETING}: left Bob",
    ]
    assert view.status_lines(T0_MS + 12_000)[0] == (
        f"meeting {MEETING} 0:12 / 0:20, 2 participant(s): Alice, Carol"
    )
    view.session({"meeting_uuid": MEETING, "action": "STOPPED", "event_ts_ms": T0_MS + 20_000})
    assert meeting.elapsed_s(T0_MS + 99_000) == 20.0  # stopped: the clock stops
    view.event(joined(MEETING, (1, ""), (3, ""), name="participant_leave"))
    view.utterance(utterance("s1/9", "a last word", final=True) | {"participant_id": 1})
    assert meeting.participants == {}  # a speaker who left is not back for speaking late
    assert (
        meeting_line(meeting, T0_MS) == f"meeting {MEETING} 0:20 / 0:20, 0 participant(s) (3 left), stopped"
    )
    assert view.take_lines()[0] == f"meeting {MEETING} stopped"


def test_a_meeting_without_a_start_in_this_run_is_named_a_leftover() -> None:
    view = LiveView(STAGES, this_run=["ours=="])
    view.event(joined("ours==", (1, "Alice")))
    view.event(joined("old==", (7, "Zed")))
    view.session({"meeting_uuid": "old==", "action": "ENDED", "event_ts_ms": T0_MS})
    rows = {m.meeting_uuid: m for m in view.snapshot(T0_MS).meetings}
    assert rows["ours=="].this_run and not rows["old=="].this_run
    assert f"meeting old==: {LEFTOVER_NOTE}" in view.take_lines()
    assert (
        meeting_line(rows["old=="], T0_MS)
        == "meeting old== earlier, 1 participant(s): Zed, stopped [leftover]"
    )
    assert not meeting_line(rows["ours=="], T0_MS).endswith("[leftover]")
    assert view.this_run == {"ours=="}
    assert split_by_run({"/d/ours": "ours==", "/d/old": "old=="}, view.this_run) == (["/d/ours"], ["/d/old"])


def test_a_final_utterance_replaces_its_partial_and_a_late_partial_is_ignored() -> None:
    view = LiveView(STAGES, caption_count=3)
    view.utterance(utterance("s1/0", "hello", final=False))
    view.utterance(utterance("s1/0", "hello every", final=False))
    assert [(c.text, c.final) for c in view.captions] == [("hello every", False)]
    view.utterance(utterance("s1/0", "hello everyone", final=True))
    view.utterance(utterance("s1/0", "hello every", final=False))  # stale partial after the final
    assert [(c.speaker, c.text, c.final) for c in view.captions] == [("Alice", "hello everyone", True)]
    assert view.take_lines()[-1] == f"{MEETING} | Alice: hello everyone"  # finals only, once
    for i in range(1, 5):
        view.utterance(utterance(f"s1/{i}", f"line {i}", final=True))
    assert [c.text for c in view.captions] == ["line 2", "line 3", "line 4"]  # the latest, bounded
    view.utterance(utterance("s1/0", "hello", final=False))  # its final has scrolled away: still stale
    assert [c.text for c in view.captions] == ["line 2", "line 3", "line 4"]
    other = utterance("s1/0", "same id, other meeting", final=True, uuid="other==")
    view.utterance(other)
    assert view.captions[-1].meeting_uuid == "other=="


def test_finalized_streams_land_with_their_directory() -> None:
    view = LiveView(STAGES, this_run=[MEETING])
    manifest = {"meeting_uuid": MEETING, "files": [{"name": "audio.wav"}, {"name": "recording.mp4"}]}
    view.manifest("/out/data/2026-12-07/abc/s1", "manifest.json", manifest)
    view.manifest("/out/data/2026-01-01/old/s9", "transcript.manifest.json", {"meeting_uuid": "old=="})
    first, second = view.snapshot(T0_MS).finalized
    assert (first.kind, first.files, first.this_run) == ("media", ("audio.wav", "recording.mp4"), True)
    assert (second.kind, second.this_run) == ("transcript", False)
    lines = view.take_lines()
    assert "finalized media: /out/data/2026-12-07/abc/s1/ (audio.wav, recording.mp4)" in lines
    assert any(line.startswith("finalized transcript: /out/data/2026-01-01/old/s9/") and "leftover" in line
               for line in lines)  # fmt: skip


def test_a_warning_in_a_log_becomes_one_human_line_naming_the_log() -> None:
    warning = json.dumps(
        {"level": "WARNING", "msg": "stage died; restarting", "stage": "processor", "exit": 1}
    )
    note = parse_log_line("demo", "/out/logs/r/demo.log", warning)
    assert note is not None
    assert note.line() == (
        "warning in demo: stage died; restarting (stage=processor) (more in /out/logs/r/demo.log)"
    )
    assert parse_log_line("processor", "p.log", json.dumps({"level": "INFO", "msg": "assigned"})) is None
    assert parse_log_line("processor", "p.log", "not json at all") is None
    crash = parse_log_line("processor", "p.log", "Traceback (most recent call last):")
    assert crash is not None and crash.level == "ERROR"
    view = LiveView(STAGES)
    failed = json.dumps({"level": "ERROR", "msg": "send failed", "meeting": "m=="})
    for _ in range(3):
        view.log_line("processor", "p.log", failed)
    view.log_line("processor", "p.log", json.dumps({"level": "WARNING", "msg": "slow"}))
    assert view.take_lines() == [  # a repeat is counted, not printed again
        "error in processor: send failed (meeting=m==) (more in p.log)",
        "warning in processor: slow (more in p.log)",
    ]
    assert [n.line() for n in view.snapshot(T0_MS).notes] == [
        "error in processor: send failed (meeting=m==) (3 times) (more in p.log)",
        "warning in processor: slow (more in p.log)",
    ]


def test_the_drawn_view_shows_meeting_stages_captions_and_files() -> None:
    view = LiveView(STAGES, expected_s={MEETING: 20.0})
    view.session(started())
    view.event(joined(MEETING, (16778240, "Alice")))
    view.stage_sample("processor", 0.0, metrics_text=None, health_status=200)
    view.utterance(utterance("s1/0", "hello everyone", final=True))
    view.manifest(
        "/out/data/d/abc/s1", "manifest.json", {"meeting_uuid": MEETING, "files": [{"name": "a.wav"}]}
    )
    view.log_line("sink-media", "/logs/sink-media.log", json.dumps({"level": "WARNING", "msg": "slow disk"}))
    console = Console(record=True, width=140, color_system=None)
    console.print(render(view.snapshot(T0_MS + 5_000), "rtmsflow demo"))
    screen = console.export_text()
    for expected in (MEETING, "0:05 / 0:20", "1 participant(s): Alice", *STAGES, "Alice: hello everyone",
                     "media       /out/data/d/abc/s1/  a.wav", "warning in sink-media: slow disk"):  # fmt: skip
        assert expected in screen, (expected, screen)


def test_log_follower_reads_only_new_complete_lines(tmp_path: Path) -> None:
    old = tmp_path / "processor.log"
    old.write_text('{"level": "INFO", "msg": "an earlier run"}\n')
    follower = LogFollower(tmp_path)
    follower.start()
    with old.open("a") as f:
        f.write('{"msg": "one"}\n{"msg": "tw')
    (tmp_path / "sink-media.log").write_text("first\n")
    assert [(s, line) for s, _, line in follower.poll()] == [
        ("processor", '{"msg": "one"}'),
        ("sink-media", "first"),
    ]
    with old.open("a") as f:
        f.write('o"}\n')
    assert [line for _, _, line in follower.poll()] == ['{"msg": "two"}']


def test_summary_names_this_runs_streams_and_the_leftovers() -> None:
    mine = {"/d/ours/s1": {"meeting_uuid": "ours==", "files": {"audio.wav": 1234}, "manifests": {}}}
    leftovers = {"/d/old/s9": {"meeting_uuid": "old==", "files": {}, "manifests": {}}}
    lines = summary_lines(mine, leftovers)
    assert lines[0] == "  /d/ours/s1/" and "audio.wav" in lines[1] and "1,234 bytes" in lines[1]
    assert lines[2] == f"also written: 1 stream(s) of 1 leftover meeting(s), {LEFTOVER_NOTE}:"
    assert lines[3] == "  /d/old/s9/  (meeting old==)"
    assert not any("also written" in line for line in summary_lines(mine, {}))
