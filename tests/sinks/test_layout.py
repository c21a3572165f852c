"""sinks.layout: where a stream's files go, and the meeting/stream directory encoding."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sinks.layout import (
    MAX_COMPONENT_CHARS,
    LayoutError,
    StreamLayout,
    channel_wav_name,
    date_dir,
    date_dir_start_ms,
    decode_component,
    encode_component,
    parse_stream_dir,
    participant_wav_name,
)

SAFE_NAME = re.compile(r"^[a-z0-9_-]+$")
BASE64_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
# Ids short enough that every encoding fits MAX_COMPONENT_CHARS (a code point is at most 4 bytes -> 12 chars).
ids = st.one_of(
    st.text(alphabet=BASE64_CHARS, min_size=1, max_size=40),
    st.text(min_size=1, max_size=MAX_COMPONENT_CHARS // 12),
)


@given(ids)
@settings(max_examples=400, deadline=None)
def test_encoding_round_trips(value: str) -> None:
    assert decode_component(encode_component(value)) == value


@given(ids)
@settings(max_examples=400, deadline=None)
def test_encoded_names_hold_only_safe_characters(value: str) -> None:
    name = encode_component(value)
    assert SAFE_NAME.match(name), name
    assert not name.startswith(".")
    assert len(name) <= MAX_COMPONENT_CHARS


@given(ids, ids)
@settings(max_examples=400, deadline=None)
def test_different_ids_never_share_a_directory_even_ignoring_case(a: str, b: str) -> None:
    # Case-insensitive file systems fold names: the encoded names must differ after folding too.
    if a != b:
        assert encode_component(a).casefold() != encode_component(b).casefold()
    else:
        assert encode_component(a) == encode_component(b)


def test_zoom_uuids_that_underscore_replacement_merges_stay_apart() -> None:
    # The seed's `replace("/", "_").replace("+", "_")` gives both of these the same directory.
    a, b = "4444AAAiAAAAAiAiAiiAii/=", "4444AAAiAAAAAiAiAiiAii+="
    assert a.replace("/", "_").replace("+", "_") == b.replace("/", "_").replace("+", "_")
    assert encode_component(a) != encode_component(b)
    assert encode_component("aB==") != encode_component("Ab==")
    assert encode_component("4444AAAiAAAAAiAiAiiAii/=") == "4444_a_a_ai_a_a_a_a_ai_ai_aii_aii-2f-3d"


def test_hex_stream_ids_stay_readable() -> None:
    assert encode_component("03049b4a0f8d4e1b9c2f7a1e5d6b8c90") == "03049b4a0f8d4e1b9c2f7a1e5d6b8c90"


def test_windows_reserved_names_are_escaped_and_still_decode() -> None:
    for reserved in ("con", "nul", "com1", "lpt9", "aux", "prn"):
        name = encode_component(reserved)
        assert name != reserved
        assert decode_component(name) == reserved
    assert encode_component("cons") == "cons"  # positive control: only the exact words


def test_names_that_no_id_encodes_to_are_refused() -> None:
    for bad in ("", "A", "_1", "-2", "-zz", "a.b", "-61", "-ff"):
        with pytest.raises(LayoutError):
            decode_component(bad)
    assert decode_component("_a-2f") == "A/"  # positive control


def test_too_long_and_empty_ids_are_refused_not_truncated() -> None:
    with pytest.raises(LayoutError):
        encode_component("")
    with pytest.raises(LayoutError):
        encode_component("/" * (MAX_COMPONENT_CHARS // 3 + 1))
    assert len(encode_component("/" * (MAX_COMPONENT_CHARS // 3))) <= MAX_COMPONENT_CHARS


def test_date_dir_is_the_utc_start_date() -> None:
    assert date_dir(1747316541000) == "2025-05-15"  # 2025-05-15T13:42:21Z
    assert date_dir(1747353599999) == "2025-05-15"  # last millisecond of that UTC day
    assert date_dir(1747353600000) == "2025-05-16"
    assert date_dir(0) == "1970-01-01"


@given(st.integers())
def test_date_dir_never_raises_anything_but_layout_error(start_ms: int) -> None:
    try:
        name = date_dir(start_ms)
    except LayoutError as exc:
        assert exc.reason == "stream start time out of range"
        assert not -62_135_596_800_000 <= start_ms < 253_402_300_800_000  # years 1 to 9999 have a date
    else:
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", name)


def test_stream_layout_keeps_streams_of_one_meeting_apart(tmp_path: Path) -> None:
    first = StreamLayout(tmp_path, "aB/+cd==", "stream-1", 1747316541000)
    second = StreamLayout(tmp_path, "aB/+cd==", "stream-2", 1747316541000)
    assert first.meeting_dir == second.meeting_dir
    assert first.stream_dir != second.stream_dir
    assert (
        first.path("audio.wav") == tmp_path / "2025-05-15" / "a_b-2f-2bcd-3d-3d" / "stream-2d1" / "audio.wav"
    )


def test_stream_layout_refuses_names_that_leave_the_stream_dir(tmp_path: Path) -> None:
    layout = StreamLayout(tmp_path, "m", "s", 0)
    for bad in ("", "..", "../x", "a/b", ".hidden"):
        with pytest.raises(LayoutError):
            layout.path(bad)
    assert layout.path("manifest.json").name == "manifest.json"


@given(ids, ids, st.integers(min_value=0, max_value=4_102_444_800_000))
@settings(max_examples=100, deadline=None)
def test_stream_dir_parses_back_to_its_ids(meeting: str, stream: str, start_ms: int) -> None:
    data = Path("/data")
    layout = StreamLayout(data, meeting, stream, start_ms)
    parsed = parse_stream_dir(data, layout.stream_dir)
    assert (parsed.date, parsed.meeting_uuid, parsed.rtms_stream_id) == (date_dir(start_ms), meeting, stream)


def test_parse_stream_dir_refuses_foreign_paths(tmp_path: Path) -> None:
    with pytest.raises(LayoutError):
        parse_stream_dir(tmp_path, tmp_path / "2025-05-15" / "m")
    with pytest.raises(LayoutError):
        parse_stream_dir(tmp_path, tmp_path / "yesterday" / "m" / "s")
    with pytest.raises(LayoutError):
        parse_stream_dir(tmp_path / "other", tmp_path / "2025-05-15" / "m" / "s")
    assert parse_stream_dir(tmp_path, tmp_path / "2025-05-15" / "m" / "s").meeting_uuid == "m"


def test_audio_track_names() -> None:
    assert participant_wav_name(16778240) == "audio-16778240.wav"
    assert channel_wav_name("Ch/1") == "audio-ch-_ch-2f1.wav"
    with pytest.raises(LayoutError):
        participant_wav_name(-1)


def test_a_date_directory_names_the_start_of_its_day() -> None:
    start_ms = 1_747_316_541_000  # 2025-05-15T13:42:21Z
    name = date_dir(start_ms)
    assert name == "2025-05-15"
    assert date_dir_start_ms(name) == 1_747_267_200_000  # that day's midnight, UTC
    assert date_dir_start_ms(name) <= start_ms < date_dir_start_ms(name) + 86_400_000
    for not_a_date in ("2025-13-01", "meeting", "2025-05-15x", ""):
        assert date_dir_start_ms(not_a_date) is None
