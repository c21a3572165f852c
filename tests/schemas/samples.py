"""A realistic valid record of every value schema (and of the StreamEnd marker header), typed with
the generated shapes (schemas.records). Used by the codec, evolution and contract tests."""

from __future__ import annotations

from typing import Any

from schemas.records import (
    AudioFrame,
    ChatMessage,
    DeadLetter,
    LateFrame,
    MeetingEvent,
    MeetingIndex,
    Participant,
    ProcessorState,
    RawAudioFrame,
    RawChatMessage,
    RawEvent,
    RawTranscriptFrame,
    RawVideoFrame,
    SessionEvent,
    StreamEnd,
    StreamProgress,
    TranscriptUtterance,
    VideoFrame,
)

MEETING = "4Rk/ZbJyQ0+Xh2fNpm3xUA=="
STREAM = "03db704592624398931a588dd78200cb"
T0 = 1_732_400_000_000  # ms since the epoch
EPOCH = 7_021_931_772_144_187_317

_PCM = bytes(range(256)) * 2 + bytes(128)  # 640 bytes: 20 ms of 16 kHz mono L16
_H264 = b"\x00\x00\x00\x01\x65" + bytes(20_000 - 5)  # a 20 KB IDR access unit

_stamp = {"stream_started_ms": T0 - 1000, "ingest_epoch": EPOCH}

_raw_audio: RawAudioFrame = {
    "meeting_uuid": MEETING,
    "rtms_stream_id": STREAM,
    "stream_kind": "AUDIO",
    "participant_id": 16778240,
    "participant_name": "Ada Lovelace",
    "timestamp_ms": T0 + 20,
    "stream_started_ms": T0 - 1000,
    "ingest_epoch": EPOCH,
    "ingest_seq": 42,
    "received_at_ms": T0 + 45,
    "payload": _PCM,
    "media": {"codec": "L16", "sample_rate": 16000, "channels": 1, "send_rate_ms": 20, "mixed": False},
}
_audio: AudioFrame = {**_raw_audio, "seq": 41, "offset_ms": 1020}
_audio_gap: AudioFrame = {
    **_raw_audio,
    "payload": b"",
    "seq": 42,
    "offset_ms": 1040,
    "gap": {"start_ms": T0 + 40, "length_ms": 1_960, "reason": "LOSS"},
}
_raw_video: RawVideoFrame = {
    "meeting_uuid": MEETING,
    "rtms_stream_id": STREAM,
    "stream_kind": "DESKSHARE",
    "participant_id": 16778240,
    "channel_id": "cc-7",
    "timestamp_ms": T0 + 33,
    "stream_started_ms": T0 - 1000,
    "ingest_epoch": EPOCH,
    "ingest_seq": 7,
    "received_at_ms": T0 + 60,
    "payload": _H264,
    "keyframe": True,
    "has_parameter_sets": True,
    "media": {"codec": "H264", "width": 1280, "height": 720, "fps": 30, "mode": "ACTIVE_SPEAKER"},
}
_video: VideoFrame = {**_raw_video, "seq": 6, "offset_ms": 1033}
_video_gap: VideoFrame = {
    **_raw_video,
    "payload": b"",
    "keyframe": False,
    "has_parameter_sets": False,
    "seq": 7,
    "offset_ms": 1073,
    "gap": {"start_ms": T0 + 73, "length_ms": 5_000, "reason": "VIDEO_OFF"},
}
_raw_transcript: RawTranscriptFrame = {
    "meeting_uuid": MEETING,
    "rtms_stream_id": STREAM,
    "stream_kind": "TRANSCRIPT",
    "participant_id": 16778240,
    "participant_name": "Ada Lovelace",
    "timestamp_ms": T0 + 1500,
    "stream_started_ms": T0 - 1000,
    "ingest_epoch": EPOCH,
    "ingest_seq": 3,
    "received_at_ms": T0 + 1510,
    "text": "Grüße — the engine 🚂 runs",
    "language": 9,
    "start_time_ms": T0,
    "end_time_ms": None,
}
_raw_chat: RawChatMessage = {
    "meeting_uuid": MEETING,
    "rtms_stream_id": STREAM,
    "stream_kind": "CHAT",
    "participant_id": 16778240,
    "participant_name": "Ada Lovelace",
    "timestamp_ms": T0 + 2500,
    "stream_started_ms": T0 - 1000,
    "ingest_epoch": EPOCH,
    "ingest_seq": 0,
    "received_at_ms": T0 + 2510,
    "message_id": "msg-1",
    "text": "Grüße — see the 🚂 slides",
    "text_truncated": False,
    "private": True,
    "recipients": [{"user_id": 16779264, "user_name": "Charles Babbage"}],
}
_chat: ChatMessage = {
    "meeting_uuid": MEETING,
    "rtms_stream_id": STREAM,
    "chat_id": f"{STREAM}/0",
    "seq": 0,
    "message_id": None,
    "sender_id": 16778240,
    "sender_name": "Ada Lovelace",
    "timestamp_ms": T0 + 2500,
    "stream_started_ms": T0 - 1000,
    "text": "hello everyone",
    "text_truncated": False,
    "private": False,
    "recipients": [],
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
    "stream_started_ms": T0 - 1000,
    "ingest_epoch": EPOCH,
    "ingest_seq": 1,
    "received_at_ms": T0 + 9,
    "msg_type": 6,
    "event_type": 2,
    "name": "participant_join",
    "participants": _participants,
    "body": '{"msg_type":6,"content":{"event_type":2}}',
}
_lifecycle: RawEvent = {
    "meeting_uuid": MEETING,
    "rtms_stream_id": STREAM,
    "stream_kind": "EVENT",
    "timestamp_ms": T0 - 1000,
    "stream_started_ms": T0 - 1000,
    "ingest_epoch": EPOCH,
    "ingest_seq": 0,
    "received_at_ms": T0 - 990,
    "zoom_timestamp": True,
    "msg_type": 0,
    "name": "rtms_started",
    "body": '{"meeting_uuid":"4Rk/ZbJyQ0+Xh2fNpm3xUA=="}',
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
_ended: SessionEvent = {
    "meeting_uuid": MEETING,
    "rtms_stream_id": STREAM,
    "action": "ENDED",
    "event": "rtmsflow.ended",
    "event_ts_ms": T0 + 3_600_000,
    "received_at_ms": T0 + 3_600_001,
}
_utterance: TranscriptUtterance = {
    "meeting_uuid": MEETING,
    "rtms_stream_id": STREAM,
    "utterance_id": f"{STREAM}/0",
    "seq": 0,
    "participant_id": 16778240,
    "participant_name": "Ada Lovelace",
    "start_ms": T0,
    "end_ms": T0 + 3000,
    "stream_started_ms": T0 - 1000,
    "text": "Grüße — the engine 🚂 runs. It does.",
    "language_code": 9,
    "language": "en",
    "final": True,
    "piece_count": 2,
}
_index: MeetingIndex = {
    "meeting_uuid": MEETING,
    "product": "WEBINAR",
    "partition": 5,
    "participants": _participants,
    "streams": [
        {
            "rtms_stream_id": STREAM,
            "state": "ENDED",
            "ended": "STOPPED",
            "started_at_ms": T0 - 1000,
            "stopped_at_ms": T0 + 3_600_000,
            "stop_reason": 1,
            "offsets": [
                {
                    "topic": "rtms.audio",
                    "first_offset": 100,
                    "last_offset": 9_000_000_000,
                    "end_offset": 9_000_000_001,
                },
                {"topic": "rtms.video", "first_offset": 37, "last_offset": 3_100, "end_offset": None},
            ],
            "participants": _participants,
        },
        {
            "rtms_stream_id": "restarted-stream",
            "state": "LIVE",
            "ended": None,
            "started_at_ms": T0 + 3_700_000,
            "stopped_at_ms": None,
            "stop_reason": None,
            "offsets": [],
            "participants": [],
        },
    ],
    "updated_at_ms": T0 + 3_700_500,
}
_late: LateFrame = {
    "meeting_uuid": MEETING,
    "rtms_stream_id": STREAM,
    "stream_kind": "AUDIO",
    "participant_id": 16778240,
    "timestamp_ms": T0 + 20,
    "ingest_epoch": EPOCH,
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
_stream_end: StreamEnd = {
    "meeting_uuid": MEETING,
    "rtms_stream_id": STREAM,
    "topic": "rtms.raw.audio",
    "ended": "STOPPED",
    "stop_reason": 6,
    "stream_started_ms": T0 - 1000,
    "last_timestamp_ms": T0 + 60_000,
    "ingest_epoch": EPOCH,
    "counts": {"AUDIO": 3001},
    "complete": True,
}
_progress: StreamProgress = {
    "meeting_uuid": MEETING,
    "rtms_stream_id": STREAM,
    "topic": "rtms.raw.video",
    "stream_started_ms": T0 - 1000,
    "ingest_epoch": EPOCH,
    "media_ms": T0 + 30_000,
    "losses": [{"start_ms": T0 + 29_000, "end_ms": T0 + 29_120}],
}

_state: ProcessorState = {
    "group": "rtmsflow-processors",
    "partition": 3,
    "commits": {"rtms.raw.audio": 120, "rtms.raw.transcript": 7},
    "positions": {"rtms.raw.audio": 131, "rtms.raw.transcript": 9},
    "ends": {"rtms.audio": 118, "rtms.late": 2},
    "streams": [
        {
            "meeting_uuid": MEETING,
            "rtms_stream_id": STREAM,
            "stream_started_ms": T0 - 1000,
            "counts": {"rtms.audio|AUDIO": 117, "rtms.audio|LATE": 1},
            "utterance_next_seq": 4,
            "utterance_last_start_ms": T0 - 200,
            "utterance_partials_written": 2,
            "lanes": [
                {
                    "topic": "rtms.raw.audio",
                    "stream_kind": "AUDIO",
                    "participant_id": 16778240,
                    "channel_id": None,
                    "resume_ts": T0 + 20,
                    "resume_digest": bytes(range(16)),
                    "recent": (T0 + 20).to_bytes(8, "big") + bytes(range(16)),
                    "seq": 118,
                    "cursor_ms": T0 + 40,
                    "last_epoch": EPOCH,
                    "template": '{"participant_id": 16778240}',
                    "mark_ms": T0 + 300,
                }
            ],
        }
    ],
    "ended": [f"{MEETING}|0000|rtms.raw.audio"],
}

SAMPLES: dict[str, list[dict[str, Any]]] = {
    "raw_audio_frame": [dict(_raw_audio)],
    "raw_video_frame": [dict(_raw_video)],
    "raw_transcript_frame": [dict(_raw_transcript)],
    "raw_event": [dict(_raw_event), dict(_lifecycle)],
    "raw_chat_message": [dict(_raw_chat)],
    "chat_message": [dict(_chat)],
    "audio_frame": [dict(_audio), dict(_audio_gap)],
    "video_frame": [dict(_video), dict(_video_gap)],
    "meeting_event": [dict(_event)],
    "transcript_utterance": [dict(_utterance)],
    "session_event": [dict(_session), dict(_ended)],
    "meeting_index": [dict(_index)],
    "late_frame": [dict(_late)],
    "dead_letter": [dict(_dead)],
    "stream_end": [dict(_stream_end)],
    "stream_progress": [dict(_progress)],
    "processor_state": [dict(_state)],
}
"""Schema name -> valid records (stream_end and stream_progress are control
records' header records, not topic values)."""
