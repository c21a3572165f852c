"""Every topic of rtmsflow in one place: name, value schema, partitions and configs.

One partition count for all topics and every record placed by its meeting UUID (co-partitioning,
docs/DESIGN.md); `rtms.sessions` is keyed `<meeting_uuid>|<rtms_stream_id>` and put in the meeting's
partition explicitly (`partition_for`). `configs_for` gives what `rtmsflow topics create` applies."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from aiokafka.partitioner import murmur2


class Tier(StrEnum):
    """Where a topic sits in the flow."""

    CONTROL = "control"  # sessions, meetings index
    RAW = "raw"  # as received from Zoom
    ORDERED = "ordered"  # reordered, deduplicated, assembled
    SIDE = "side"  # late frames, dead letters


_DAY_MS = 24 * 3600 * 1000
RETENTION = "retention.ms"  # the config `configs_for` sets from the settings' retention days


@dataclass(frozen=True)
class TopicSpec:
    """One topic: its base name, the Avro schema of its values, its tier and its configs."""

    name: str
    schema: str  # file name under schemas/avro without .avsc
    tier: Tier
    configs: dict[str, str] = field(default_factory=dict)
    doc: str = ""  # what the topic holds, where its schema's doc does not say (a schema shared)
    markers: bool = True  # carries end-of-stream markers (raw and ordered topics)

    def full_name(self, prefix: str = "") -> str:
        """The topic's name on the broker (tests prefix names to isolate runs)."""
        return f"{prefix}{self.name}"

    def configs_for(self, retention_days: int) -> dict[str, str]:
        """The topic configs to create or update it with: data topics (delete policy) keep records
        `retention_days` days; compacted topics keep their latest record per key for ever."""
        configs = dict(self.configs)
        if configs.get("cleanup.policy") == "delete":
            configs[RETENTION] = str(retention_days * _DAY_MS)
        return configs


_DATA = {"cleanup.policy": "delete", "max.message.bytes": str(8 << 20)}
# A record stays uncompacted for 48 h (longer than any Zoom meeting, 30 h at most), so a live
# meeting's `rtms_started` (the only record with its server URLs) survives a later
# `rtms_interrupted`, and a worker rebuilding the partition can still connect.
_COMPACTED = {
    "cleanup.policy": "compact",
    "min.compaction.lag.ms": str(48 * 3600 * 1000),
    "segment.ms": str(3600 * 1000),
}

# The processors' restart points: rewritten every commit interval, read back only on assignment (from the
# end backwards), so old versions may be compacted away soon; large enough for a busy partition's lanes.
_STATE = {
    "cleanup.policy": "compact",
    "segment.ms": str(600 * 1000),
    "min.cleanable.dirty.ratio": "0.1",
    "max.message.bytes": str(8 << 20),
}

SESSIONS = TopicSpec("rtms.sessions", "session_event", Tier.CONTROL, _COMPACTED)
MEETINGS = TopicSpec("rtms.meetings", "meeting_index", Tier.CONTROL, _COMPACTED)
RAW_AUDIO = TopicSpec("rtms.raw.audio", "raw_audio_frame", Tier.RAW, _DATA)
RAW_VIDEO = TopicSpec("rtms.raw.video", "raw_video_frame", Tier.RAW, _DATA)
RAW_TRANSCRIPT = TopicSpec("rtms.raw.transcript", "raw_transcript_frame", Tier.RAW, _DATA)
RAW_EVENTS = TopicSpec("rtms.raw.events", "raw_event", Tier.RAW, _DATA)
RAW_CHAT = TopicSpec("rtms.raw.chat", "raw_chat_message", Tier.RAW, _DATA)
AUDIO = TopicSpec("rtms.audio", "audio_frame", Tier.ORDERED, _DATA)
VIDEO = TopicSpec("rtms.video", "video_frame", Tier.ORDERED, _DATA)
TRANSCRIPT = TopicSpec("rtms.transcript", "transcript_utterance", Tier.ORDERED, _DATA)
# the open utterance after each piece (final = false), superseded by its record on rtms.transcript
TRANSCRIPT_PARTIAL = TopicSpec(
    "rtms.transcript.partial",
    "transcript_utterance",
    Tier.ORDERED,
    _DATA,
    doc="The open utterance of a stream after each of its pieces (final = false), at once; the same "
    "utterance_id's record on rtms.transcript supersedes it. Keep the latest per utterance_id.",
    markers=False,
)
EVENTS = TopicSpec("rtms.events", "meeting_event", Tier.ORDERED, _DATA)
CHAT = TopicSpec(
    "rtms.chat",
    "chat_message",
    Tier.ORDERED,
    _DATA,
    doc="The in-meeting chat of a stream (RTMS msg 18), in Zoom's order, each message once. Public "
    "messages always; private ones as ingest's RTMSFLOW_CHAT_PRIVATE says (drop, the default: none; "
    "keep: with their recipients; unaddressed: flagged private, without recipients). A consumer reads it "
    "like rtms.transcript; the transcript sink writes chat.jsonl and chat.txt from it.",
)
LATE = TopicSpec("rtms.late", "late_frame", Tier.SIDE, _DATA)
DEADLETTER = TopicSpec("rtms.deadletter", "dead_letter", Tier.SIDE, _DATA)
PROCESSOR_STATE = TopicSpec("rtms.processor.state", "processor_state", Tier.CONTROL, _STATE)

ALL_TOPICS: tuple[TopicSpec, ...] = (
    SESSIONS,
    MEETINGS,
    RAW_AUDIO,
    RAW_VIDEO,
    RAW_TRANSCRIPT,
    RAW_EVENTS,
    RAW_CHAT,
    AUDIO,
    VIDEO,
    TRANSCRIPT,
    TRANSCRIPT_PARTIAL,
    EVENTS,
    CHAT,
    LATE,
    DEADLETTER,
    PROCESSOR_STATE,
)
RAW_TOPICS: tuple[TopicSpec, ...] = (RAW_AUDIO, RAW_VIDEO, RAW_TRANSCRIPT, RAW_EVENTS, RAW_CHAT)

BY_NAME: dict[str, TopicSpec] = {t.name: t for t in ALL_TOPICS}


def spec_for(topic: str, prefix: str = "") -> TopicSpec:
    """The spec of a broker topic name (with or without the run's prefix)."""
    base = topic[len(prefix) :] if prefix and topic.startswith(prefix) else topic
    try:
        return BY_NAME[base]
    except KeyError:
        raise KeyError(f"unknown topic {topic!r}: not one of {sorted(BY_NAME)}") from None


# --- keys and partitions ---------------------------------------------------------------------------

CONTROL_HEADER = "rtmsflow.control"  # header naming a control record (value null): what kind
END_OF_STREAM = b"end_of_stream"
STREAM_END_HEADER = "rtmsflow.stream_end"  # header holding the StreamEnd record (single-object Avro)
PROGRESS = b"progress"
STREAM_PROGRESS_HEADER = "rtmsflow.stream_progress"  # the StreamProgress record (single-object Avro)


def partition_for(meeting_uuid: str, partitions: int) -> int:
    """The partition of a meeting on every topic: Kafka's default partitioner (murmur2 of the
    UTF-8 meeting UUID, as the Java client and aiokafka compute it for the meeting key)."""
    return (murmur2(meeting_uuid.encode()) & 0x7FFFFFFF) % partitions


def session_key(meeting_uuid: str, rtms_stream_id: str) -> bytes:
    """The `rtms.sessions` key: one compacted entry per (meeting, stream). `|` never occurs in a
    meeting UUID (base64) or a stream id (hex), so the key splits back unambiguously."""
    return f"{meeting_uuid}|{rtms_stream_id}".encode()
