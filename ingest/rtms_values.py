"""What a received RTMS message becomes: the frame handler's values, without I/O or state machine.

Turns a parsed message into `AudioData`, `VideoData`, `TranscriptData` or `EventData` with the media
parameters Zoom granted (`MediaValues.grant`); the audio/video fast path lives beside the full path it must
agree with (`tests/ingest/test_fast_path.py`)."""

from __future__ import annotations

import binascii
from typing import Any

import pybase64

import rtms_protocol as proto
from ingest.backend import (
    AudioData,
    AudioParams,
    ChatData,
    EventData,
    Participant,
    Product,
    TranscriptData,
    VideoData,
    VideoParams,
    video_mode,
)
from rtms_protocol import MsgType

__all__ = ["FAST_MEDIA", "STATE_MSGS", "MediaValues", "event_name", "text_of"]

_EVENT_NAMES = {
    1: "first_packet",
    2: "active_speaker",
    3: "participant_join",
    4: "participant_leave",
    5: "sharing_start",
    6: "sharing_stop",
    7: "media_interrupted",
    8: "video_on",
    9: "video_off",
    10: "chat_group_create",
    11: "chat_group_delete",
    12: "chat_group_members_add",
    13: "chat_group_members_delete",
    14: "chat_group_member_status_update",
}


def event_name(event_type: int, product: Product) -> str:
    """The raw_event `name` of an EVENT_UPDATE: Contact Center reuses event types 8 and up for
    its own voice events, so those are named per product."""
    if product is Product.CONTACT_CENTER and event_type >= 8:
        return f"zcc_event_{event_type}"
    return _EVENT_NAMES.get(event_type, f"event_{event_type}")


# state messages delivered as events, and their raw_event `name`
STATE_MSGS = {
    MsgType.STREAM_STATE_UPDATE: "stream_state",
    MsgType.SESSION_STATE_UPDATE: "session_state",
    MsgType.SESSION_STATE_RESP: "session_state",
    MsgType.STREAM_STATE_RESP: "stream_state",
    MsgType.VIDEO_SUBSCRIPTION_RESP: "video_subscription",
}
# media frames taken by MediaValues.fast_media_item (transcripts and chat go the general way)
FAST_MEDIA = frozenset({MsgType.MEDIA_DATA_AUDIO, MsgType.MEDIA_DATA_VIDEO, MsgType.MEDIA_DATA_SHARE})
_OPTIONAL_INTS = ("length", "start_time", "end_time", "language")
# the fast path's AudioData and VideoData are made with every field at once (their instance dict),
# not through the frozen dataclass's __init__ (an object.__setattr__ per field: ~1 us a frame); the
# same values (`tests/ingest/test_fast_path.py` compares them with the full path's), still frozen
_new = object.__new__
_fill = object.__setattr__
_AUDIO_CODECS = {1: "L16", 2: "G711", 3: "G722", 4: "OPUS"}
_VIDEO_CODECS = {5: "JPG", 6: "PNG", 7: "H264"}


def text_of(raw: str | bytes) -> str:
    """A received message as text (an event's `body`)."""
    return raw if isinstance(raw, str) else raw.decode("utf-8", "replace")


class MediaValues:
    """One stream's translation of received messages into values, with the media parameters granted
    so far (`audio`, `video`, `deskshare`: what the values carry and are decoded with)."""

    def __init__(self, product: Product) -> None:
        self.product = product
        self.audio = AudioParams()
        self.video = VideoParams()
        self.deskshare = VideoParams(codec="JPG", fps=1)

    def grant(self, key: str, params: proto.MediaParams | None, asked: proto.MediaParams) -> None:
        """Remember the parameters to decode with: the response's, else what we asked for."""
        if key == "audio":
            a = (params.audio if params else None) or asked.audio or proto.AudioParams()
            rate = proto.AudioSampleRate(a.sample_rate).hz if a.sample_rate in (0, 1, 2, 3) else 16000
            self.audio = AudioParams(
                codec=_AUDIO_CODECS.get(a.codec, str(a.codec)),
                sample_rate=rate,
                channels=a.channel,
                send_rate_ms=a.send_rate,
                mixed=a.data_opt != proto.DataOption.AUDIO_MULTI_STREAMS,
            )
        elif key in ("video", "deskshare"):
            got = (getattr(params, key) if params else None) or getattr(asked, key) or proto.VideoParams()
            size = proto.Resolution(got.resolution).size if got.resolution in (1, 2, 3, 4) else (0, 0)
            value = VideoParams(
                codec=_VIDEO_CODECS.get(got.codec, str(got.codec)),
                width=size[0],
                height=size[1],
                fps=got.fps,
                mode=video_mode(got.data_opt),
            )
            setattr(self, key, value)

    def fast_media_item(self, msg_type: int, msg: dict[str, Any]) -> AudioData | VideoData | None:
        """Fast path for audio and video frames (~50 per meeting-second): the value straight from
        the JSON object, without the intermediate `MediaFrame` and `_get` per field. It accepts
        exactly the well-formed frames `MediaFrame.from_dict` accepts (exact JSON types, absent or
        null optional fields defaulted, strict base64) and returns None for anything else, which
        the caller then parses the slow way to get the exact error."""
        c = msg.get("content")
        if type(c) is not dict:
            return None
        data = c.get("data")
        ts = c.get("timestamp")
        if type(data) is not str or type(ts) is not int:
            return None
        user_id = c.get("user_id")
        if user_id is None:
            user_id = 0
        elif type(user_id) is not int:
            return None
        name = c.get("user_name")
        if name is not None and type(name) is not str:
            return None
        channel_id = c.get("channel_id")
        if channel_id is not None and type(channel_id) is not str:
            return None
        for key in _OPTIONAL_INTS:  # parsed (and so checked) by MediaFrame though unused here
            value = c.get(key)
            if value is not None and type(value) is not int:
                return None
        try:
            # pybase64 (SIMD, ~20x binascii on a video frame) accepts a subset of what strict_mode
            # accepts, decoded alike; strict_mode accepts a subset of b64decode(validate=True)'s
            payload = pybase64.b64decode(data, validate=True)
        except ValueError:  # binascii.Error too; e.g. padding after a full quad ("QUJD=")
            try:
                payload = binascii.a2b_base64(data, strict_mode=True)
            except (binascii.Error, ValueError):
                return None
        if msg_type == MsgType.MEDIA_DATA_AUDIO:
            audio = _new(AudioData)
            _fill(audio, "__dict__", {"timestamp_ms": ts, "payload": payload, "params": self.audio,
                                      "participant_id": user_id, "participant_name": name or None,
                                      "channel_id": channel_id})  # fmt: skip
            return audio
        video = _new(VideoData)
        if msg_type == MsgType.MEDIA_DATA_VIDEO:
            kind, params = "VIDEO", self.video
        else:
            kind, params = "DESKSHARE", self.deskshare
        _fill(video, "__dict__", {"kind": kind, "timestamp_ms": ts, "payload": payload, "params": params,
                                  "participant_id": user_id, "participant_name": name or None})  # fmt: skip
        return video

    def media_item(self, frame: proto.MediaFrame) -> AudioData | VideoData | TranscriptData | ChatData:
        """The value of a parsed media frame (the full path)."""
        name = frame.user_name or None
        if frame.msg_type == MsgType.MEDIA_DATA_AUDIO:
            assert isinstance(frame.data, bytes)
            return AudioData(frame.timestamp, frame.data, self.audio, frame.user_id, name, frame.channel_id)
        if frame.msg_type in (MsgType.MEDIA_DATA_VIDEO, MsgType.MEDIA_DATA_SHARE):
            assert isinstance(frame.data, bytes)
            if frame.msg_type == MsgType.MEDIA_DATA_VIDEO:
                return VideoData("VIDEO", frame.timestamp, frame.data, self.video, frame.user_id, name)
            return VideoData("DESKSHARE", frame.timestamp, frame.data, self.deskshare, frame.user_id, name)
        if frame.msg_type == MsgType.MEDIA_DATA_TRANSCRIPT:
            assert isinstance(frame.data, str)
            return TranscriptData(
                timestamp_ms=frame.timestamp,
                text=frame.data,
                participant_id=frame.user_id,
                participant_name=name,
                channel_id=frame.channel_id,
                language=frame.language,
                start_time_ms=frame.start_time or 0,
                end_time_ms=frame.end_time or 0,
            )
        # chat (18) takes `chat_item` (its own fields); a MediaFrame of it still becomes a message
        assert isinstance(frame.data, str)
        return ChatData(frame.timestamp, frame.data, frame.user_id, name)

    def chat_item(self, frame: proto.ChatFrame) -> ChatData:
        """A chat message (msg 18) as a value."""
        return ChatData(
            timestamp_ms=frame.timestamp,
            text=frame.text,
            participant_id=frame.user_id,
            participant_name=frame.user_name or None,
            message_id=frame.message_id,
            recipients=tuple(Participant(p.user_id, p.user_name) for p in frame.recipients),
        )

    def audio_metadata(self, msg: dict[str, Any], raw: str | bytes) -> EventData:
        """META_DATA_AUDIO, kept as an event."""
        ts = msg.get("timestamp")
        return EventData(
            msg_type=msg["msg_type"],
            name="audio_metadata",
            timestamp_ms=ts if isinstance(ts, int) else 0,
            body=text_of(raw),
        )

    def event(self, ev: proto.EventUpdate, raw: str | bytes) -> EventData:
        """An EVENT_UPDATE as a raw event, named per product (`event_name`)."""
        participants = tuple(Participant(p.user_id, p.user_name) for p in ev.participants or ())
        return EventData(
            msg_type=MsgType.EVENT_UPDATE,
            name=event_name(ev.event_type, self.product),
            timestamp_ms=ev.timestamp,
            body=text_of(raw),
            event_type=ev.event_type,
            participant_id=ev.user_id or 0,
            participant_name=ev.user_name or None,
            participants=participants,
        )

    def state_event(
        self,
        msg: dict[str, Any],
        raw: str | bytes,
        state: int | None,
        reason: int | None,
        timestamp: int,
        rtms_session_id: str | None = None,
    ) -> EventData:
        """A stream/session state message (`STATE_MSGS`) as a raw event."""
        return EventData(
            msg_type=msg["msg_type"],
            name=STATE_MSGS.get(msg["msg_type"], "state"),
            timestamp_ms=timestamp,
            body=text_of(raw),
            state=state,
            reason=reason,
            rtms_session_id=rtms_session_id or None,
        )
