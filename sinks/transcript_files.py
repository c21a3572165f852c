"""A stream's transcript files: `transcript.txt` and `.jsonl` streamed live, `.vtt` and `.srt` at finalize.

- `transcript.txt`: one line per final utterance, appended (and flushed) as it arrives:
  `[2025-05-15T13:42:21.000Z] John Doe: Hello everyone` (UTC, milliseconds, from the start ms).
- `transcript.jsonl`: every utterance received (final or not), one JSON object a line, sorted keys.
- `transcript.vtt` / `transcript.srt`: generated at finalize by streaming the jsonl back (never the
  whole meeting in memory); cue times are relative to the stream's origin (t = 0 of the recording)
  and each cue names its speaker (`<v Name>` in VTT, `Name: ` in SRT, which has no voice tags).

Text rules: a line break of any kind inside a name or a text becomes one space, so an utterance is
always one TXT line and one cue line (a blank line would end a cue early). VTT escapes `&`, `<`, `>`
as entities, in the text and in the voice annotation. SRT has no escape mechanism, so its text is
kept verbatim. Only final utterances reach the TXT, VTT and SRT files; interim ones are kept in the
jsonl only. A speaker without a name is `Participant <id>` (or `Channel <id>`, or `Unknown speaker`).

Cue order: VTT wants cues by start time, utterances arrive in the order the processors close them;
finalize restores start order through a heap of at most `CUE_REORDER_WINDOW` cues (bounded memory).
Disorder deeper than that keeps arrival order for the cues involved.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import heapq
import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

TXT_NAME = "transcript.txt"
JSONL_NAME = "transcript.jsonl"
VTT_NAME = "transcript.vtt"
SRT_NAME = "transcript.srt"
CUE_REORDER_WINDOW = 512  # utterances; disorder comes from overlapping speakers, a few deep
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
# The line boundaries of str.splitlines(): any of them inside a cue or a TXT line would split it.
_LINE_BREAK = re.compile("\r\n|[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]")


class TranscriptError(ValueError):
    """An utterance record that cannot be read (missing field, wrong type); `field` names it."""

    def __init__(self, reason: str, field: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.reason = reason
        self.field = field


@dataclass(frozen=True)
class Utterance:
    """One speaker's utterance, times in ms since the epoch (RTMS clock)."""

    utterance_id: str
    participant_id: int
    participant_name: str | None
    channel_id: str | None
    start_ms: int
    end_ms: int
    text: str
    language: str | None = None
    final: bool = True

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Utterance:
        """From an `rtms.transcript` value or a jsonl object (`start_ms` or `start_time_ms`, ...)."""

        def pick(*names: str, default: Any = ...) -> Any:
            for name in names:
                if name in record:
                    return record[name]
            if default is ...:
                raise TranscriptError("missing", names[0])
            return default

        language = pick("language", default=None)
        values = {
            "utterance_id": pick("utterance_id"),
            "participant_id": pick("participant_id", default=0),
            "participant_name": pick("participant_name", default=None),
            "channel_id": pick("channel_id", default=None),
            "start_ms": pick("start_ms", "start_time_ms"),
            "end_ms": pick("end_ms", "end_time_ms"),
            "text": pick("text", default=""),
            # The contract v1 carries RTMS's numeric language code; keep it as its decimal tag.
            "language": str(language) if isinstance(language, int) else language,
            "final": pick("final", default=True),
        }
        types: dict[str, tuple[type, ...]] = {
            "utterance_id": (str,),
            "participant_id": (int,),
            "participant_name": (str, type(None)),
            "channel_id": (str, type(None)),
            "start_ms": (int,),
            "end_ms": (int,),
            "text": (str,),
            "language": (str, type(None)),
            "final": (bool,),
        }
        for name, allowed in types.items():
            value = values[name]
            if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
                raise TranscriptError(f"expected {'/'.join(t.__name__ for t in allowed)}", name)
        return cls(**values)

    def to_json_line(self) -> str:
        """One jsonl line (sorted keys, no spaces, UTF-8 text kept as is), ending in a newline."""
        return json.dumps(asdict(self), sort_keys=True, ensure_ascii=False, separators=(",", ":")) + "\n"


def one_line(text: str) -> str:
    """`text` with every line break (\\n, \\r\\n, \\r, U+2028, ...) replaced by one space."""
    return _LINE_BREAK.sub(" ", text)


def speaker_label(utterance: Utterance) -> str:
    """The speaker's name, or a stable fallback from their ids; always one non-empty line."""
    name = one_line(utterance.participant_name or "").strip()
    if name:
        return name
    if utterance.participant_id:
        return f"Participant {utterance.participant_id}"
    if utterance.channel_id:
        return f"Channel {one_line(utterance.channel_id)}"
    return "Unknown speaker"


def format_utc_ms(epoch_ms: int) -> str:
    """`2025-05-15T13:42:21.000Z` for ms since the epoch (integer arithmetic, no float rounding)."""
    instant = _EPOCH + dt.timedelta(milliseconds=epoch_ms)
    return instant.strftime("%Y-%m-%dT%H:%M:%S") + f".{epoch_ms % 1000:03d}Z"


def format_txt_line(utterance: Utterance) -> str:
    """`[<UTC start>] <speaker>: <text>` and a newline."""
    return f"[{format_utc_ms(utterance.start_ms)}] {speaker_label(utterance)}: {one_line(utterance.text)}\n"


def _clock(ms: int, separator: str) -> str:
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}{separator}{millis:03d}"


def format_vtt_time(offset_ms: int) -> str:
    """`HH:MM:SS.mmm` (hours grow past two digits if needed)."""
    return _clock(offset_ms, ".")


def format_srt_time(offset_ms: int) -> str:
    """`HH:MM:SS,mmm`."""
    return _clock(offset_ms, ",")


def escape_vtt(text: str) -> str:
    """Escape `&`, `<` and `>` as WebVTT character references (so text can never open a tag)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def cue_times(utterance: Utterance, origin_ms: int) -> tuple[int, int]:
    """(start, end) ms relative to the origin: clamped at 0, end at least 1 ms after start."""
    start = max(0, utterance.start_ms - origin_ms)
    end = max(start + 1, utterance.end_ms - origin_ms)
    return start, end


def vtt_cue(utterance: Utterance, origin_ms: int) -> str:
    """One WebVTT cue with a voice tag, followed by the blank line that ends it."""
    start, end = cue_times(utterance, origin_ms)
    voice = escape_vtt(speaker_label(utterance))
    return (
        f"{format_vtt_time(start)} --> {format_vtt_time(end)}\n"
        f"<v {voice}>{escape_vtt(one_line(utterance.text))}\n\n"
    )


def srt_cue(index: int, utterance: Utterance, origin_ms: int) -> str:
    """One SubRip cue numbered `index` (from 1), the speaker before the text."""
    start, end = cue_times(utterance, origin_ms)
    return (
        f"{index}\n{format_srt_time(start)} --> {format_srt_time(end)}\n"
        f"{speaker_label(utterance)}: {one_line(utterance.text)}\n\n"
    )


def iter_jsonl(path: Path) -> Iterator[Utterance]:
    """Stream the utterances of a `transcript.jsonl` back, one line at a time."""
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise TranscriptError(f"not JSON ({exc.msg})", f"{path.name}:{number}") from exc
            if not isinstance(record, dict):
                raise TranscriptError("not an object", f"{path.name}:{number}")
            yield Utterance.from_record(record)


def cues_in_start_order(
    utterances: Iterator[Utterance], window: int = CUE_REORDER_WINDOW
) -> Iterator[Utterance]:
    """Final utterances by start time (ties in arrival order), reordered within `window` of them."""
    heap: list[tuple[int, int, Utterance]] = []
    for arrival, utterance in enumerate(u for u in utterances if u.final):
        heapq.heappush(heap, (utterance.start_ms, arrival, utterance))
        if len(heap) > window:
            yield heapq.heappop(heap)[2]
    while heap:
        yield heapq.heappop(heap)[2]


def write_captions(
    jsonl_path: Path, vtt_path: Path, srt_path: Path, origin_ms: int, window: int = CUE_REORDER_WINDOW
) -> int:
    """Write the VTT and SRT files from the jsonl in one streaming pass; returns the cue count."""
    count = 0
    with _open_text(vtt_path) as vtt, _open_text(srt_path) as srt:
        vtt.write("WEBVTT\n\n")
        for utterance in cues_in_start_order(iter_jsonl(jsonl_path), window):
            count += 1
            vtt.write(vtt_cue(utterance, origin_ms))
            srt.write(srt_cue(count, utterance, origin_ms))
        _sync(vtt)
        _sync(srt)
    return count


def _open_text(path: Path) -> TextIO:
    # newline="" writes "\n" as is on every platform: the bytes must not depend on the OS.
    return open(path, "w", encoding="utf-8", newline="")


def _sync(handle: TextIO) -> None:
    handle.flush()
    os.fsync(handle.fileno())


class TranscriptWriter:
    """The live part: `transcript.txt` and `transcript.jsonl`, appended as utterances arrive.

    `add()` writes and flushes (a reader tailing the file sees each utterance at once); `close()`
    fsyncs and is idempotent. Use `write_captions` on the closed jsonl for the VTT and SRT files.
    """

    def __init__(self, txt_path: Path, jsonl_path: Path) -> None:
        self.txt_path = txt_path
        self.jsonl_path = jsonl_path
        self._txt: TextIO | None = _open_text(txt_path)
        self._jsonl: TextIO | None = _open_text(jsonl_path)
        self.utterances = 0
        self.lines = 0

    def add(self, utterance: Utterance) -> None:
        """Append one utterance (to the TXT only when it is final)."""
        if self._txt is None or self._jsonl is None:
            raise TranscriptError("writer is closed", str(self.txt_path))
        self._jsonl.write(utterance.to_json_line())
        self._jsonl.flush()
        self.utterances += 1
        if utterance.final:
            self._txt.write(format_txt_line(utterance))
            self._txt.flush()
            self.lines += 1

    def close(self) -> None:
        """Flush, fsync and close both files (both closed even when the first fails: a full disk)."""
        handles, self._txt, self._jsonl = (self._txt, self._jsonl), None, None
        try:
            for handle in handles:
                if handle is not None:
                    _sync(handle)
        finally:
            for handle in handles:
                if handle is not None:
                    with contextlib.suppress(OSError):
                        handle.close()

    def __enter__(self) -> TranscriptWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
