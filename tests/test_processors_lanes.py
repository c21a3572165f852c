"""The processors' lanes without a broker: how a transcript lane orders Zoom's pieces."""

from __future__ import annotations

from typing import Any

import pytest

from processors.lanes import LaneConfig, PartitionCore
from rtmsflow.settings import Settings
from schemas.codec import Codec
from schemas.identity import identity_digest
from schemas.markers import marker_headers

T0 = 1_732_400_000_000
STAMP = {"meeting_uuid": "m==", "rtms_stream_id": "s", "stream_started_ms": T0, "ingest_epoch": 1}
WORDS = ["one", "two", "three", "four", "five", "six"]


@pytest.fixture(scope="module")
def codec() -> Codec:
    return Codec.from_settings(Settings())


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


def test_fragments_arriving_out_of_order_within_the_window_are_put_back_in_spoken_order(codec: Codec) -> None:
    pieces = fragments(shared_timestamp=True)
    pieces[1], pieces[2] = pieces[2], pieces[1]  # 300 ms apart: inside the window
    assert utterance_texts(codec, pieces) == [" ".join(WORDS)]
