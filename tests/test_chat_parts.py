"""The pure parts of chat: the emulator's chat script, ingest's privacy and limit rule, the ordered
record, the files' line format and the interleaving of chat into `transcript.txt`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from emulator.conversation import chat_messages
from ingest.backend import ChatData, Participant
from ingest.chat_record import ChatRefused, chat_content
from processors.chat import chat_message
from schemas.limits import MAX_CHAT_TEXT_BYTES, clip_text
from sinks.chat_files import ChatLine, ChatWriter, format_chat_line, iter_chat_jsonl, write_interleaved
from sinks.transcript_files import TranscriptWriter, Utterance

T0 = 1_747_316_541_000  # 2025-05-15T13:42:21.000Z


def test_the_chat_script_is_seed_determined_in_time_order_with_public_and_private_lines() -> None:
    one = list(chat_messages(2, 3, 60_000))
    assert one == list(chat_messages(2, 3, 60_000))
    assert one != list(chat_messages(3, 3, 60_000))  # control: another seed, another script
    assert [m.offset_ms for m in one] == sorted(m.offset_ms for m in one) and one[-1].offset_ms < 60_000
    assert any(m.recipients for m in one) and any(not m.recipients for m in one)
    assert all(m.sender not in m.recipients and all(0 <= r < 3 for r in m.recipients) for m in one)
    assert not any(m.recipients for m in chat_messages(2, 1, 60_000))  # alone: nobody to whisper to


PRIVATE = ChatData(T0, "psst", 7, "Ann", "m-1", (Participant(8, "Bob"),))


def test_private_messages_are_kept_as_the_setting_says() -> None:
    public = chat_content(ChatData(T0, "hi all", 7, "Ann"), "drop")
    assert public == {
        "message_id": None,
        "text": "hi all",
        "text_truncated": False,
        "private": False,
        "recipients": [],
    }
    assert chat_content(PRIVATE, "drop") is None
    kept = chat_content(PRIVATE, "keep")
    assert kept is not None and kept["private"] and kept["recipients"] == [{"user_id": 8, "user_name": "Bob"}]
    unaddressed = chat_content(PRIVATE, "unaddressed")
    assert unaddressed is not None and unaddressed["private"] and unaddressed["recipients"] == []


def test_long_text_is_cut_at_a_character_and_bad_input_refused() -> None:
    text, cut = clip_text("a" * (MAX_CHAT_TEXT_BYTES - 1) + "€", MAX_CHAT_TEXT_BYTES)  # € is 3 bytes
    assert cut and text == "a" * (MAX_CHAT_TEXT_BYTES - 1)
    assert clip_text("€" * 10, 30) == ("€" * 10, False)  # control: exactly at the limit, kept whole
    with pytest.raises(ChatRefused) as bad:
        chat_content(ChatData(T0, "x\ud800", 7, "Ann"), "keep")
    assert bad.value.error == "InvalidText"
    with pytest.raises(ChatRefused) as forged:
        chat_content(ChatData(T0, "x", 7, "Ann", None, tuple(Participant(i) for i in range(1001))), "keep")
    assert forged.value.error == "TooManyRecipients"
    with pytest.raises(ChatRefused) as long_id:
        chat_content(ChatData(T0, "x", 7, "Ann", "i" * 65), "keep")
    assert long_id.value.error == "InvalidMessageId"


def test_the_ordered_record_numbers_the_message_in_its_stream() -> None:
    raw = {"meeting_uuid": "m==", "rtms_stream_id": "s1", "stream_kind": "CHAT", "participant_id": 7,
           "participant_name": "Ann", "timestamp_ms": T0, "stream_started_ms": T0 - 1000, "ingest_epoch": 3,
           "ingest_seq": 9, "received_at_ms": T0 + 4, "message_id": "m-1", "text": "psst", "text_truncated": False,
           "private": True, "recipients": [{"user_id": 8, "user_name": "Bob"}]}  # fmt: skip
    record = chat_message(raw, 4)
    assert (record["chat_id"], record["seq"], record["sender_id"], record["sender_name"]) == (
        "s1/4",
        4,
        7,
        "Ann",
    )
    assert record["recipients"] == [{"user_id": 8, "user_name": "Bob"}] and "ingest_seq" not in record


def line(seq: int, offset_ms: int, text: str, *, to: list[dict[str, object]] | None = None) -> ChatLine:
    return ChatLine.from_record({"chat_id": f"s/{seq}", "seq": seq, "sender_id": 7, "sender_name": "Ann",
                                 "timestamp_ms": T0 + offset_ms, "text": text, "private": to is not None,
                                 "recipients": to or []})  # fmt: skip


def test_chat_lines_take_the_transcript_form_and_name_private_recipients() -> None:
    assert format_chat_line(line(0, 0, "two\nlines")) == "[2025-05-15T13:42:21.000Z] Ann (chat): two lines\n"
    to = [{"user_id": 8, "user_name": "Bob"}, {"user_id": 9, "user_name": None}]
    assert format_chat_line(line(1, 1500, "psst", to=to)) == (
        "[2025-05-15T13:42:22.500Z] Ann (chat, private to Bob, Participant 9): psst\n"
    )
    assert format_chat_line(line(2, 0, "x", to=[])) == "[2025-05-15T13:42:21.000Z] Ann (chat, private): x\n"


def test_jsonl_round_trips_and_interleaving_merges_by_time_speech_first(tmp_path: Path) -> None:
    writer = ChatWriter(tmp_path / "chat.txt", tmp_path / "chat.jsonl")
    lines = [
        line(0, 500, "early"),
        line(1, 2000, "tie"),
        line(2, 9000, "late", to=[{"user_id": 8, "user_name": "Bob"}]),
    ]
    for c in lines:
        writer.add(c)
    writer.close()
    writer.close()  # idempotent
    assert list(iter_chat_jsonl(tmp_path / "chat.jsonl")) == lines
    assert json.loads((tmp_path / "chat.jsonl").read_text().splitlines()[2])["recipients"] == [
        {"user_id": 8, "user_name": "Bob"}
    ]
    speech = TranscriptWriter(tmp_path / "transcript.txt", tmp_path / "transcript.jsonl")
    for n, (start, final) in enumerate([(0, True), (2000, True), (4000, False), (5000, True)]):
        speech.add(Utterance(f"s/{n}", 8, "Bob", None, T0 + start, T0 + start + 900, f"u{n}", final=final))
    speech.close()
    out = tmp_path / "merged.txt"
    assert write_interleaved(tmp_path / "transcript.jsonl", tmp_path / "chat.jsonl", out) == 6
    assert [text.split("] ", 1)[1] for text in out.read_text().splitlines()] == [
        "Bob: u0",
        "Ann (chat): early",
        "Bob: u1",  # speech before chat at the same ms
        "Ann (chat): tie",
        "Bob: u3",  # the partial u2 is not a transcript line
        "Ann (chat, private to Bob): late",
    ]
