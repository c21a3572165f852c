"""The processors' lanes without a broker: how a transcript lane orders Zoom's pieces, and what
progress marks release (partials at once, finals by the pause rule, sparse lanes, known losses)."""

from __future__ import annotations

from typing import Any

import pytest

from processors.lanes import LaneConfig, PartitionCore
from schemas.codec import Codec
from schemas.identity import identity_digest
from schemas.markers import marker_headers, progress_headers

T0 = 1_732_400_000_000
STAMP = {"meeting_uuid": "m==", "rtms_stream_id": "s", "stream_started_ms": T0, "ingest_epoch": 1}
WORDS = ["one", "two", "three", "four", "five", "six"]


@pytest.fixture(scope="module")
def codec() -> Codec:
    return Codec()


def fragments(shared_timestamp: bool) -> list[dict[str, Any]]:
    """One speaker's utterance in six fragments, 300 ms apart; Zoom's `timestamp` is when the
    utterance began, so with `shared_timestamp` every fragment carries the same one."""
    out = []
    for i, word in enumerate(WORDS):
        start = T0 + 1000 + i * 300
        out.append({**STAMP, "stream_kind": "TRANSCRIPT", "participant_id": 1, "participant_name": "A",
                    "timestamp_ms": T0 + 1000 if shared_timestamp else start, "ingest_seq": i,
                    "received_at_ms": start + 5, "text": word, "language": 9, "start_time_ms": start,
                    "end_time_ms": start + 250})  # fmt: skip
    return out


def utterance_texts(codec: Codec, pieces: list[dict[str, Any]]) -> list[str]:
    core = PartitionCore(0, codec.decode, LaneConfig(300))
    out = []
    for offset, piece in enumerate(pieces):
        out += core.feed(
            "rtms.raw.transcript", offset, b"m==", codec.encode("rtms.raw.transcript", piece), []
        )
    end = {**STAMP, "topic": "rtms.raw.transcript", "ended": "STOPPED", "stop_reason": 6,
           "last_timestamp_ms": T0 + 1000, "counts": {"TRANSCRIPT": len(pieces)}, "complete": True}  # fmt: skip
    out += core.feed("rtms.raw.transcript", len(pieces), b"m==", None, list(marker_headers(end)))
    return [o.value["text"] for o in out if o.topic == "rtms.transcript" and o.value is not None]


@pytest.mark.parametrize("shared_timestamp", [True, False])
def test_fragments_of_one_utterance_are_joined_in_the_order_they_were_spoken(
    codec: Codec, shared_timestamp: bool
) -> None:
    pieces = fragments(shared_timestamp)
    # control: ordered by their identity digest (a tie-break on the shared timestamp), the words
    # would be scrambled, so this test can tell the two apart
    by_digest = [p["text"] for p in sorted(pieces, key=identity_digest)]
    assert by_digest != WORDS
    assert utterance_texts(codec, pieces) == [" ".join(WORDS)]


def test_pieces_keep_the_order_zoom_sent_them_in(codec: Codec) -> None:
    pieces = fragments(shared_timestamp=True)
    pieces[1], pieces[2] = pieces[2], pieces[1]
    assert utterance_texts(codec, pieces) == ["one three two four five six"]


def test_an_overlapping_speakers_earlier_piece_arriving_later_is_kept(codec: Codec) -> None:
    """B's short piece arrives first; A's piece started earlier but comes after it and a mark far
    past both: by start time it would be late (lost to rtms.late), in arrival order it is kept."""
    core = PartitionCore(0, codec.decode, LaneConfig(300))
    b = {**fragments(False)[3], "participant_id": 2, "participant_name": "B", "text": "yes"}
    a = {**fragments(False)[0], "text": "I was saying", "ingest_seq": 9}
    out = feed(core, codec, [b, mark("rtms.raw.transcript", T0 + 5_000), a])
    out += end_transcript(core, 3)
    finals = [o.value for o in out if o.topic == "rtms.transcript" and o.value is not None]
    assert [u["text"] for u in finals] == ["yes", "I was saying"]
    assert not [o for o in out if o.topic == "rtms.late"]
    # starts stay monotone: A's utterance is placed at B's start (subtitle cues in order)
    assert finals[1]["start_ms"] >= finals[0]["start_ms"]


def mark(topic: str, media_ms: int, losses: list[dict[str, int]] | None = None) -> dict[str, Any]:
    return {**STAMP, "topic": topic, "media_ms": media_ms, "losses": losses or []}


def feed(core: PartitionCore, codec: Codec, items: list[dict[str, Any]], first: int = 0) -> list[Any]:
    """Feed transcript pieces and marks (dicts with "media_ms") in order, offsets from `first`."""
    out = []
    for offset, item in enumerate(items, start=first):
        if "media_ms" in item:
            out += core.feed(item["topic"], offset, b"m==", None, progress_headers(item))
        else:
            value = codec.encode("rtms.raw.transcript", item)
            out += core.feed("rtms.raw.transcript", offset, b"m==", value, [])
    return out


def end_transcript(core: PartitionCore, offset: int) -> list[Any]:
    end = {**STAMP, "topic": "rtms.raw.transcript", "ended": "STOPPED", "stop_reason": 6,
           "last_timestamp_ms": T0 + 1000, "counts": {}, "complete": True}  # fmt: skip
    return core.feed("rtms.raw.transcript", offset, b"m==", None, list(marker_headers(end)))


def test_each_piece_is_a_partial_at_once_and_a_mark_past_the_pause_makes_it_final(codec: Codec) -> None:
    core = PartitionCore(0, codec.decode, LaneConfig(300))
    pieces = fragments(shared_timestamp=True)[:2]  # one utterance, ends at T0 + 1550
    out = feed(core, codec, [mark("rtms.raw.transcript", T0 + 1_300), pieces[0]])
    assert [(o.topic, o.value["text"], o.value["final"]) for o in out] == [
        ("rtms.transcript.partial", "one", False)
    ]
    out = feed(core, codec, [pieces[1], mark("rtms.raw.transcript", T0 + 2_000)], first=2)
    # control: 2,000 is within the pause (700 ms) of the piece's arrival (mark 1,300) and its end
    assert [(o.topic, o.value["text"]) for o in out] == [("rtms.transcript.partial", "one two")]
    out = feed(core, codec, [mark("rtms.raw.transcript", T0 + 2_251)], first=4)
    assert [(o.topic, o.value["text"], o.value["final"]) for o in out] == [
        ("rtms.transcript", "one two", True)
    ]
    partial_ids = {"s/0"}
    assert out[0].value["utterance_id"] in partial_ids


def test_a_mark_releases_a_sparse_lane_without_its_next_frame(codec: Codec) -> None:
    frame = {**STAMP, "stream_kind": "VIDEO", "participant_id": 0, "participant_name": None, "timestamp_ms": T0 + 40,
             "ingest_seq": 0, "received_at_ms": T0 + 41, "payload": b"\x00\x00\x00\x01\x65", "keyframe": True,
             "has_parameter_sets": True, "media": {"codec": "H264", "width": 1280, "height": 720, "fps": 25,
             "mode": "ACTIVE_SPEAKER"}}  # fmt: skip
    core = PartitionCore(0, codec.decode, LaneConfig(300))
    out = core.feed("rtms.raw.video", 0, b"m==", codec.encode("rtms.raw.video", frame), [])
    assert out == []  # held: nothing has passed the window
    out = core.feed("rtms.raw.video", 1, b"m==", None, progress_headers(mark("rtms.raw.video", T0 + 339)))
    assert out == []  # control: 339 - 300 < 40
    out = core.feed("rtms.raw.video", 2, b"m==", None, progress_headers(mark("rtms.raw.video", T0 + 340)))
    assert [(o.topic, o.value["timestamp_ms"]) for o in out] == [("rtms.video", T0 + 40)]


def test_a_known_loss_shorter_than_the_video_gap_rule_is_a_loss_gap(codec: Codec) -> None:
    def run(losses: list[dict[str, int]]) -> list[dict[str, Any]]:
        core = PartitionCore(0, codec.decode, LaneConfig(300))
        out: list[Any] = []
        offset = 0
        for ts in (0, 40, 80, 200, 240, 280, 320, 360, 400):  # 120 and 160 missing (80 ms)
            if ts == 200:
                lost = mark("rtms.raw.video", T0 + 80, losses)
                out += core.feed("rtms.raw.video", offset, b"m==", None, progress_headers(lost))
                offset += 1
            frame = {**STAMP, "stream_kind": "VIDEO", "participant_id": 0, "participant_name": None,
                     "timestamp_ms": T0 + ts, "ingest_seq": offset, "received_at_ms": T0 + ts, "payload": b"\x01",
                     "keyframe": ts == 0, "has_parameter_sets": ts == 0,
                     "media": {"codec": "H264", "width": 1280, "height": 720, "fps": 25, "mode": "ACTIVE_SPEAKER"}}  # fmt: skip
            out += core.feed("rtms.raw.video", offset, b"m==", codec.encode("rtms.raw.video", frame), [])
            offset += 1
        end = {**STAMP, "topic": "rtms.raw.video", "ended": "STOPPED", "stop_reason": 6,
               "last_timestamp_ms": T0 + 400, "counts": {}, "complete": True}  # fmt: skip
        out += core.feed("rtms.raw.video", offset, b"m==", None, marker_headers(end))
        assert len([o for o in out if o.topic == "rtms.video" and o.value and not o.value["gap"]]) == 9
        return [o.value["gap"] for o in out if o.topic == "rtms.video" and o.value and o.value["gap"]]

    assert run([]) == []  # control: 80 ms is jitter to the 200 ms rule
    assert run([{"start_ms": T0 + 80, "end_ms": T0 + 200}]) == [
        {"start_ms": T0 + 120, "length_ms": 80, "reason": "LOSS"}
    ]


def camera_frames(mode: str) -> list[dict[str, Any]]:
    """Two participants' frames 40 ms apart, interleaved, participant 2's camera off 400..800 ms."""
    out = []
    for ts in range(0, 1200, 40):
        for pid in (1, 2):
            if pid == 2 and 400 <= ts < 800:
                continue
            out.append({**STAMP, "stream_kind": "VIDEO", "participant_id": pid, "participant_name": f"p{pid}",
                        "timestamp_ms": T0 + ts, "ingest_seq": len(out), "received_at_ms": T0 + ts,
                        "payload": bytes([pid, ts % 256]), "keyframe": ts == 0, "has_parameter_sets": ts == 0,
                        "media": {"codec": "H264", "width": 640, "height": 360, "fps": 25, "mode": mode}})  # fmt: skip
    return out


def ordered_video(codec: Codec, frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    core = PartitionCore(0, codec.decode, LaneConfig(300))
    out: list[Any] = []
    for offset, frame in enumerate(frames):
        out += core.feed("rtms.raw.video", offset, b"m==", codec.encode("rtms.raw.video", frame), [])
    end = {**STAMP, "topic": "rtms.raw.video", "ended": "STOPPED", "stop_reason": 6,
           "last_timestamp_ms": T0 + 1160, "counts": {}, "complete": True}  # fmt: skip
    out += core.feed("rtms.raw.video", len(frames), b"m==", None, marker_headers(end))
    return [o.value for o in out if o.topic == "rtms.video" and o.value is not None]


def test_each_individual_camera_is_a_lane_with_its_own_seq_and_its_camera_off_gap(codec: Codec) -> None:
    out = ordered_video(codec, camera_frames("INDIVIDUAL"))
    for pid in (1, 2):
        lane = [v for v in out if v["participant_id"] == pid]
        assert [v["seq"] for v in lane] == list(range(len(lane)))
        assert all(v["payload"][:1] == bytes([pid]) for v in lane if not v["gap"])
    gaps = [(v["participant_id"], v["gap"]) for v in out if v["gap"]]
    # participant 2's frame at 360 ms is held one interval (to 400), the gap runs to 800
    assert gaps == [(2, {"start_ms": T0 + 400, "length_ms": 400, "reason": "VIDEO_OFF"})]


def test_active_speaker_video_stays_one_lane_whoever_is_shown(codec: Codec) -> None:
    """The control: the same frames as active-speaker video are one lane (one seq), and the
    second participant's silence is no gap there, as the first's frames fill the picture."""
    out = ordered_video(codec, camera_frames("ACTIVE_SPEAKER"))
    assert [v["seq"] for v in out] == list(range(len(out)))
    assert [v for v in out if v["gap"]] == []


def test_cameras_past_the_limit_are_dead_letters_not_lanes(codec: Codec) -> None:
    from processors.lanes import MAX_CAMERA_LANES

    core = PartitionCore(0, codec.decode, LaneConfig(300))
    out: list[Any] = []
    template = camera_frames("INDIVIDUAL")[0]
    for pid in range(1, MAX_CAMERA_LANES + 3):
        frame = {**template, "participant_id": pid, "ingest_seq": pid}
        out += core.feed("rtms.raw.video", pid, b"m==", codec.encode("rtms.raw.video", frame), [])
    dead = [o.value for o in out if o.topic == "rtms.deadletter"]
    assert [d["error"] for d in dead] == ["TooManyCameras", "TooManyCameras"]
    # the control: the cameras within the limit are lanes, and one of them goes on taking frames
    cameras = {lane.key.participant_id for st in core.streams.values() for lane in st.lanes.values()}
    assert cameras == set(range(1, MAX_CAMERA_LANES + 1))
    again = {**template, "participant_id": 1, "ingest_seq": 99, "timestamp_ms": T0 + 40}
    assert [
        o.topic for o in core.feed("rtms.raw.video", 99, b"m==", codec.encode("rtms.raw.video", again), [])
    ] == []
