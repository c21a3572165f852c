"""A realistic valid record of every value schema, and the end-of-stream marker of each topic that
has one, typed with the generated shapes (schemas.records). Used by the codec and evolution tests."""

from __future__ import annotations

from typing import Any

from schemas.records import (
    AudioFrame,
    DeadLetter,
    LateFrame,
    MeetingEvent,
    MeetingIndex,
    Participant,
    RawAudioFrame,
    RawEvent,
    RawTranscriptFrame,
    RawVideoFrame,
    SessionEvent,
    TranscriptUtterance,
    VideoFrame,
)

MEETING = "4Rk/ZbJyQ0+Xh2fNpm3xUA=="
STREAM = "03db704592624398931a588dd78200cb"
T0 = 1_732_400_000_000  # ms since the epoch

_PCM = bytes(range(256)) * 2 + bytes(128)  # 640 bytes: 20 ms of 16 kHz mono L16
_H264 = b"\x00\x00\x00\x01\x65" + bytes(20_000 - 5)  # a 20 KB IDR access unit

_raw_audio: RawAudioFrame = {
    "meeting_uuid": MEETING,
    "rtms_stream_id": STREAM,
    "stream_kind": "AUDIO",
    "participant_id": 16778240,
    "participant_name": "Ada Lovelace",
    "timestamp_ms": T0 + 20,
    "ingest_seq": 42,
    "received_at_ms": T0 + 45,
    "payload": _PCM,
    "media": {"codec": "L16", "sample_rate": 16000, "channels": 1, "send_rate_ms": 20, "mixed": False},
}
_audio: AudioFrame = {**_raw_audio, "seq": 41, "gap_before_ms": 20}
_raw_video: RawVideoFrame = {
    "meeting_uuid": MEETING,
    "rtms_stream_id": STREAM,
    "stream_kind": "DESKSHARE",
    "participant_id": 16778240,
    "channel_id": "cc-7",
    "timestamp_ms": T0 + 33,
    "ingest_seq": 7,
    "received_at_ms": T0 + 60,
    "payload": _H264,
    "media": {"codec": "H264", "width": 1280, "height": 720, "fps": 30},
}
_video: VideoFrame = {**_raw_video, "seq": 6, "gap_before_ms": 0}
_raw_transcript: RawTranscriptFrame = {
    "meeting_uuid": MEETING,
    "rtms_stream_id": STREAM,
    "stream_kind": "TRANSCRIPT",
    "participant_id": 16778240,
    "participant_name": "Ada Lovelace",
    "timestamp_ms": T0 + 1500,
    "ingest_seq": 3,
    "received_at_ms": T0 + 1510,
    "text": "Grüße — the engine 🚂 runs",
    "language": 9,
    "start_time_ms": T0,
    "end_time_ms": T0 + 1500,
}
_participants: list[Participant] = [
    {"user_id": 16778240, "user_name": "Ada Lovelace"},
    {"user_id": 16779264, "user_name": None},
]
_raw_event: RawEvent = {
    "meeting_uuid": MEETING,
    "rtms_stream_id": STREAM,
    "stream_kind": "EVENT",
    "timestamp_ms": T0 + 5,
    "ingest_seq": 1,
    "received_at_ms": T0 + 9,
    "msg_type": 6,
    "event_type": 2,
    "name": "participant_join",
    "participants": _participants,
    "body": '{"msg_type":6,"content":{"event_type":2}}',
}
_event: MeetingEvent = {**_raw_event, "seq": 0}
_session: SessionEvent = {
    "meeting_uuid": MEETING,
    "rtms_stream_id": STREAM,
    "product": "MEETING",
    "action": "STARTED",
    "event": "meeting.rtms_started",
    "server_urls": "wss://rtms.zoom.us",
    "event_ts_ms": T0 - 1000,
    "received_at_ms": T0 - 990,
    "operator_id": "30R7kT7bTIKSNUFEuH_Qlg",
    "payload_json": '{"meeting_uuid":"4Rk/ZbJyQ0+Xh2fNpm3xUA=="}',
}
_utterance: TranscriptUtterance = {
    "meeting_uuid": MEETING,
    "rtms_stream_id": STREAM,
    "utterance_id": f"{MEETING}:16778240:{T0}",
    "participant_id": 16778240,
    "participant_name": "Ada Lovelace",
    "language": 9,
    "start_time_ms": T0,
    "end_time_ms": T0 + 3000,
    "text": "Grüße — the engine 🚂 runs. It does.",
    "piece_count": 2,
    "seq": 0,
}
_index: MeetingIndex = {
    "meeting_uuid": MEETING,
    "rtms_stream_id": STREAM,
    "product": "WEBINAR",
    "state": "FINALIZED",
    "partition": 5,
    "first_offsets": {"rtms.audio": 100, "rtms.video": 37},
    "last_offsets": {"rtms.audio": 9_000_000_000, "rtms.video": 3_100},
    "started_at_ms": T0,
    "stopped_at_ms": T0 + 3_600_000,
    "stop_reason": 1,
    "participants": _participants,
    "updated_at_ms": T0 + 3_600_500,
}
_late: LateFrame = {
    "meeting_uuid": MEETING,
    "rtms_stream_id": STREAM,
    "stream_kind": "AUDIO",
    "participant_id": 16778240,
    "timestamp_ms": T0 + 20,
    "ingest_seq": 42,
    "lateness_ms": 1250,
    "source_topic": "rtms.raw.audio",
    "source_partition": 5,
    "source_offset": 123456,
    "record": b"\xc3\x01" + bytes(30),
}
_dead: DeadLetter = {
    "stage": "ingest",
    "source": "ws:media/audio",
    "reason": "audio frame is not valid base64",
    "error": "ProtocolError.bad_base64",
    "payload": b'{"msg_type":14,"content":{"data":"!!"}}',
    "received_at_ms": T0 + 77,
}


def _eos(stream_kind: str | None, **required: Any) -> dict[str, Any]:
    """An end-of-stream marker: identity, the flag and the stop reason; payload fields left to their defaults."""
    marker: dict[str, Any] = {
        "meeting_uuid": MEETING,
        "rtms_stream_id": STREAM,
        "end_of_stream": True,
        "stop_reason": 6,
        **required,
    }
    if stream_kind is not None:
        marker["stream_kind"] = stream_kind
    return marker


_FRAME_IDENTITY = {"timestamp_ms": T0 + 60_000, "ingest_seq": 3000, "received_at_ms": T0 + 60_001}

SAMPLES: dict[str, list[dict[str, Any]]] = {
    "raw_audio_frame": [dict(_raw_audio), _eos("AUDIO", media={}, **_FRAME_IDENTITY)],
    "raw_video_frame": [dict(_raw_video), _eos("VIDEO", media={}, **_FRAME_IDENTITY)],
    "raw_transcript_frame": [dict(_raw_transcript), _eos("TRANSCRIPT", **_FRAME_IDENTITY)],
    "raw_event": [dict(_raw_event), _eos("EVENT", **_FRAME_IDENTITY)],
    "audio_frame": [dict(_audio), _eos("AUDIO", media={}, seq=3000, **_FRAME_IDENTITY)],
    "video_frame": [dict(_video), _eos("VIDEO", media={}, **_FRAME_IDENTITY)],
    "meeting_event": [dict(_event), _eos("EVENT", **_FRAME_IDENTITY)],
    "transcript_utterance": [
        dict(_utterance),
        _eos(None, utterance_id=f"{MEETING}:eos", start_time_ms=T0 + 60_000, end_time_ms=T0 + 60_000),
    ],
    "session_event": [dict(_session)],
    "meeting_index": [dict(_index)],
    "late_frame": [dict(_late)],
    "dead_letter": [dict(_dead)],
}
"""Schema name -> valid records; the second record of a topic with in-band end of stream is its marker."""
