"""sinks.transcript_files: the TXT line format, jsonl, and VTT/SRT that real parsers read back."""

from __future__ import annotations

import html
import json
from datetime import timedelta
from pathlib import Path

import pytest
import srt
import webvtt
from hypothesis import given, settings
from hypothesis import strategies as st

from sinks.transcript_files import (
    TranscriptError,
    TranscriptWriter,
    Utterance,
    cues_in_start_order,
    format_txt_line,
    format_utc_ms,
    iter_jsonl,
    one_line,
    speaker_label,
    write_captions,
)

ORIGIN_MS = 1_747_316_541_000  # 2025-05-15T13:42:21.000Z


def utt(
    n: int,
    start_off_ms: int,
    dur_ms: int,
    text: str,
    name: str | None = "John Doe",
    pid: int = 16778240,
    final: bool = True,
) -> Utterance:
    return Utterance(
        utterance_id=f"m:{pid}:{ORIGIN_MS + start_off_ms}",
        participant_id=pid,
        participant_name=name,
        channel_id=None,
        start_ms=ORIGIN_MS + start_off_ms,
        end_ms=ORIGIN_MS + start_off_ms + dur_ms,
        text=text,
        language="en-US",
        final=final,
    )


def write_all(directory: Path, utterances: list[Utterance]) -> dict[str, Path]:
    paths = {ext: directory / f"transcript.{ext}" for ext in ("txt", "jsonl", "vtt", "srt")}
    with TranscriptWriter(paths["txt"], paths["jsonl"]) as writer:
        for u in utterances:
            writer.add(u)
    write_captions(paths["jsonl"], paths["vtt"], paths["srt"], ORIGIN_MS)
    return paths


def test_txt_line_is_exactly_the_seed_format() -> None:
    assert format_txt_line(utt(0, 0, 1500, "Hello everyone")) == (
        "[2025-05-15T13:42:21.000Z] John Doe: Hello everyone\n"
    )
    assert format_utc_ms(ORIGIN_MS + 3_600_000 + 7) == "2025-05-15T14:42:21.007Z"
    assert format_utc_ms(0) == "1970-01-01T00:00:00.000Z"


def test_unknown_speakers_get_a_stable_fallback_name() -> None:
    assert format_txt_line(utt(0, 250, 10, "hi", name=None)) == (
        "[2025-05-15T13:42:21.250Z] Participant 16778240: hi\n"
    )
    assert format_txt_line(utt(0, 0, 10, "hi", name="  ")).split("] ")[1] == "Participant 16778240: hi\n"
    anonymous = Utterance("u", 0, None, None, ORIGIN_MS, ORIGIN_MS + 1, "hi")
    assert "Unknown speaker: hi" in format_txt_line(anonymous)
    channel = Utterance("u", 0, None, "ch-9", ORIGIN_MS, ORIGIN_MS + 1, "hi")
    assert "Channel ch-9: hi" in format_txt_line(channel)


def test_txt_is_appended_live_and_holds_final_utterances_only(tmp_path: Path) -> None:
    writer = TranscriptWriter(tmp_path / "t.txt", tmp_path / "t.jsonl")
    writer.add(utt(0, 0, 1000, "Hello everyone"))
    # Flushed per utterance: a reader sees the line before close.
    assert (tmp_path / "t.txt").read_text() == "[2025-05-15T13:42:21.000Z] John Doe: Hello everyone\n"
    writer.add(utt(1, 1000, 500, "interim words", final=False))
    writer.add(utt(2, 2000, 500, "Second line", name="Jane Roe", pid=7))
    writer.close()
    assert (tmp_path / "t.txt").read_text().splitlines() == [
        "[2025-05-15T13:42:21.000Z] John Doe: Hello everyone",
        "[2025-05-15T13:42:23.000Z] Jane Roe: Second line",
    ]
    assert [u.text for u in iter_jsonl(tmp_path / "t.jsonl")] == [
        "Hello everyone",
        "interim words",
        "Second line",
    ]
    with pytest.raises(TranscriptError):
        writer.add(utt(3, 3000, 10, "late"))


def test_jsonl_has_sorted_keys_and_round_trips(tmp_path: Path) -> None:
    original = utt(0, 0, 1000, 'Grüße <&> "quoted"\nnext')
    paths = write_all(tmp_path, [original])
    line = paths["jsonl"].read_text(encoding="utf-8").splitlines()[0]
    keys = list(json.loads(line))
    assert keys == sorted(keys)
    assert "Grüße" in line  # UTF-8, not \\u escapes
    assert list(iter_jsonl(paths["jsonl"])) == [original]


def test_vtt_parses_with_webvtt_py_with_cue_times_voices_and_texts(tmp_path: Path) -> None:
    paths = write_all(
        tmp_path,
        [utt(0, 1000, 1500, "Hello everyone"), utt(1, 3_725_250, 750, "Much later", name="Jane Roe", pid=7)],
    )
    captions = webvtt.read(str(paths["vtt"])).captions
    assert [(c.start, c.end, c.voice, c.text) for c in captions] == [
        ("00:00:01.000", "00:00:02.500", "John Doe", "Hello everyone"),
        ("01:02:05.250", "01:02:06.000", "Jane Roe", "Much later"),
    ]


def test_srt_parses_with_srt_with_cue_times_and_speaker_named(tmp_path: Path) -> None:
    paths = write_all(
        tmp_path,
        [utt(0, 1000, 1500, "Hello everyone"), utt(1, 3_725_250, 750, "Much later", name="Jane Roe", pid=7)],
    )
    subs = list(srt.parse(paths["srt"].read_text(encoding="utf-8")))
    assert [(s.index, s.start, s.end, s.content) for s in subs] == [
        (1, timedelta(seconds=1), timedelta(seconds=2.5), "John Doe: Hello everyone"),
        (
            2,
            timedelta(hours=1, minutes=2, seconds=5.25),
            timedelta(hours=1, minutes=2, seconds=6),
            "Jane Roe: Much later",
        ),
    ]


def test_markup_characters_and_newlines_are_escaped_in_captions(tmp_path: Path) -> None:
    text = "if a < b && c > d -->\nthen\r\n<i>not italic</i>"
    paths = write_all(tmp_path, [utt(0, 0, 1000, text, name="<Bob & Co>")])
    raw = paths["vtt"].read_text(encoding="utf-8")
    assert (
        "<v &lt;Bob &amp; Co&gt;>if a &lt; b &amp;&amp; c &gt; d --&gt; then &lt;i&gt;not italic&lt;/i&gt;\n"
        in raw
    )
    (caption,) = webvtt.read(str(paths["vtt"])).captions
    assert html.unescape(caption.text) == "if a < b && c > d --> then <i>not italic</i>"
    assert html.unescape(caption.voice) == "<Bob & Co>"
    (sub,) = srt.parse(paths["srt"].read_text(encoding="utf-8"))
    assert sub.content == "<Bob & Co>: if a < b && c > d --> then <i>not italic</i>"
    assert paths["txt"].read_text().count("\n") == 1


def test_captions_are_in_start_order_and_skip_interim_utterances(tmp_path: Path) -> None:
    # B closes first but started later; the interim one never becomes a cue.
    paths = write_all(
        tmp_path, [utt(0, 5000, 500, "B"), utt(1, 1000, 6000, "A"), utt(2, 2000, 100, "interim", final=False)]
    )
    captions = webvtt.read(str(paths["vtt"])).captions
    assert [c.text for c in captions] == ["A", "B"]
    assert [s.index for s in srt.parse(paths["srt"].read_text())] == [1, 2]


def test_reordering_is_bounded_by_its_window() -> None:
    stream = [utt(0, 3000, 1, "c"), utt(1, 2000, 1, "b"), utt(2, 1000, 1, "a")]
    assert [u.text for u in cues_in_start_order(iter(stream), window=3)] == ["a", "b", "c"]
    # With a window of 1, the heap can hold back only one cue: the earliest cannot overtake two.
    assert [u.text for u in cues_in_start_order(iter(stream), window=1)] == ["b", "a", "c"]


def test_cue_times_are_clamped_and_never_empty(tmp_path: Path) -> None:
    before_origin = utt(0, -500, 300, "early")  # ends before t = 0
    zero_length = utt(1, 2000, 0, "instant")
    paths = write_all(tmp_path, [before_origin, zero_length])
    captions = webvtt.read(str(paths["vtt"])).captions
    assert [(c.start, c.end) for c in captions] == [
        ("00:00:00.000", "00:00:00.001"),
        ("00:00:02.000", "00:00:02.001"),
    ]


def test_same_utterances_give_the_same_bytes(tmp_path: Path) -> None:
    utterances = [utt(i, i * 1700, 1200, f"line {i} é <x>") for i in range(20)]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = write_all(tmp_path / "a", utterances)
    second = write_all(tmp_path / "b", utterances)
    for ext in ("txt", "jsonl", "vtt", "srt"):
        assert first[ext].read_bytes() == second[ext].read_bytes(), ext
        assert first[ext].stat().st_size > 0


def test_records_of_the_contract_are_read_and_bad_ones_refused() -> None:
    record = {
        "utterance_id": "u1",
        "participant_id": 5,
        "participant_name": None,
        "channel_id": None,
        "start_time_ms": 10,
        "end_time_ms": 20,
        "text": "hi",
        "language": 9,
        "piece_count": 2,
    }
    parsed = Utterance.from_record(record)
    assert (parsed.start_ms, parsed.end_ms, parsed.language, parsed.final) == (10, 20, "9", True)
    with pytest.raises(TranscriptError) as missing:
        Utterance.from_record({k: v for k, v in record.items() if k != "start_time_ms"})
    assert missing.value.field == "start_ms"
    with pytest.raises(TranscriptError) as wrong:
        Utterance.from_record({**record, "participant_id": "5"})
    assert wrong.value.field == "participant_id"


def test_a_corrupt_jsonl_line_names_its_place(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text(utt(0, 0, 1, "ok").to_json_line() + "{not json\n")
    with pytest.raises(TranscriptError) as err:
        list(iter_jsonl(path))
    assert err.value.field == "t.jsonl:2"


texts = st.text(st.characters(blacklist_categories=("Cs", "Cc")) | st.sampled_from("\n\r<>&"), max_size=60)


@given(st.lists(st.tuples(texts, st.one_of(st.none(), texts)), min_size=1, max_size=8))
@settings(max_examples=60, deadline=None)
def test_any_text_and_name_survive_both_caption_formats(
    tmp_path_factory: pytest.TempPathFactory, items: list[tuple[str, str | None]]
) -> None:
    directory = tmp_path_factory.mktemp("captions")
    utterances = [utt(i, i * 1000, 900, text, name=name) for i, (text, name) in enumerate(items)]
    paths = write_all(directory, utterances)
    captions = webvtt.read(str(paths["vtt"])).captions
    subs = list(srt.parse(paths["srt"].read_text(encoding="utf-8")))
    assert len(captions) == len(subs) == len(utterances)
    for u, caption, sub in zip(utterances, captions, subs, strict=True):
        assert caption.raw_text.count("\n") == 0  # one cue line, whatever the text held
        assert html.unescape(caption.raw_text.split(">", 1)[1]) == one_line(u.text)
        assert html.unescape(caption.voice or "") == speaker_label(u)
        assert sub.start == timedelta(milliseconds=u.start_ms - ORIGIN_MS)
        assert sub.content.startswith(speaker_label(u))
