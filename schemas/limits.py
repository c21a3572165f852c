"""Bounds every stage holds the same values to: what a record may carry and still fit a topic.

Inputs past these bounds cannot be true (a timestamp past year 2100) or cannot be stored (a value
larger than the topics' `max.message.bytes`): they are refused where they enter, with a 4xx or a
dead letter naming the meeting. `docs/DECISIONS.md` gives each limit's reason.
"""

from __future__ import annotations

# The data topics' `max.message.bytes` (schemas/topics.py `_DATA`): one record batch on the broker.
TOPIC_MAX_MESSAGE_BYTES = 8 << 20
# A record's value must leave room for its key, headers and the batch framing under that limit.
MAX_VALUE_BYTES = TOPIC_MAX_MESSAGE_BYTES - (64 << 10)
# A dead letter carries at most this much of the refused input, so it always fits a topic.
MAX_DEAD_LETTER_PAYLOAD_BYTES = 1 << 20
# `rtms.meetings` sets no `max.message.bytes`: the broker's default (1 MiB) applies; stay well below.
MAX_INDEX_BYTES = 512 << 10
# Meeting and stream ids (UTF-8 bytes): real ones are 24-36 characters; 64 bytes always encode to a
# path component the sinks accept (3 characters per escaped byte, 192 <= 200).
MAX_ID_BYTES = 64
# Timestamps (ms since the epoch) a stream can have: 2000-01-01 to 2100-01-01 UTC. Outside it, a
# value is a unit mistake (seconds, microseconds) or forged.
MIN_TIMESTAMP_MS = 946_684_800_000
MAX_TIMESTAMP_MS = 4_102_444_800_000


def timestamp_in_range(ms: int) -> bool:
    """True for a ms timestamp inside [MIN_TIMESTAMP_MS, MAX_TIMESTAMP_MS)."""
    return MIN_TIMESTAMP_MS <= ms < MAX_TIMESTAMP_MS


def id_too_long(value: str) -> bool:
    """True for an id longer than MAX_ID_BYTES in UTF-8."""
    return len(value.encode("utf-8", "surrogatepass")) > MAX_ID_BYTES


def clip_payload(payload: bytes) -> bytes:
    """The part of a refused input a dead letter carries (its head, MAX_DEAD_LETTER_PAYLOAD_BYTES)."""
    return payload[:MAX_DEAD_LETTER_PAYLOAD_BYTES]
