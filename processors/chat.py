"""A raw chat message (`rtms.raw.chat`) as its ordered record on `rtms.chat`, pure.

The chat lane keeps Zoom's order (arrival, like transcript pieces) and drops repeats
(`processors.lanes`); this gives each message its place: `seq` and the id `<rtms_stream_id>/<seq>`."""

from __future__ import annotations

from typing import Any


def chat_message(raw: dict[str, Any], seq: int) -> dict[str, Any]:
    """The `rtms.chat` record of the stream's `seq`-th chat message `raw` (a RawChatMessage)."""
    return {
        "meeting_uuid": raw["meeting_uuid"],
        "rtms_stream_id": raw["rtms_stream_id"],
        "chat_id": f"{raw['rtms_stream_id']}/{seq}",
        "seq": seq,
        "message_id": raw.get("message_id"),
        "sender_id": raw.get("participant_id") or 0,
        "sender_name": raw.get("participant_name"),
        "timestamp_ms": raw["timestamp_ms"],
        "stream_started_ms": raw["stream_started_ms"],
        "text": raw["text"],
        "text_truncated": bool(raw.get("text_truncated")),
        "private": bool(raw.get("private")),
        "recipients": [
            {"user_id": p["user_id"], "user_name": p.get("user_name")} for p in raw.get("recipients") or ()
        ],
    }
