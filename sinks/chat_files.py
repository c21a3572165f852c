"""A stream's chat files: `chat.jsonl` and `chat.txt` streamed live, and chat interleaved into `transcript.txt`.

TXT lines take the transcript's form, `[<UTC time>] <sender> (chat[, private to <names>]): <text>`;
jsonl lines are the `rtms.chat` record without its stream fields. `write_interleaved` merges the final
utterances and the chat by time into one TXT (ties: speech first), streaming both jsonl files."""

from __future__ import annotations

import heapq
import json
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sinks.transcript_files import (
    LineFiles,
    TranscriptError,
    Utterance,
    _open_text,
    _sync,
    format_txt_line,
    format_utc_ms,
    iter_json_objects,
    iter_jsonl,
    one_line,
)

CHAT_TXT_NAME = "chat.txt"
CHAT_JSONL_NAME = "chat.jsonl"
_DEFAULTS: dict[str, Any] = {
    "sender_id": 0,
    "sender_name": None,
    "message_id": None,
    "private": False,
    "text_truncated": False,
}


@dataclass(frozen=True)
class Recipient:
    """Someone a private message went to."""

    user_id: int
    user_name: str | None = None


@dataclass(frozen=True)
class ChatLine:
    """One chat message, time in ms since the epoch (RTMS clock)."""

    chat_id: str
    seq: int
    sender_id: int
    sender_name: str | None
    timestamp_ms: int
    text: str
    message_id: str | None = None
    private: bool = False
    recipients: tuple[Recipient, ...] = field(default=())
    text_truncated: bool = False

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> ChatLine:
        """From an `rtms.chat` value or a `chat.jsonl` object."""
        types: dict[str, tuple[type, ...]] = {
            "chat_id": (str,),
            "seq": (int,),
            "sender_id": (int,),
            "sender_name": (str, type(None)),
            "timestamp_ms": (int,),
            "text": (str,),
            "message_id": (str, type(None)),
            "private": (bool,),
            "text_truncated": (bool,),
        }
        values: dict[str, Any] = {}
        for name, allowed in types.items():
            if name not in record and name not in _DEFAULTS:
                raise TranscriptError("missing", name)
            value = record.get(name, _DEFAULTS.get(name))
            if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
                raise TranscriptError(f"expected {'/'.join(t.__name__ for t in allowed)}", name)
            values[name] = value
        recipients = record.get("recipients") or []
        if not isinstance(recipients, list):
            raise TranscriptError("expected list", "recipients")
        people = []
        for r in recipients:
            if not isinstance(r, Mapping) or not isinstance(r.get("user_id"), int):
                raise TranscriptError("expected {user_id, user_name}", "recipients")
            user_name = r.get("user_name")
            people.append(Recipient(r["user_id"], user_name if isinstance(user_name, str) else None))
        return cls(recipients=tuple(people), **values)

    def to_json_line(self) -> str:
        """One jsonl line (sorted keys, no spaces, UTF-8 text kept as is), ending in a newline."""
        record = asdict(self)
        record["recipients"] = [asdict(r) for r in self.recipients]
        return json.dumps(record, sort_keys=True, ensure_ascii=False, separators=(",", ":")) + "\n"


def _person(name: str | None, user_id: int) -> str:
    label = one_line(name or "").strip()
    if label:
        return label
    return f"Participant {user_id}" if user_id else "Unknown participant"


def format_chat_line(line: ChatLine) -> str:
    """`[<UTC time>] <sender> (chat): <text>`, `(chat, private to A, B)` or `(chat, private)`, and a newline."""
    tag = "chat"
    if line.private:
        names = ", ".join(_person(r.user_name, r.user_id) for r in line.recipients)
        tag = f"chat, private to {names}" if names else "chat, private"
    sender = _person(line.sender_name, line.sender_id)
    return f"[{format_utc_ms(line.timestamp_ms)}] {sender} ({tag}): {one_line(line.text)}\n"


def iter_chat_jsonl(path: Path) -> Iterator[ChatLine]:
    """Stream the messages of a `chat.jsonl` back, one line at a time."""
    return (ChatLine.from_record(record) for record in iter_json_objects(path))


def write_interleaved(transcript_jsonl: Path, chat_jsonl: Path, txt_path: Path) -> int:
    """Rewrite `txt_path`: the final utterances and the chat messages merged by time (an utterance
    by its start; speech before chat at the same ms; each kept in its own order). Returns the lines."""
    speech = (
        (u.start_ms, 0, n, format_txt_line(u)) for n, u in enumerate(_finals(iter_jsonl(transcript_jsonl)))
    )
    chat = ((c.timestamp_ms, 1, n, format_chat_line(c)) for n, c in enumerate(iter_chat_jsonl(chat_jsonl)))
    count = 0
    with _open_text(txt_path) as txt:
        for *_, text in heapq.merge(speech, chat):
            txt.write(text)
            count += 1
        _sync(txt)
    return count


def _finals(utterances: Iterator[Utterance]) -> Iterator[Utterance]:
    return (u for u in utterances if u.final)


class ChatWriter(LineFiles):
    """`chat.txt` and `chat.jsonl`, appended as messages arrive."""

    def __init__(self, txt_path: Path, jsonl_path: Path) -> None:
        super().__init__(txt_path, jsonl_path)
        self.messages = 0

    def add(self, line: ChatLine) -> None:
        self.append(line.to_json_line(), format_chat_line(line))
        self.messages += 1
