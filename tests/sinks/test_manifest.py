"""sinks.manifest: the stream directory's manifest (counts, gaps, how it ended, sizes and SHA-256)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from sinks.atomic import FileGroup
from sinks.manifest import (
    FileEntry,
    Gap,
    StreamEnd,
    StreamSummary,
    StreamTally,
    build_manifest,
    encode_manifest,
    file_entries,
    hash_file,
    read_manifest,
    verify_files,
)

MEETING = "4444AAAiAAAAAiAiAiiAii/+=="
T0 = 1_747_316_541_000


def summary(
    end: StreamEnd, gaps: list[Gap] | None = None, stream_id: str = "s1", start_ms: int = T0
) -> StreamSummary:
    return StreamSummary(
        stream_id,
        start_ms,
        start_ms + 65_000,
        {"audio": 3250, "video": 1950},
        gaps or [],
        late_count=2,
        duplicate_count=5,
        end=end,
    )


def test_every_file_is_listed_with_its_size_and_sha256(tmp_path: Path) -> None:
    (tmp_path / "audio.wav").write_bytes(b"RIFF" + bytes(1000))
    (tmp_path / "transcript.txt").write_bytes("[x] Zoë: hi\n".encode())
    entries = file_entries(
        {"transcript.txt": tmp_path / "transcript.txt", "audio.wav": tmp_path / "audio.wav"}
    )
    assert entries == [
        FileEntry("audio.wav", 1004, hashlib.sha256(b"RIFF" + bytes(1000)).hexdigest()),
        FileEntry(
            "transcript.txt",
            len("[x] Zoë: hi\n".encode()),
            hashlib.sha256("[x] Zoë: hi\n".encode()).hexdigest(),
        ),
    ]


def test_hashing_streams_in_chunks_with_the_same_result(tmp_path: Path) -> None:
    data = bytes(range(256)) * 1000
    (tmp_path / "f").write_bytes(data)
    assert (
        hash_file(tmp_path / "f", chunk_bytes=7)
        == hash_file(tmp_path / "f")
        == (len(data), hashlib.sha256(data).hexdigest())
    )


def test_a_marker_whose_counts_match_what_was_received() -> None:
    end = StreamEnd.by_marker(
        {"audio": 3250, "video": 1950}, {"audio": 3250, "video": 1950, "events": 4}, stop_reason=6
    )
    manifest = build_manifest(MEETING, [summary(end)], {}, [])
    assert manifest["streams"][0]["ended"] == {
        "how": "marker",
        "marker_counts": {"audio": 3250, "video": 1950},
        "matched": True,
        "stop_reason": 6,
        "received_counts": {"audio": 3250, "video": 1950, "events": 4},
    }


def test_a_marker_whose_counts_do_not_match_says_so() -> None:
    short = StreamEnd.by_marker({"audio": 3250, "video": 1950}, {"audio": 3249, "video": 1950})
    missing_kind = StreamEnd.by_marker({"audio": 1, "transcript": 2}, {"audio": 1})
    assert short.matched is False
    assert missing_kind.matched is False
    assert StreamEnd.by_marker({"audio": 1}, {"audio": 1}).matched is True  # positive control


def test_an_idle_timeout_end_has_no_marker_facts() -> None:
    end = StreamEnd.by_idle_timeout({"audio": 10})
    assert end.matched is None
    assert end.to_json() == {"how": "idle_timeout", "received_counts": {"audio": 10}}


def test_stream_facts_are_all_there() -> None:
    gaps = [Gap(T0 + 5000, "audio", 0, 60), Gap(T0 + 1000, "video", 16778240, 400)]
    manifest = build_manifest(
        MEETING, [summary(StreamEnd.by_idle_timeout({}), gaps)], {16778240: "John Doe", 7: None}, []
    )
    (stream,) = manifest["streams"]
    assert manifest["meeting_uuid"] == MEETING
    assert (stream["rtms_stream_id"], stream["start_ms"], stream["stop_ms"], stream["duration_ms"]) == (
        "s1",
        T0,
        T0 + 65_000,
        65_000,
    )
    assert stream["frame_counts"] == {"audio": 3250, "video": 1950}
    assert (stream["late_count"], stream["duplicate_count"]) == (2, 5)
    assert stream["gaps"] == [
        {"start_ms": T0 + 1000, "kind": "video", "participant_id": 16778240, "duration_ms": 400},
        {"start_ms": T0 + 5000, "kind": "audio", "participant_id": 0, "duration_ms": 60},
    ]
    assert manifest["participants"] == [
        {"participant_id": 7, "name": None},
        {"participant_id": 16778240, "name": "John Doe"},
    ]


def test_the_bytes_do_not_depend_on_input_order_time_or_place(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for d in ("a", "b"):
        (tmp_path / d / "audio.wav").write_bytes(b"same")
        (tmp_path / d / "transcript.txt").write_bytes(b"same text")
    gaps = [Gap(T0 + 5000, "audio", 0, 60), Gap(T0 + 1000, "video", 1, 400)]
    streams = [
        summary(StreamEnd.by_idle_timeout({"audio": 1}), gaps, "s2", T0 + 100_000),
        summary(StreamEnd.by_marker({"audio": 1}, {"audio": 1}), gaps, "s1"),
    ]
    first = encode_manifest(
        build_manifest(
            MEETING,
            streams,
            {2: "B", 1: "A"},
            file_entries(
                {
                    "audio.wav": tmp_path / "a" / "audio.wav",
                    "transcript.txt": tmp_path / "a" / "transcript.txt",
                }
            ),
        )
    )
    second = encode_manifest(
        build_manifest(
            MEETING,
            list(
                reversed(
                    [summary(s.end, list(reversed(gaps)), s.rtms_stream_id, s.start_ms) for s in streams]
                )
            ),
            {1: "A", 2: "B"},
            reversed(
                file_entries(
                    {
                        "transcript.txt": tmp_path / "b" / "transcript.txt",
                        "audio.wav": tmp_path / "b" / "audio.wav",
                    }
                )
            ),
        )
    )
    assert first == second
    assert str(tmp_path).encode() not in first
    decoded = json.loads(first)
    assert [s["rtms_stream_id"] for s in decoded["streams"]] == ["s1", "s2"]
    # Fixed layout: sorted keys, indent 2, UTF-8, trailing newline.
    assert first == (json.dumps(decoded, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode()


def test_a_file_listed_twice_is_refused() -> None:
    with pytest.raises(ValueError):
        build_manifest(MEETING, [], {}, [FileEntry("a", 1, "x"), FileEntry("a", 1, "x")])


def test_a_gap_says_why_when_its_record_did() -> None:
    tally = StreamTally("s1")
    tally.gap("video", 0, T0 + 1000, 4000, "INGEST_DIED")
    tally.gap("audio", 0, T0, 40)  # a reason nobody gave is not invented
    manifest = build_manifest(MEETING, [tally.summary(StreamEnd.by_idle_timeout({}))], {}, [])
    assert manifest["streams"][0]["gaps"] == [
        {"start_ms": T0, "kind": "audio", "participant_id": 0, "duration_ms": 40},
        {
            "start_ms": T0 + 1000,
            "kind": "video",
            "participant_id": 0,
            "duration_ms": 4000,
            "reason": "INGEST_DIED",
        },
    ]


def test_tally_counts_what_a_sink_consumed() -> None:
    tally = StreamTally("s1")
    for i in range(5):
        tally.observe("audio", T0 + i * 20, duration_ms=20)
    tally.observe("video", T0 + 33)
    tally.gap("audio", 0, T0 + 100, 40)
    tally.gap("audio", 0, T0 + 200, 0)  # no gap: not listed
    tally.late()
    tally.duplicate(3)
    tally.participant(7, None)
    tally.participant(7, "Jane Roe")
    tally.participant(7, None)  # a nameless record does not erase a known name
    result = tally.summary(StreamEnd.by_marker({"audio": 5}, tally.frame_counts))
    assert (result.start_ms, result.stop_ms, result.duration_ms) == (T0, T0 + 100, 100)
    assert result.frame_counts == {"audio": 5, "video": 1}
    assert result.gaps == [Gap(T0 + 100, "audio", 0, 40)]
    assert (result.late_count, result.duplicate_count) == (1, 3)
    assert result.end.matched is True
    assert tally.participants == {7: "Jane Roe"}
    assert tally.summary(StreamEnd.by_idle_timeout({}), start_ms=T0 - 50).start_ms == T0 - 50


def test_published_manifest_vouches_for_the_published_files(tmp_path: Path) -> None:
    group = FileGroup(tmp_path / "stream")
    group.begin()
    group.partial("audio.wav").write_bytes(b"RIFF....")
    group.partial("transcript.txt").write_bytes(b"line\n")
    manifest = build_manifest(
        MEETING, [summary(StreamEnd.by_idle_timeout({}))], {}, file_entries(group.partials())
    )
    group.publish(encode_manifest(manifest))
    loaded = read_manifest(group.directory / "manifest.json")
    assert loaded == manifest
    assert verify_files(loaded, group.directory) == []
    (group.directory / "audio.wav").write_bytes(b"RIFF...!")  # same size, other bytes
    (group.directory / "transcript.txt").unlink()
    assert verify_files(loaded, group.directory) == ["audio.wav", "transcript.txt"]


def test_read_manifest_refuses_other_json(tmp_path: Path) -> None:
    (tmp_path / "m.json").write_text('{"files": []}')
    with pytest.raises(ValueError):
        read_manifest(tmp_path / "m.json")
    (tmp_path / "m.json").write_text('{"format": "rtmsflow.manifest", "version": 99}')
    with pytest.raises(ValueError):
        read_manifest(tmp_path / "m.json")
