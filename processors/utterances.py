"""Assemble Zoom's transcript pieces (msg 17) into utterances, one assembler per (meeting, stream).

`UtteranceAssembler` (pure) extends the open utterance with a piece of the same speaker, language and
utterance within the pause and size caps, closes it otherwise or when `tick(media_ms)` passes it, and with
`partials=True` emits the open one after each piece. Ids are `<rtms_stream_id>/<seq>`, stable on re-runs."""

from __future__ import annotations

from dataclasses import dataclass

from schemas.languages import language, language_tag

__all__ = [
    "ESTIMATE_MS_PER_WORD",
    "Speaker",
    "TranscriptPiece",
    "Utterance",
    "UtteranceAssembler",
]

# About three words a second: an estimate of a piece's length when Zoom sent no end_time.
ESTIMATE_MS_PER_WORD = 330
DEFAULT_MAX_PAUSE_MS = 700
DEFAULT_MAX_DURATION_MS = 15_000
DEFAULT_MAX_CHARS = 1_000


@dataclass(frozen=True, slots=True)
class TranscriptPiece:
    """One transcript message from Zoom, as ingest recorded it (times in ms since the epoch)."""

    participant_id: int
    participant_name: str | None
    timestamp_ms: int
    text: str
    start_ms: int | None = None
    end_ms: int | None = None
    language_code: int | None = None
    channel_id: str | None = None


@dataclass(frozen=True, slots=True)
class Speaker:
    """Who spoke: Zoom user id and name, and the Contact Center channel (None elsewhere)."""

    participant_id: int
    participant_name: str | None
    channel_id: str | None


@dataclass(frozen=True, slots=True)
class Utterance:
    """An assembled utterance; the fields of the `rtms.transcript` record."""

    utterance_id: str
    seq: int
    speaker: Speaker
    start_ms: int
    end_ms: int
    text: str
    language_code: int | None
    language: str  # BCP-47 tag of language_code; "und" when unknown
    final: bool
    piece_count: int


@dataclass(slots=True)
class _Open:
    seq: int
    speaker: Speaker
    timestamp_ms: int
    start_ms: int
    end_ms: int
    end_estimated: bool  # the last piece's end was estimated: a next piece may cut it back
    end_before_last_ms: int  # the end before the last piece: a cut-back never goes below it
    last_piece_start_ms: int
    language_code: int | None
    text: str = ""
    pieces: int = 0
    arrived_ms: int | None = None  # the media clock when the last piece arrived (None: unknown)


def _piece_times(piece: TranscriptPiece) -> tuple[int, int, bool]:
    start = piece.start_ms if piece.start_ms is not None else piece.timestamp_ms
    if piece.end_ms is not None:
        return start, max(start, piece.end_ms), False
    words = max(1, len(piece.text.split()))
    return start, start + words * ESTIMATE_MS_PER_WORD, True


def _spaced(code: int | None) -> bool:
    lang = language(code)
    return True if lang is None else lang.spaced


def _join(text: str, part: str, spaced: bool) -> str:
    if text and part and spaced and not text[-1].isspace() and not part[0].isspace():
        return text + " " + part
    return text + part


class UtteranceAssembler:
    """Merges one stream's transcript pieces into utterances.

    Times: `start_ms` is the piece's `start_time`, else its `timestamp`; `end_ms` its `end_time`
    (raised to the start), else start + `ESTIMATE_MS_PER_WORD` per word, cut back to the next piece's
    start. An utterance spans its pieces; starts are kept monotone per stream (cues stay in order).

    Merge rule: at most one open utterance per stream. A piece extends it when it has the same speaker
    (participant and channel), the same language when it names one, belongs to it (the same Zoom
    `timestamp`, or starts at most `max_pause_ms` after its end), and the result stays within
    `max_duration_ms` and `max_chars`; otherwise the open one is closed and the piece opens the next.
    `tick(media_ms)` and `flush()` close it too. Text: pieces joined in arrival order with one space
    (none where a side has whitespace or the language is written without spaces); nothing is dropped
    or repeated. With `partials=True` the open utterance is emitted after each piece with
    `final=False`; its final supersedes them. Ids `<rtms_stream_id>/<seq>` are stable on re-runs;
    after a restart, construct with the last emitted `next_seq` and `last_start_ms` and re-feed from
    the open utterance's first piece. Memory: one open utterance, bounded by `max_chars`."""

    def __init__(
        self,
        rtms_stream_id: str,
        *,
        max_pause_ms: int = DEFAULT_MAX_PAUSE_MS,
        max_duration_ms: int = DEFAULT_MAX_DURATION_MS,
        max_chars: int = DEFAULT_MAX_CHARS,
        partials: bool = False,
        next_seq: int = 0,
        last_start_ms: int | None = None,
    ) -> None:
        if max_pause_ms < 0 or max_duration_ms <= 0 or max_chars <= 0:
            raise ValueError("max_pause_ms must be >= 0, max_duration_ms and max_chars > 0")
        self.rtms_stream_id = rtms_stream_id
        self.max_pause_ms = max_pause_ms
        self.max_duration_ms = max_duration_ms
        self.max_chars = max_chars
        self.partials = partials
        self._next_seq = next_seq
        self._last_start = last_start_ms
        self._closed_last_start = last_start_ms
        self._open: _Open | None = None
        self.pieces_in = 0
        self.utterances_out = 0

    @property
    def open_piece_count(self) -> int:
        """Pieces merged into the open utterance (the caller must not commit past the first)."""
        return 0 if self._open is None else self._open.pieces

    def resume_state(self) -> tuple[int, int | None]:
        """(next_seq, last_start_ms) to construct a replacement assembler with after a restart
        that re-feeds from the first piece of the open utterance (or the next piece, if none)."""
        if self._open is None:
            return self._next_seq, self._closed_last_start
        return self._open.seq, self._closed_last_start

    def push(self, piece: TranscriptPiece, arrived_ms: int | None = None) -> list[Utterance]:
        """Take the next piece; return the utterances it settles (and a partial, if enabled).
        `arrived_ms`: the stream's media clock when the piece arrived, if known (see `tick`)."""
        self.pieces_in += 1
        start, end, estimated = _piece_times(piece)
        out: list[Utterance] = []
        current = self._open
        if (
            current is not None
            and current.end_estimated
            and current.last_piece_start_ms <= start < current.end_ms
        ):
            current.end_ms = max(current.end_before_last_ms, start)  # the neighbour bounds an estimate
        if current is not None and not self._extends(current, piece, start, end):
            out.append(self._close())
            current = None
        speaker = Speaker(piece.participant_id, piece.participant_name, piece.channel_id)
        if current is None:
            if self._last_start is not None and start < self._last_start:
                end = max(end, self._last_start)
                start = self._last_start
            current = self._open = _Open(
                self._next_seq,
                speaker,
                piece.timestamp_ms,
                start,
                end,
                estimated,
                start,
                start,
                piece.language_code,
            )
            self._next_seq += 1
            self._last_start = start
        else:
            current.end_before_last_ms = current.end_ms
            current.end_ms = max(current.end_ms, end)
            current.end_estimated = estimated
            current.last_piece_start_ms = start
            if current.language_code is None:
                current.language_code = piece.language_code
            if current.speaker.participant_name is None and piece.participant_name is not None:
                current.speaker = speaker
        current.text = _join(current.text, piece.text, _spaced(current.language_code))
        current.pieces += 1
        current.arrived_ms = arrived_ms
        if self.partials:
            out.append(self._snapshot(current, final=False))
        return out

    def tick(self, media_ms: int) -> list[Utterance]:
        """The stream's media clock has reached `media_ms` (a progress mark): close the open
        utterance once media time has passed both its end and the arrival of its last piece by
        more than `max_pause_ms`. (Zoom sends a piece after its words, up to seconds later: timed
        from the end alone, every piece would close its utterance before the next one came.)"""
        current = self._open
        if current is None:
            return []
        since = current.end_ms if current.arrived_ms is None else max(current.end_ms, current.arrived_ms)
        if media_ms - since > self.max_pause_ms:
            return [self._close()]
        return []

    def flush(self) -> list[Utterance]:
        """End of stream: close the open utterance, if any."""
        return [self._close()] if self._open is not None else []

    def _extends(self, current: _Open, piece: TranscriptPiece, start: int, end: int) -> bool:
        if (piece.participant_id, piece.channel_id) != (
            current.speaker.participant_id,
            current.speaker.channel_id,
        ):
            return False
        if piece.language_code is not None and current.language_code not in (None, piece.language_code):
            return False
        same_utterance = piece.timestamp_ms == current.timestamp_ms
        if not same_utterance and start - current.end_ms > self.max_pause_ms:
            return False
        if max(current.end_ms, end) - current.start_ms > self.max_duration_ms:
            return False
        return len(_join(current.text, piece.text, _spaced(current.language_code))) <= self.max_chars

    def _close(self) -> Utterance:
        current = self._open
        assert current is not None
        self._open = None
        self._closed_last_start = current.start_ms
        self.utterances_out += 1
        return self._snapshot(current, final=True)

    def _snapshot(self, current: _Open, final: bool) -> Utterance:
        return Utterance(
            utterance_id=f"{self.rtms_stream_id}/{current.seq}",
            seq=current.seq,
            speaker=current.speaker,
            start_ms=current.start_ms,
            end_ms=current.end_ms,
            text=current.text,
            language_code=current.language_code,
            language=language_tag(current.language_code),
            final=final,
            piece_count=current.pieces,
        )
