"""The pure parts of chat: the emulator's chat script, the client's chat socket, ingest's privacy and
limit rule, the processors' chat lane and record, the files' line format and the interleaving of chat
into `transcript.txt`."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

import rtms_protocol as proto
from emulator.conversation import chat_messages
from ingest.backend import ChatData, DeadLetterData, Participant, StreamSession
from ingest.chat_record import ChatRefused, chat_content
from ingest.rtms_client import SIGNALING, ClientConfig, ClientPhase, Connect, Deliver, RtmsClient, Send
from processors.chat import chat_message
from processors.lanes import LaneConfig, PartitionCore
from rtmsflow.settings import Settings
from schemas.codec import Codec
from schemas.limits import MAX_CHAT_TEXT_BYTES, clip_text
from schemas.markers import marker_headers
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


def _ready(config: ClientConfig, chat_status: int) -> tuple[RtmsClient, dict[str, int], list[dict[str, Any]]]:
    """A client through its handshakes, Zoom answering the chat socket's with `chat_status`; the
    data handshake requests it sent."""
    client = RtmsClient(StreamSession("meet==", "s-1", "ws://127.0.0.1:9/sig"), config, random.Random(7))
    conns: dict[str, int] = {}
    hellos: list[dict[str, Any]] = []

    def run(actions: list[Any]) -> list[Any]:
        for action in actions:
            if isinstance(action, Connect):
                conns[action.channel] = action.conn
            elif isinstance(action, Send) and action.channel != SIGNALING:
                hellos.append(json.loads(action.text))
        return actions

    run(client.start(100.0))
    run(client.on_open(SIGNALING, conns[SIGNALING], 100.0))
    urls = {key: f"ws://127.0.0.1:9/media/{key}" for key in ("audio", "video", "transcript", "chat")}
    answer = {"msg_type": 2, "status_code": 0, "media_server": {"server_urls": urls}}
    for connect in [a for a in run(client.on_message(SIGNALING, conns[SIGNALING], json.dumps(answer), 100.0, 1))
                    if isinstance(a, Connect)]:  # fmt: skip
        run(client.on_open(connect.channel, connect.conn, 100.0))
        status = chat_status if connect.channel == "chat" else 0
        run(
            client.on_message(
                connect.channel, connect.conn, json.dumps({"msg_type": 4, "status_code": status}), 100.0, 1
            )
        )
    return client, conns, hellos


def test_the_client_asks_for_chat_on_its_own_socket_and_delivers_typed_messages() -> None:
    client, conns, hellos = _ready(ClientConfig("cid", "secret", chat=True), 0)
    assert client.phase is ClientPhase.READY
    assert [h["media_type"] for h in hellos] == [1, 2, 8, 16]  # audio, video, transcript, chat
    private = proto.ChatFrame(T0, "psst", 7, "Ann", "m-1", (proto.Participant(8, "Bob"),))
    (deliver,) = client.on_message("chat", conns["chat"], proto.encode(private), 101.0, 2)
    assert isinstance(deliver, Deliver)
    assert deliver.item == ChatData(T0, "psst", 7, "Ann", "m-1", (Participant(8, "Bob"),))
    bad = '{"msg_type":18,"content":{"data":"x","timestamp":1,"recipients":7}}'
    (letter,) = client.on_message("chat", conns["chat"], bad, 101.0, 2)
    assert isinstance(letter, Deliver) and isinstance(letter.item, DeadLetterData)
    assert letter.item.error == "ProtocolError.bad_field"
    # control: chat off, no chat socket
    _, conns_off, hellos_off = _ready(ClientConfig("cid", "secret", chat=False), 0)
    assert "chat" not in conns_off and [h["media_type"] for h in hellos_off] == [1, 2, 8]


def test_an_app_without_the_chat_scope_goes_on_without_chat() -> None:
    client, _, hellos = _ready(
        ClientConfig("cid", "secret", chat=True), int(proto.StatusCode.MEDIA_TYPE_CHAT_NOT_SUPPORT)
    )
    assert 16 in [h["media_type"] for h in hellos] and client.phase is ClientPhase.READY


def test_the_chat_lane_keeps_arrival_order_drops_repeats_and_forwards_the_marker() -> None:
    settings = Settings()
    codec = Codec(settings.schema_registry_url, settings.topic_prefix)
    core = PartitionCore(0, codec.decode, LaneConfig(300))
    stamp = {"meeting_uuid": "m==", "rtms_stream_id": "s1", "stream_kind": "CHAT", "stream_started_ms": T0,
             "ingest_epoch": 1, "received_at_ms": T0}  # fmt: skip
    sent = [(3000, "third by the clock, first sent"), (1000, "first by the clock"), (2000, "second")]
    raws = [{**stamp, "participant_id": 7, "timestamp_ms": T0 + at, "ingest_seq": n, "text": text}
            for n, (at, text) in enumerate(sent)]  # fmt: skip
    raws.insert(2, {**raws[0], "ingest_seq": 99})  # a repeat (a takeover's re-send)
    out = []
    for offset, raw in enumerate(raws):
        out += core.feed("rtms.raw.chat", offset, b"m==", codec.encode("rtms.raw.chat", raw), [])
    end = {**stamp, "topic": "rtms.raw.chat", "ended": "STOPPED", "stop_reason": 6, "last_timestamp_ms": T0 + 2000,
           "counts": {"CHAT": 4}, "complete": True}  # fmt: skip
    del end["stream_kind"], end["received_at_ms"]
    out += core.feed("rtms.raw.chat", len(raws), b"m==", None, list(marker_headers(end)))
    chat = [o.value for o in out if o.topic == "rtms.chat" and o.value is not None]
    assert [c["text"] for c in chat] == [text for _, text in sent]  # as sent, not by timestamp
    assert [c["chat_id"] for c in chat] == ["s1/0", "s1/1", "s1/2"]
    (marker,) = [o for o in out if o.topic == "rtms.chat" and o.value is None]
    assert marker.end is not None and marker.end["counts"] == {"CHAT": 3, "DUPLICATE": 1, "LATE": 0}
