"""Frame identity (schemas.identity): only true repeats share an identity."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.identity import identity_digest

_BASE: dict[str, Any] = {
    "meeting_uuid": "m/+==",
    "rtms_stream_id": "s1",
    "stream_kind": "AUDIO",
    "participant_id": 0,
    "channel_id": None,
    "timestamp_ms": 1_000,
    "payload": b"\x01\x02",
    "ingest_epoch": 7,
    "ingest_seq": 3,
    "received_at_ms": 5_000,
}

# Small alphabets on purpose: timestamps, participants, channels and streams repeat a lot.
frames = st.fixed_dictionaries(
    {
        "meeting_uuid": st.sampled_from(["m1==", "m/2+", "m1"]),
        "rtms_stream_id": st.sampled_from(["s1", "s2"]),
        "stream_kind": st.sampled_from(["AUDIO", "VIDEO", "DESKSHARE", "TRANSCRIPT", "EVENT"]),
        "participant_id": st.sampled_from([0, 1, 16778240]),
        "channel_id": st.sampled_from([None, "", "c1", "c2"]),
        "timestamp_ms": st.sampled_from([0, 1_000, 1_020]),
        "payload": st.sampled_from([b"", b"\x00", b"\x00\x00", b"ab"]),
        "text": st.sampled_from(["", "hi", "hi there"]),
        "language": st.sampled_from([None, 9, -1]),
        "start_time_ms": st.sampled_from([None, 0, 1_000]),
        "end_time_ms": st.sampled_from([None, 1_500]),
        "msg_type": st.sampled_from([0, 6, 8]),
        "event_type": st.sampled_from([None, 2, 3]),
        "name": st.sampled_from(["", "active_speaker", "stream_state"]),
        "state": st.sampled_from([None, 0, 1]),
        "reason": st.sampled_from([None, 0]),
        "rtms_session_id": st.sampled_from([None, "x"]),
        "body": st.sampled_from(["", "{}", '{"a":1}']),
        # never part of identity: a repeat has other values here
        "ingest_epoch": st.integers(0, 3),
        "ingest_seq": st.integers(0, 3),
        "received_at_ms": st.integers(0, 3),
    }
)

_CONTENT = {
    "AUDIO": ("payload",),
    "VIDEO": ("payload",),
    "DESKSHARE": ("payload",),
    "TRANSCRIPT": ("text", "language", "start_time_ms", "end_time_ms"),
    "EVENT": ("msg_type", "event_type", "name", "state", "reason", "rtms_session_id", "body"),
}
_KEY = ("meeting_uuid", "rtms_stream_id", "stream_kind", "participant_id", "channel_id", "timestamp_ms")


def _what_counts(frame: dict[str, Any]) -> tuple[Any, ...]:
    """The fields a repeat must share, written out independently of the module under test."""
    return tuple(frame[k] for k in _KEY) + tuple(frame[k] for k in _CONTENT[frame["stream_kind"]])


@settings(max_examples=400, deadline=None)
@given(st.lists(frames, min_size=2, max_size=30))
def test_frames_share_an_identity_only_when_they_are_true_repeats(batch: list[dict[str, Any]]) -> None:
    by_digest: dict[bytes, tuple[Any, ...]] = {}
    for frame in batch:
        digest = identity_digest(frame)
        assert len(digest) == 16
        seen = by_digest.setdefault(digest, _what_counts(frame))
        assert seen == _what_counts(frame), "two different frames got one identity"


@given(frames, st.integers(0, 9), st.integers(0, 9), st.integers(0, 10**13))
def test_a_repeat_has_the_same_identity_whatever_ingest_stamped(
    frame: dict[str, Any], epoch: int, seq: int, received: int
) -> None:
    repeat = {**frame, "ingest_epoch": epoch, "ingest_seq": seq, "received_at_ms": received}
    assert identity_digest(repeat) == identity_digest(frame)


def test_each_identity_field_changes_the_identity() -> None:
    base = identity_digest(_BASE)
    changes = {
        "meeting_uuid": "m/+=",
        "rtms_stream_id": "s2",
        "stream_kind": "VIDEO",
        "participant_id": 1,
        "channel_id": "",  # "" and null are different channels
        "timestamp_ms": 1_001,
        "payload": b"\x01\x03",
    }
    for name, value in changes.items():
        assert identity_digest({**_BASE, name: value}) != base, name
    # positive control: what is not identity leaves it alone
    assert identity_digest({**_BASE, "ingest_seq": 99, "ingest_epoch": 1, "received_at_ms": 0}) == base


def test_field_boundaries_cannot_be_shifted() -> None:
    a = {**_BASE, "meeting_uuid": "ab", "rtms_stream_id": "c"}
    b = {**_BASE, "meeting_uuid": "a", "rtms_stream_id": "bc"}
    assert identity_digest(a) != identity_digest(b)
    assert identity_digest({**_BASE, "meeting_uuid": "ab"}) == identity_digest(
        {**_BASE, "meeting_uuid": "ab"}
    )


def test_state_events_without_timestamps_differ_by_content() -> None:
    event = {**_BASE, "stream_kind": "EVENT", "timestamp_ms": 0, "msg_type": 8, "state": 1, "body": "{1}"}
    other = {**event, "state": 2, "body": "{2}"}
    assert identity_digest(event) != identity_digest(other)
    assert identity_digest(event) == identity_digest(dict(event))
