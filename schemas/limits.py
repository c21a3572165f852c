"""Bounds every stage holds the same values to: what a record may carry and still fit a topic.

Inputs past them are refused where they enter (4xx or a dead letter naming the meeting); `implausible` is
the check applied to every decoded record. docs/DECISIONS.md gives each limit's reason."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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
# Media time of a record (timestamp_ms - stream_started_ms): a Zoom meeting lasts 30 h at most,
# audio may predate the started webhook a little. Beyond these a gap or offset would make files of
# days or years of silence.
MAX_MEDIA_MS = 48 * 3_600_000
MIN_MEDIA_MS = -3_600_000
# A chat message's text (UTF-8 bytes): Zoom's in-meeting chat takes a few thousand characters;
# longer text is cut here at a character boundary (flagged text_truncated), never dropped.
MAX_CHAT_TEXT_BYTES = 16 << 10
# Recipients named on one private chat message: more is not a chat group but a forged message.
MAX_CHAT_RECIPIENTS = 1_000


def timestamp_in_range(ms: int) -> bool:
    """True for a ms timestamp inside [MIN_TIMESTAMP_MS, MAX_TIMESTAMP_MS)."""
    return MIN_TIMESTAMP_MS <= ms < MAX_TIMESTAMP_MS


def id_too_long(value: str) -> bool:
    """True for an id longer than MAX_ID_BYTES in UTF-8."""
    return len(value.encode("utf-8", "surrogatepass")) > MAX_ID_BYTES


def clip_text(text: str, max_bytes: int) -> tuple[str, bool]:
    """`text` (valid Unicode: no lone surrogates) cut to at most `max_bytes` UTF-8 bytes at a
    character boundary, and whether it was cut."""
    data = text.encode()
    if len(data) <= max_bytes:
        return text, False
    return data[:max_bytes].decode("utf-8", "ignore"), True


def clip_payload(payload: bytes) -> bytes:
    """The part of a refused input a dead letter carries (its head, MAX_DEAD_LETTER_PAYLOAD_BYTES)."""
    return payload[:MAX_DEAD_LETTER_PAYLOAD_BYTES]


# What RTMS can send: audio rates and channels, video sizes and frame rates.
MAX_SAMPLE_RATE = 192_000
MAX_CHANNELS = 8
MAX_SEND_RATE_MS = 10_000
MAX_VIDEO_SIDE = 16_384
MAX_FPS = 240


def implausible(record: Mapping[str, Any]) -> str | None:
    """Why `record` (a decoded record of a raw or ordered media, transcript or event topic, or a
    StreamEnd marker) cannot be true, or None."""
    for name in ("meeting_uuid", "rtms_stream_id"):
        value = record.get(name)
        if not value or id_too_long(value):
            return f"{name} empty or longer than {MAX_ID_BYTES} bytes"
    for name in ("timestamp_ms", "stream_started_ms", "start_time_ms", "end_time_ms", "start_ms", "end_ms",
                 "last_timestamp_ms", "media_ms"):  # fmt: skip
        value = record.get(name)
        if value is not None and not timestamp_in_range(value):
            return f"{name} {value} is not a time between 2000 and 2100"
    start = record.get("stream_started_ms")
    # a StreamEnd has the last one, a StreamProgress its media clock
    at = record.get("timestamp_ms", record.get("last_timestamp_ms", record.get("media_ms")))
    if start is not None and at is not None and not MIN_MEDIA_MS <= at - start <= MAX_MEDIA_MS:
        return f"timestamp_ms is {at - start} ms from the stream's start (more than 48 h)"
    offset = record.get("offset_ms")
    if offset is not None and not 0 <= offset <= MAX_MEDIA_MS:
        return f"offset_ms {offset} is not within 48 h of the stream's start"
    gap = record.get("gap")
    if gap is not None and not (
        0 <= gap["length_ms"] <= MAX_MEDIA_MS and timestamp_in_range(gap["start_ms"])
    ):
        return f"gap of {gap['length_ms']} ms at {gap['start_ms']}"
    for loss in record.get("losses") or ():
        if not (
            timestamp_in_range(loss["start_ms"]) and 0 <= loss["end_ms"] - loss["start_ms"] <= MAX_MEDIA_MS
        ):
            return f"loss from {loss['start_ms']} to {loss['end_ms']}"
    if record.get("ingest_seq", 0) < 0:
        return f"ingest_seq {record['ingest_seq']} is negative"
    media = record.get("media")
    if media is not None and "sample_rate" in media:
        if not (0 < media["sample_rate"] <= MAX_SAMPLE_RATE and 0 < media["channels"] <= MAX_CHANNELS):
            return f"audio of {media['sample_rate']} Hz, {media['channels']} channels"
        if not 0 <= media["send_rate_ms"] <= MAX_SEND_RATE_MS:
            return f"audio send rate of {media['send_rate_ms']} ms"
    elif media is not None and "width" in media:
        if not (0 <= media["width"] <= MAX_VIDEO_SIDE and 0 <= media["height"] <= MAX_VIDEO_SIDE):
            return f"video of {media['width']}x{media['height']}"
        if not 0 <= media["fps"] <= MAX_FPS:
            return f"video at {media['fps']} fps"
    return None
