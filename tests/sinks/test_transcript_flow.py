"""The transcript sink through the real broker, and finalization by idle timeout (both sinks)."""

from __future__ import annotations

import dataclasses
import json

import pytest
import srt
import webvtt

from rtmsflow.settings import Settings
from schemas.topics import CHAT, TRANSCRIPT
from sinks.kinds import MEDIA_SINK, TRANSCRIPT_SINK
from tests.sinks.support import OrderedStream, produce, stream_dir, wait_for

pytestmark = pytest.mark.kafka
MEETING = "Qm9vay8rPQ=="


def conversation(stream_id: str) -> OrderedStream:
    stream = OrderedStream(MEETING, stream_id)
    stream.utterance(0, 1800, (16778240, "John Doe"), "Hello everyone")
    stream.utterance(2100, 4000, (16779264, "Jane Roe"), "Hi John, <glad> you & the team\nmade it")
    stream.chat(2500, (16779264, "Jane Roe"), "slides: https://example.com/deck\nsee p. 2")
    stream.chat(3000, (16778240, "John Doe"), "got it", recipients=[(16779264, "Jane Roe")])
    stream.utterance(4200, 5000, (16778240, "John Doe"), "Let's start.")
    return stream


TEXT = [TRANSCRIPT.name, CHAT.name]


async def test_transcript_files_have_the_seed_line_format_and_parse(
    settings: Settings, kafka_topics: dict[str, str]
) -> None:
    stream = conversation("77aa")
    stream.end(5000, markers=TEXT)
    await produce(settings, [stream], TEXT)
    d = stream_dir(settings, stream)
    async with TRANSCRIPT_SINK.service(settings, "g-tr"):
        await wait_for(lambda: (d / "transcript.manifest.json").is_file(), 60, "the transcript manifest")

    assert (d / "transcript.txt").read_text(encoding="utf-8").splitlines() == [
        "[2025-05-15T13:42:21.000Z] John Doe: Hello everyone",
        "[2025-05-15T13:42:23.100Z] Jane Roe: Hi John, <glad> you & the team made it",
        "[2025-05-15T13:42:25.200Z] John Doe: Let's start.",
    ]
    captions = webvtt.read(str(d / "transcript.vtt"))
    assert [(c.start, c.end) for c in captions] == [
        ("00:00:00.000", "00:00:01.800"),
        ("00:00:02.100", "00:00:04.000"),
        ("00:00:04.200", "00:00:05.000"),
    ]
    assert [c.voice for c in captions] == ["John Doe", "Jane Roe", "John Doe"]
    # one cue line, the markup characters escaped (webvtt-py hands the entities back as written)
    assert captions[1].text == "Hi John, &lt;glad&gt; you &amp; the team made it"
    subs = list(srt.parse((d / "transcript.srt").read_text(encoding="utf-8")))
    assert [s.content for s in subs] == [
        "John Doe: Hello everyone",
        "Jane Roe: Hi John, <glad> you & the team made it",
        "John Doe: Let's start.",
    ]
    assert subs[2].start.total_seconds() == 4.2
    lines = [json.loads(line) for line in (d / "transcript.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [u["utterance_id"] for u in lines] == ["77aa/0", "77aa/1", "77aa/2"]
    # the chat in the same line format, a private message naming whom it went to
    assert (d / "chat.txt").read_text(encoding="utf-8").splitlines() == [
        "[2025-05-15T13:42:23.500Z] Jane Roe (chat): slides: https://example.com/deck see p. 2",
        "[2025-05-15T13:42:24.000Z] John Doe (chat, private to Jane Roe): got it",
    ]
    chat = [json.loads(line) for line in (d / "chat.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [(c["chat_id"], c["private"], c["recipients"]) for c in chat] == [
        ("77aa/0", False, []),
        ("77aa/1", True, [{"user_id": 16779264, "user_name": "Jane Roe"}]),
    ]
    assert chat[0]["text"] == "slides: https://example.com/deck\nsee p. 2"  # the jsonl keeps it as sent
    manifest = json.loads((d / "transcript.manifest.json").read_text())
    assert manifest["streams"][0]["ended"] == {
        "how": "marker",
        "marker_counts": {"TRANSCRIPT": 3, "CHAT": 2},
        "received_counts": {"TRANSCRIPT": 3, "CHAT": 2},
        "matched": True,
        "stop_reason": None,
    }
    assert manifest["chat_messages"] == 2
    assert [f["name"] for f in manifest["files"]] == [
        "chat.jsonl",
        "chat.txt",
        "transcript.jsonl",
        "transcript.srt",
        "transcript.txt",
        "transcript.vtt",
    ]
    assert not (d / "manifest.json").exists()  # the media sink's manifest is not this sink's


async def test_a_marker_whose_counts_differ_says_it_did_not_match(
    settings: Settings, kafka_topics: dict[str, str]
) -> None:
    stream = conversation("88bb")
    stream.counts[TRANSCRIPT.name] = {"TRANSCRIPT": 4, "LATE": 2}  # one utterance never reached us
    stream.end(5000, markers=TEXT)
    await produce(settings, [stream], TEXT)
    d = stream_dir(settings, stream)
    async with TRANSCRIPT_SINK.service(settings, "g-tr2"):
        await wait_for(lambda: (d / "transcript.manifest.json").is_file(), 60, "the transcript manifest")
    summary = json.loads((d / "transcript.manifest.json").read_text())["streams"][0]
    assert summary["ended"]["matched"] is False and summary["late_count"] == 2


async def test_streams_without_a_marker_finalize_after_the_idle_timeout_and_say_so(
    settings: Settings, kafka_topics: dict[str, str]
) -> None:
    quick = dataclasses.replace(settings, sink_idle_timeout_s=1.0)
    ended = conversation("99cc")
    ended.end(5000, markers=TEXT)  # positive control: markers, finalized by them
    silent = conversation("99dd")
    silent.audio(0, bytes(640))
    silent.end(5000, markers=[])  # its ingest died: no marker on any topic
    await produce(settings, [ended, silent])
    d_ended, d_silent = stream_dir(settings, ended), stream_dir(settings, silent)
    async with TRANSCRIPT_SINK.service(quick, "g-idle-t"), MEDIA_SINK.service(quick, "g-idle-m"):
        await wait_for(
            lambda: all(
                p.is_file()
                for p in (
                    d_ended / "transcript.manifest.json",
                    d_silent / "transcript.manifest.json",
                    d_silent / "manifest.json",
                )
            ),
            60,
            "the manifests",
        )
    assert (
        json.loads((d_ended / "transcript.manifest.json").read_text())["streams"][0]["ended"]["how"]
        == "marker"
    )
    for name in ("transcript.manifest.json", "manifest.json"):
        ended_by = json.loads((d_silent / name).read_text())["streams"][0]["ended"]
        assert ended_by["how"] == "idle_timeout" and "matched" not in ended_by
    assert len((d_silent / "transcript.txt").read_text().splitlines()) == 3
    assert (d_silent / "audio.wav").stat().st_size == 44 + 5000 * 32  # the trailing gap made it to the end


async def test_chat_interleaved_into_the_transcript_by_time_when_asked(
    settings: Settings, kafka_topics: dict[str, str]
) -> None:
    stream = conversation("66ee")
    stream.end(5000, markers=TEXT)
    await produce(settings, [stream], TEXT)
    d = stream_dir(settings, stream)
    interleaving = dataclasses.replace(settings, sink_chat_in_transcript=True)
    async with TRANSCRIPT_SINK.service(interleaving, "g-tr-chat"):
        await wait_for(lambda: (d / "transcript.manifest.json").is_file(), 60, "the transcript manifest")
    assert (d / "transcript.txt").read_text(encoding="utf-8").splitlines() == [
        "[2025-05-15T13:42:21.000Z] John Doe: Hello everyone",
        "[2025-05-15T13:42:23.100Z] Jane Roe: Hi John, <glad> you & the team made it",
        "[2025-05-15T13:42:23.500Z] Jane Roe (chat): slides: https://example.com/deck see p. 2",
        "[2025-05-15T13:42:24.000Z] John Doe (chat, private to Jane Roe): got it",
        "[2025-05-15T13:42:25.200Z] John Doe: Let's start.",
    ]
    assert len((d / "chat.txt").read_text(encoding="utf-8").splitlines()) == 2  # written either way
