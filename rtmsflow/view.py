"""What the live view of `rtmsflow demo` and `rtmsflow up` shows, and the plain lines it prints.

Pure: fed metrics, health answers, topic records, manifests and log lines, it keeps bounded state and
answers `snapshot()` and `take_lines()`; `rtmsflow.live` does the I/O and the drawing."""

from __future__ import annotations

import dataclasses
import json
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

# A meeting is "this run's" when a STARTED session record for it was written while the view watched;
# any other meeting the stages handle came from what the broker held before (a leftover).
LEFTOVER_NOTE = "from the broker's earlier contents (started before this run)"
WARNING_LEVELS = frozenset({"WARNING", "ERROR", "CRITICAL"})
FINALS_REMEMBERED = 1000  # a partial of one of these, arriving late, is not shown again

Samples = dict[str, list[tuple[dict[str, str], float]]]


def parse_metrics(text: str) -> Samples:
    """Prometheus text exposition -> sample name -> [(labels, value)] (counters keep `_total`)."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((dict(sample.labels), float(sample.value)))
    return samples


@dataclass(frozen=True)
class Select:
    """The sum of the samples named `name` whose labels include `labels`."""

    name: str
    labels: tuple[tuple[str, str], ...] = ()

    def total(self, samples: Samples) -> float | None:
        """The sum, or None when the stage exposes no such sample (a labelled metric has none until
        its first use)."""
        rows = samples.get(self.name)
        if rows is None:
            return None
        return sum(v for labels, v in rows if all(labels.get(k) == want for k, want in self.labels))


def counted(value: float | None) -> float:
    """A counter's total: one not exposed yet has counted nothing."""
    return 0.0 if value is None else value


@dataclass(frozen=True)
class StageMetrics:
    """Which of a stage's metrics are its records in, records out, dead letters, lag and finalized
    streams. `out_minus` is subtracted from `out` (the ingest worker's records not yet acknowledged)."""

    records_in: Select | None = None
    records_out: Select | None = None
    out_minus: Select | None = None
    dead_letters: tuple[Select, ...] = ()
    lag: Select | None = None
    finalized: Select | None = None


_INGEST_DEAD = Select("rtmsflow_ingest_dead_letters_total")
_SINK = StageMetrics(
    records_in=Select("rtmsflow_sink_records_total"),
    dead_letters=(Select("rtmsflow_sink_dead_letters_total"),),
    lag=Select("rtmsflow_sink_lag"),
    finalized=Select("rtmsflow_sink_streams_finalized_total"),
)
# Keyed by the stage names of `rtmsflow.stack.stack_stages`.
STAGE_METRICS: dict[str, StageMetrics] = {
    "ingest-http": StageMetrics(
        records_in=Select("rtmsflow_ingest_webhooks_total"),
        records_out=Select("rtmsflow_ingest_webhooks_total", (("result", "accepted"),)),
        dead_letters=(_INGEST_DEAD,),
    ),
    "ingest-worker": StageMetrics(
        records_in=Select("rtmsflow_ingest_frames_total"),
        records_out=Select("rtmsflow_ingest_frames_total"),
        out_minus=Select("rtmsflow_ingest_in_flight"),
        dead_letters=(_INGEST_DEAD,),
    ),
    "processor": StageMetrics(
        records_in=Select("rtmsflow_processors_events_in_total"),
        records_out=Select("rtmsflow_processors_events_out_total"),
        dead_letters=(Select("rtmsflow_processors_dead_letters_total"),),
        lag=Select("rtmsflow_processors_lag"),
    ),
    "sink-media": _SINK,
    "sink-transcripts": _SINK,
}


@dataclass(frozen=True)
class Totals:
    """One scrape of a stage, reduced to what the view shows."""

    at_s: float
    records_in: float | None
    records_out: float | None
    dead_letters: int
    lag: int | None
    finalized: int | None


def stage_totals(name: str, at_s: float, samples: Samples) -> Totals:
    """What `samples` (a scrape of stage `name`) say, by `STAGE_METRICS`."""
    spec = STAGE_METRICS.get(name, StageMetrics())

    def get(select: Select | None) -> float | None:
        return None if select is None else select.total(samples)

    def count(select: Select | None) -> float | None:
        return None if select is None else counted(select.total(samples))

    out = count(spec.records_out)
    if out is not None and spec.out_minus is not None:
        out = max(0.0, out - counted(get(spec.out_minus)))
    lag, finalized = get(spec.lag), count(spec.finalized)
    return Totals(
        at_s=at_s,
        records_in=count(spec.records_in),
        records_out=out,
        dead_letters=int(sum(counted(get(s)) for s in spec.dead_letters)),
        lag=None if lag is None else int(lag),
        finalized=None if finalized is None else int(finalized),
    )


def rate_per_s(first: float | None, last: float | None, seconds: float) -> float | None:
    """Counter growth per second; a counter that went down (the stage restarted) counts from 0."""
    if first is None or last is None or seconds <= 0:
        return None
    return (last - first if last >= first else last) / seconds


# --- what the view shows ---------------------------------------------------------------------------


@dataclass(frozen=True)
class StageRow:
    """One stage's line: health, rates (records a second), lag, dead letters, restarts."""

    name: str
    health: str  # ok, starting, down, restarting, or the status /health answered
    in_per_s: float | None = None
    out_per_s: float | None = None
    lag: int | None = None
    dead_letters: int = 0
    finalized: int | None = None  # sinks: streams finalized
    restarts: int = 0
    in_total: float | None = None  # since the stage (last) started
    out_total: float | None = None


@dataclass
class MeetingRow:
    """One meeting: when it started (wall ms), whether it has ended, who is in it."""

    meeting_uuid: str
    this_run: bool
    started_ms: int | None = None
    ended_ms: int | None = None
    expected_s: float | None = None
    participants: dict[int, str] = field(default_factory=dict)  # in the meeting now
    left: dict[int, str] = field(default_factory=dict)  # were in it, have left
    finalized: int = 0

    def elapsed_s(self, now_ms: int) -> float | None:
        if self.started_ms is None:
            return None
        return max(0.0, ((self.ended_ms or now_ms) - self.started_ms) / 1000)


@dataclass
class Caption:
    """One utterance as shown: partial until its final replaces it (same meeting and utterance_id)."""

    meeting_uuid: str
    utterance_id: str
    speaker: str
    text: str
    final: bool


@dataclass(frozen=True)
class Finalized:
    """A stream directory a sink published (its manifest landed)."""

    meeting_uuid: str
    kind: str  # media or transcript
    stream_dir: str
    files: tuple[str, ...]
    this_run: bool


@dataclass(frozen=True)
class Note:
    """A warning or error from a log: one human line and the log that has the rest."""

    source: str
    level: str
    message: str
    log_path: str
    count: int = 1  # the same note seen this many times

    def line(self) -> str:
        times = f" ({self.count} times)" if self.count > 1 else ""
        return f"{self.level.lower()} in {self.source}: {self.message}{times} (more in {self.log_path})"


@dataclass(frozen=True)
class Snapshot:
    """Everything the live view draws at one moment."""

    now_ms: int
    meetings: tuple[MeetingRow, ...]
    stages: tuple[StageRow, ...]
    captions: tuple[Caption, ...]
    finalized: tuple[Finalized, ...]
    notes: tuple[Note, ...]


def parse_log_line(source: str, log_path: str, line: str) -> Note | None:
    """The note a stage's log line makes: a JSON line at WARNING or above, or the start of a
    traceback (a crash prints one outside the JSON); None for anything else."""
    text = line.strip()
    if text.startswith("Traceback"):
        return Note(source, "ERROR", "crashed with a traceback", log_path)
    if not text.startswith("{"):
        return None
    try:
        record = json.loads(text)
    except ValueError:
        return None
    if not isinstance(record, dict) or str(record.get("level", "")).upper() not in WARNING_LEVELS:
        return None
    message = str(record.get("msg", ""))
    context = [f"{k}={record[k]}" for k in ("meeting", "stage", "error", "reason") if record.get(k)]
    if context:
        message += f" ({', '.join(context)})"
    if len(message) > 200:
        message = message[:199] + "…"
    return Note(source, str(record["level"]).upper(), message, log_path)


def short_uuid(meeting_uuid: str, width: int = 24) -> str:
    return meeting_uuid if len(meeting_uuid) <= width else meeting_uuid[: width - 1] + "…"


def clock(seconds: float) -> str:
    """`m:ss` (or `h:mm:ss`)."""
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class LiveView:
    """The view's state. Feed it with `stage_sample`, `session`, `event`, `utterance`, `manifest`
    and `log_line`; read it with `snapshot` and `take_lines` (the plain mode's new lines).

    Memory is bounded: rates look back `window_s`, and the view keeps the last `caption_count`
    captions, `finalized_count` finalized streams, `note_count` notes and `meeting_count` meetings
    (the oldest ended ones go first)."""

    def __init__(
        self,
        stages: Sequence[str],
        *,
        expected_s: Mapping[str, float] | None = None,
        this_run: Iterable[str] = (),
        window_s: float = 5.0,
        caption_count: int = 5,
        finalized_count: int = 6,
        note_count: int = 4,
        meeting_count: int = 8,
    ) -> None:
        self.stage_names = list(stages)
        self.expected_s = dict(expected_s or {})
        self.window_s = window_s
        self.meeting_count = meeting_count
        self._totals: dict[str, deque[Totals]] = {name: deque() for name in stages}
        self._health: dict[str, str] = {name: "starting" for name in stages}
        self._restarts: dict[str, int] = {name: 0 for name in stages}
        self.meetings: dict[str, MeetingRow] = {}
        # every meeting started in this run (kept for the summary): the ones the caller starts itself,
        # and those whose STARTED session record comes while the view watches
        self.this_run: set[str] = set(this_run)
        self.captions: deque[Caption] = deque(maxlen=caption_count)
        self.finalized: deque[Finalized] = deque(maxlen=finalized_count)
        self.notes: deque[Note] = deque(maxlen=note_count)
        self._note_counts: dict[tuple[str, str, str], int] = {}
        self._finals: dict[tuple[str, str], None] = {}  # (meeting, utterance_id) of recent finals
        self._lines: list[str] = []

    # -- inputs ------------------------------------------------------------------------------------

    def stage_sample(
        self,
        name: str,
        at_s: float,
        *,
        metrics_text: str | None,
        health_status: int | None,
        health_body: Mapping[str, Any] | None = None,
        restarts: int = 0,
        running: bool = True,
        stopping: bool = False,
    ) -> None:
        """One scrape of stage `name` at monotonic `at_s`: its /metrics text (None when it did not
        answer), /health's HTTP status (None when it did not answer) and body, and what the
        supervisor knows (restarts so far, whether its process runs, whether it is stopping it)."""
        self._restarts[name] = restarts
        if stopping and (not running or health_status is None):
            self._health[name] = "stopped"
        elif not running:
            self._health[name] = "restarting" if restarts else "down"
        elif health_status is None:
            self._health[name] = "down"
        elif health_status == 200:
            self._health[name] = "ok"
        else:
            self._health[name] = str((health_body or {}).get("status") or f"HTTP {health_status}")
        if metrics_text is None:
            return
        try:
            samples = parse_metrics(metrics_text)
        except ValueError:
            return
        window = self._totals.setdefault(name, deque())
        window.append(stage_totals(name, at_s, samples))
        while len(window) > 2 and at_s - window[1].at_s >= self.window_s:
            window.popleft()

    def session(self, value: Mapping[str, Any]) -> None:
        """A `rtms.sessions` record written while the view watches."""
        uuid = value["meeting_uuid"]
        action = str(value.get("action", ""))
        if action == "STARTED":
            fresh = uuid not in self.meetings or not self.meetings[uuid].this_run
            self.this_run.add(uuid)
            row = self._meeting(uuid)
            row.this_run = True
            row.ended_ms = None
            if row.started_ms is None:
                row.started_ms = int(value["event_ts_ms"])
            if fresh:
                self._lines.append(f"meeting {uuid} started")
        elif action in ("STOPPED", "ENDED"):
            row = self._meeting(uuid)
            if row.ended_ms is None:
                row.ended_ms = int(value.get("event_ts_ms") or value.get("received_at_ms") or 0) or None
                self._lines.append(f"meeting {uuid} stopped")
        else:
            self._meeting(uuid)

    def event(self, value: Mapping[str, Any]) -> None:
        """A `rtms.events` record: participants join and leave; a leftover meeting gets its start."""
        row = self._meeting(value["meeting_uuid"])
        if row.started_ms is None and value.get("stream_started_ms"):
            row.started_ms = int(value["stream_started_ms"])
        name = value.get("name")
        people = [(int(p["user_id"]), p.get("user_name")) for p in value.get("participants") or []]
        if name == "participant_join":
            joined = [self._join(row, pid, who) for pid, who in people]
            if joined:
                self._lines.append(f"meeting {row.meeting_uuid}: joined {', '.join(joined)}")
        elif name == "participant_leave":
            left = [row.participants.pop(pid, who or str(pid)) for pid, who in people]
            row.left.update(zip((pid for pid, _ in people), left, strict=True))
            if left:
                self._lines.append(f"meeting {row.meeting_uuid}: left {', '.join(left)}")

    def utterance(self, value: Mapping[str, Any]) -> None:
        """An utterance, partial (`final` false) or final: the final replaces the partial of the
        same meeting and `utterance_id`, and a partial after its final is ignored."""
        uuid, uid = value["meeting_uuid"], value["utterance_id"]
        row = self._meeting(uuid)
        pid = int(value.get("participant_id") or 0)
        speaker = value.get("participant_name") or (row.participants.get(pid) if pid else None)
        if pid and value.get("participant_name") and pid not in row.participants and pid not in row.left:
            self._join(row, pid, value["participant_name"])
        caption = Caption(
            uuid, uid, speaker or (str(pid) if pid else "?"), value["text"], bool(value["final"])
        )
        if not caption.final and (uuid, uid) in self._finals:
            return  # its final came first (and may have scrolled away)
        if caption.final:
            if len(self._finals) >= FINALS_REMEMBERED:
                self._finals.pop(next(iter(self._finals)))  # the oldest (dicts keep insertion order)
            self._finals[(uuid, uid)] = None
        for i, shown in enumerate(self.captions):
            if (shown.meeting_uuid, shown.utterance_id) == (uuid, uid):
                if shown.final and not caption.final:
                    return
                self.captions[i] = caption
                break
        else:
            self.captions.append(caption)
        if caption.final:
            self._lines.append(f"{short_uuid(uuid)} | {caption.speaker}: {caption.text}")

    def manifest(self, stream_dir: str, name: str, manifest: Mapping[str, Any]) -> None:
        """A manifest a sink published in `stream_dir` (`manifest.json` for media, the transcript's
        otherwise)."""
        uuid = str(manifest.get("meeting_uuid", "?"))
        kind = "media" if name == "manifest.json" else "transcript"
        files = tuple(str(f["name"]) for f in manifest.get("files", []))
        row = self._meeting(uuid)
        row.finalized += 1
        done = Finalized(uuid, kind, stream_dir, files, row.this_run)
        self.finalized.append(done)
        whose = "" if done.this_run else f" [leftover {LEFTOVER_NOTE}]"
        self._lines.append(f"finalized {kind}: {stream_dir}/ ({', '.join(files)}){whose}")

    def log_line(self, source: str, log_path: str, line: str) -> Note | None:
        """A line of `source`'s log; a warning or error becomes a note (returned). The first of the
        same source, level and message is also a plain line; a repeat only counts."""
        note = parse_log_line(source, log_path, line)
        if note is None:
            return None
        key = (note.source, note.level, note.message)
        count = self._note_counts.get(key, 0) + 1
        if len(self._note_counts) >= 1000 and key not in self._note_counts:
            self._note_counts.clear()  # bounded: a flood of distinct messages starts the count again
        self._note_counts[key] = count
        note = dataclasses.replace(note, count=count)
        for i, shown in enumerate(self.notes):
            if (shown.source, shown.level, shown.message) == key:
                del self.notes[i]
                break
        self.notes.append(note)
        if count == 1:
            self._lines.append(note.line())
        return note

    # -- outputs -----------------------------------------------------------------------------------

    def take_lines(self) -> list[str]:
        """The plain lines of what happened since the last call."""
        lines, self._lines = self._lines, []
        return lines

    def stage_row(self, name: str) -> StageRow:
        window = self._totals.get(name) or deque()
        last = window[-1] if window else None
        first = window[0] if window else None
        seconds = (last.at_s - first.at_s) if last and first else 0.0
        health = self._health.get(name, "starting")
        live = first is not None and last is not None and health != "stopped"  # a stopped stage has no rate
        return StageRow(
            name=name,
            health=health,
            in_per_s=rate_per_s(first.records_in, last.records_in, seconds)
            if live and first and last
            else None,
            out_per_s=rate_per_s(first.records_out, last.records_out, seconds)
            if live and first and last
            else None,
            lag=last.lag if last else None,
            dead_letters=last.dead_letters if last else 0,
            finalized=last.finalized if last else None,
            restarts=self._restarts.get(name, 0),
            in_total=last.records_in if last else None,
            out_total=last.records_out if last else None,
        )

    def snapshot(self, now_ms: int) -> Snapshot:
        return Snapshot(
            now_ms=now_ms,
            meetings=tuple(self.meetings.values()),
            stages=tuple(self.stage_row(n) for n in self.stage_names),
            captions=tuple(self.captions),
            finalized=tuple(self.finalized),
            notes=tuple(self.notes),
        )

    def status_lines(self, now_ms: int) -> list[str]:
        """The plain mode's periodic sign of life: a line per live meeting and one for the stages."""
        snap = self.snapshot(now_ms)
        lines = [meeting_line(m, now_ms) for m in snap.meetings if m.ended_ms is None]
        lines.append("stages: " + "; ".join(stage_summary(s) for s in snap.stages))
        return lines

    # -- internals ---------------------------------------------------------------------------------

    def _meeting(self, uuid: str) -> MeetingRow:
        row = self.meetings.get(uuid)
        if row is None:
            row = MeetingRow(uuid, uuid in self.this_run, expected_s=self.expected_s.get(uuid))
            self.meetings[uuid] = row
            if not row.this_run:
                self._lines.append(f"meeting {uuid}: {LEFTOVER_NOTE}")
            self._forget_old_meetings()
        return row

    def _forget_old_meetings(self) -> None:
        ended = [u for u, m in self.meetings.items() if m.ended_ms is not None]
        while len(self.meetings) > self.meeting_count and ended:
            del self.meetings[ended.pop(0)]

    @staticmethod
    def _join(row: MeetingRow, participant_id: int, name: str | None) -> str:
        shown = name or row.participants.get(participant_id) or str(participant_id)
        row.participants[participant_id] = shown
        row.left.pop(participant_id, None)
        return shown


def meeting_line(m: MeetingRow, now_ms: int) -> str:
    """`meeting <uuid> 0:12 / 0:20, 3 participants: A, B, C` (+ leftover, stopped, finalized)."""
    when = meeting_time(m, now_ms)
    text = f"meeting {m.meeting_uuid} {when}, {people_text(m)}"
    if m.ended_ms is not None:
        text += ", stopped"
    if m.finalized:
        text += f", {m.finalized} stream file set(s) finalized"
    return text + ("" if m.this_run else " [leftover]")


def people_text(m: MeetingRow) -> str:
    """`3 participant(s): A, B, C`, or once everyone has gone `0 participant(s) (3 left)`."""
    text = f"{len(m.participants)} participant(s)"
    if m.participants:
        return text + ": " + ", ".join(m.participants.values())
    return text + (f" ({len(m.left)} left)" if m.left else "")


def meeting_time(m: MeetingRow, now_ms: int) -> str:
    """`0:12 / 0:20` (elapsed / expected), `0:12` without an expected length; a leftover's start
    is not this run's business (it may be days old): `earlier`."""
    if not m.this_run:
        return "earlier"
    elapsed = m.elapsed_s(now_ms)
    when = "-" if elapsed is None else clock(elapsed)
    return when if m.expected_s is None else f"{when} / {clock(m.expected_s)}"


def rate_text(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}/s"


def total_text(value: float | None) -> str:
    return "" if value is None else f" ({value:,.0f})"


def stage_summary(s: StageRow) -> str:
    """`processor ok in 180/s (3,600) out 178/s (3,560) lag 0 dead 0` (+ finalized, restarts): rates
    and, in brackets, the totals since the stage started."""
    text = f"{s.name} {s.health} in {rate_text(s.in_per_s)}{total_text(s.in_total)}"
    if s.out_total is not None:
        text += f" out {rate_text(s.out_per_s)}{total_text(s.out_total)}"
    if s.lag is not None:
        text += f" lag {s.lag:,}"
    text += f" dead {s.dead_letters}"
    if s.finalized is not None:
        text += f" finalized {s.finalized}"
    if s.restarts:
        text += f" restarts {s.restarts}"
    return text


def split_by_run(meeting_of_dir: Mapping[str, str], this_run: Iterable[str]) -> tuple[list[str], list[str]]:
    """Stream directories -> (this run's, leftovers), by the meeting each directory's manifest names."""
    ours = set(this_run)
    mine = [d for d, uuid in meeting_of_dir.items() if uuid in ours]
    leftovers = [d for d, uuid in meeting_of_dir.items() if uuid not in ours]
    return mine, leftovers
