"""Every topic of rtmsflow in one place: name, value schema, partitions and configs.

All topics share one partition count (`Settings.partitions`) and every record is keyed by the
meeting UUID, so one meeting's records land in the same partition number on every topic
(co-partitioning, DESIGN.md). `rtmsflow topics create` makes them idempotently.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Tier(StrEnum):
    """Where a topic sits in the flow."""

    CONTROL = "control"  # sessions, meetings index
    RAW = "raw"  # as received from Zoom
    ORDERED = "ordered"  # reordered, deduplicated, assembled
    SIDE = "side"  # late frames, dead letters


_WEEK_MS = 7 * 24 * 3600 * 1000


@dataclass(frozen=True)
class TopicSpec:
    """One topic: its base name, the Avro schema of its values, its tier and its configs."""

    name: str
    schema: str  # file name under schemas/avro without .avsc
    tier: Tier
    configs: dict[str, str] = field(default_factory=dict)

    def full_name(self, prefix: str = "") -> str:
        """The topic's name on the broker (tests prefix names to isolate runs)."""
        return f"{prefix}{self.name}"


_MEDIA = {"retention.ms": str(_WEEK_MS), "cleanup.policy": "delete", "max.message.bytes": str(8 << 20)}
# A record stays uncompacted for 48 h (longer than any Zoom meeting, 30 h at most), so a live
# meeting's `rtms_started` (the only record with its server URLs) survives a later
# `rtms_interrupted`, and a worker rebuilding the partition can still connect.
_COMPACTED = {
    "cleanup.policy": "compact",
    "min.compaction.lag.ms": str(48 * 3600 * 1000),
    "segment.ms": str(3600 * 1000),
}

SESSIONS = TopicSpec("rtms.sessions", "session_event", Tier.CONTROL, _COMPACTED)
MEETINGS = TopicSpec("rtms.meetings", "meeting_index", Tier.CONTROL, _COMPACTED)
RAW_AUDIO = TopicSpec("rtms.raw.audio", "raw_audio_frame", Tier.RAW, _MEDIA)
RAW_VIDEO = TopicSpec("rtms.raw.video", "raw_video_frame", Tier.RAW, _MEDIA)
RAW_TRANSCRIPT = TopicSpec("rtms.raw.transcript", "raw_transcript_frame", Tier.RAW, _MEDIA)
RAW_EVENTS = TopicSpec("rtms.raw.events", "raw_event", Tier.RAW, _MEDIA)
AUDIO = TopicSpec("rtms.audio", "audio_frame", Tier.ORDERED, _MEDIA)
VIDEO = TopicSpec("rtms.video", "video_frame", Tier.ORDERED, _MEDIA)
TRANSCRIPT = TopicSpec("rtms.transcript", "transcript_utterance", Tier.ORDERED, _MEDIA)
EVENTS = TopicSpec("rtms.events", "meeting_event", Tier.ORDERED, _MEDIA)
LATE = TopicSpec("rtms.late", "late_frame", Tier.SIDE, _MEDIA)
DEADLETTER = TopicSpec("rtms.deadletter", "dead_letter", Tier.SIDE, {"retention.ms": str(4 * _WEEK_MS)})

ALL_TOPICS: tuple[TopicSpec, ...] = (
    SESSIONS,
    MEETINGS,
    RAW_AUDIO,
    RAW_VIDEO,
    RAW_TRANSCRIPT,
    RAW_EVENTS,
    AUDIO,
    VIDEO,
    TRANSCRIPT,
    EVENTS,
    LATE,
    DEADLETTER,
)
RAW_TOPICS: tuple[TopicSpec, ...] = (RAW_AUDIO, RAW_VIDEO, RAW_TRANSCRIPT, RAW_EVENTS)

BY_NAME: dict[str, TopicSpec] = {t.name: t for t in ALL_TOPICS}


def spec_for(topic: str, prefix: str = "") -> TopicSpec:
    """The spec of a broker topic name (with or without the run's prefix)."""
    base = topic[len(prefix) :] if prefix and topic.startswith(prefix) else topic
    try:
        return BY_NAME[base]
    except KeyError:
        raise KeyError(f"unknown topic {topic!r}: not one of {sorted(BY_NAME)}") from None
