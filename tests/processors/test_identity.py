"""The processors' hot path digest (`identity_digest`'s fast path) equals the contract's field-by-field
encoding (`reference_digest`) for any record, odd values included (pure)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.identity import CONTENT_FIELDS, KEY_FIELDS, identity_digest, reference_digest

LONGS = st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1)
# what decoding gives, and what it never should (bools equal ints, floats equal ints, bytes, missing)
ODD = st.booleans() | st.floats(allow_nan=False) | st.binary(max_size=8) | st.just(0)
VALUES = st.none() | st.text(max_size=20) | LONGS | st.binary(max_size=700) | ODD


@st.composite
def records(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from([*CONTENT_FIELDS, None, "", "OTHER"]) | VALUES)
    record: dict[str, Any] = {
        "meeting_uuid": draw(st.sampled_from(["m1", "m2"]) | VALUES),
        "rtms_stream_id": draw(st.sampled_from(["s1", "s2"]) | VALUES),
        "stream_kind": kind,
        "participant_id": draw(st.sampled_from([0, 1, True, 1.0]) | VALUES),
        "channel_id": draw(st.sampled_from([None, "c"]) | VALUES),
        "timestamp_ms": draw(LONGS | VALUES),
        "ingest_seq": draw(LONGS),
    }
    for name in CONTENT_FIELDS.get(kind, ()) if isinstance(kind, str) else ():
        record[name] = draw(VALUES)
    drop = draw(st.sampled_from([None, *KEY_FIELDS]))
    if drop is not None:
        del record[drop]
    return record


def digest_or_error(fn: Any, record: dict[str, Any]) -> Any:
    try:
        return fn(record)
    except (TypeError, OverflowError) as exc:
        return type(exc)


@settings(max_examples=1500, deadline=None)
@given(st.lists(records(), min_size=1, max_size=6))
def test_the_fast_digest_equals_the_reference_encoding(batch: list[dict[str, Any]]) -> None:
    # several records per example: the fast path remembers the first fields' encodings
    for record in batch:
        assert digest_or_error(identity_digest, record) == digest_or_error(reference_digest, record)


def test_equal_but_differently_typed_participants_get_different_digests() -> None:
    base = {"meeting_uuid": "m", "rtms_stream_id": "s", "stream_kind": "AUDIO", "channel_id": None,
            "timestamp_ms": 5, "payload": b"x"}  # fmt: skip
    one = identity_digest({**base, "participant_id": 1})
    assert identity_digest({**base, "participant_id": True}) != one
    assert identity_digest({**base, "participant_id": True}) == reference_digest(
        {**base, "participant_id": True}
    )
