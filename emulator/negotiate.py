"""Data handshake negotiation: which channels a media socket carries and with which parameters.

Pure: `negotiate()` validates the request (RTMS 2.7 status codes), clamps what the protocol clamps, fills
defaults and lets the media source adjust the rest; the response carries the granted parameters."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from emulator.wire import AUDIO, CHANNEL_NAMES, CHAT, DESKSHARE, TRANSCRIPT, VIDEO
from rtms_protocol import (
    AudioChannel,
    AudioParams,
    AudioSampleRate,
    ContentType,
    DataOption,
    MediaParams,
    MediaType,
    PayloadType,
    Resolution,
    StatusCode,
    TranscriptLanguage,
    TranscriptParams,
    VideoParams,
)


@dataclass(frozen=True)
class ChatParams:
    """`media_params.chat`: text is all there is (content_type 5)."""

    content_type: int = ContentType.TEXT


ChannelParams = AudioParams | VideoParams | TranscriptParams | ChatParams
# (channel, validated params) -> what the source will really send
Adjust = Callable[[int, ChannelParams], ChannelParams]

DEFAULTS: dict[int, ChannelParams] = {
    AUDIO: AudioParams(),
    VIDEO: VideoParams(),
    DESKSHARE: VideoParams(data_opt=None),
    TRANSCRIPT: TranscriptParams(),
    CHAT: ChatParams(),
}
_BIT_CHANNEL = {
    MediaType.AUDIO: AUDIO,
    MediaType.VIDEO: VIDEO,
    MediaType.DESKSHARE: DESKSHARE,
    MediaType.TRANSCRIPT: TRANSCRIPT,
    MediaType.CHAT: CHAT,
}


@dataclass(frozen=True)
class Grant:
    """The outcome of one data handshake: status, the channels the socket carries, their params."""

    status: int
    reason: str = ""
    channels: tuple[int, ...] = ()
    params: dict[int, ChannelParams] | None = None

    def media_params(self) -> MediaParams | None:
        """The `media_params` to echo in DATA_HAND_SHAKE_RESP."""
        if not self.params:
            return None
        p = self.params
        return MediaParams(
            audio=p.get(AUDIO),  # type: ignore[arg-type]
            video=p.get(VIDEO),  # type: ignore[arg-type]
            deskshare=p.get(DESKSHARE),  # type: ignore[arg-type]
            transcript=p.get(TRANSCRIPT),  # type: ignore[arg-type]
            chat={"content_type": p[CHAT].content_type} if CHAT in p else None,  # type: ignore[union-attr]
        )


def _chat_params(requested: dict[str, Any]) -> ChatParams:
    content_type = requested.get("content_type", ContentType.TEXT)
    return ChatParams(content_type if isinstance(content_type, int) else -1)


def _fail(code: StatusCode, detail: str = "") -> Grant:
    return Grant(int(code), detail or code.name)


def channels_for(media_type: int) -> tuple[int, ...] | StatusCode:
    """The channels of a `media_type` bitmask (ALL = every channel), or the status code refusing it."""
    if media_type <= 0 or media_type >= 64:
        return StatusCode.MEDIA_TYPE_INVALID_VALUE
    if media_type & MediaType.ALL:  # "everything the app's scopes allow": the emulator grants all
        return (AUDIO, VIDEO, DESKSHARE, TRANSCRIPT, CHAT)
    return tuple(ch for bit, ch in _BIT_CHANNEL.items() if media_type & bit)


def check_audio(p: AudioParams) -> AudioParams | StatusCode:
    """Validate audio params; clamp `send_rate` up to a multiple of 20 ms, at most 1000."""
    if p.content_type not in (ContentType.RTP, ContentType.RAW_AUDIO):
        return StatusCode.INVALID_MEDIA_AUDIO_CONTENT_TYPE
    if p.sample_rate not in set(AudioSampleRate):
        return StatusCode.INVALID_MEDIA_AUDIO_SAMPLE_RATE
    if p.channel not in set(AudioChannel):
        return StatusCode.INVALID_MEDIA_AUDIO_CHANNEL
    if p.codec not in (PayloadType.L16, PayloadType.G711, PayloadType.G722, PayloadType.OPUS):
        return StatusCode.INVALID_MEDIA_AUDIO_CODEC
    if p.data_opt not in (DataOption.AUDIO_MIXED_STREAM, DataOption.AUDIO_MULTI_STREAMS):
        return StatusCode.INVALID_MEDIA_AUDIO_DATA_OPT
    if p.send_rate <= 0:
        return StatusCode.INVALID_MEDIA_AUDIO_SEND_RATE
    return replace(p, send_rate=min(1000, -(-p.send_rate // 20) * 20))


def check_video(p: VideoParams, share: bool) -> VideoParams | StatusCode:
    """Validate video (or deskshare) params; fps is clamped to 1..30, and JPG/PNG to the
    documented 5 fps (video) / 1 fps for PNG share."""
    if p.content_type != ContentType.RAW_VIDEO:
        return (
            StatusCode.INVALID_MEDIA_DESKSHARE_CONTENT_TYPE
            if share
            else StatusCode.INVALID_MEDIA_VIDEO_CONTENT_TYPE
        )
    if p.codec not in (PayloadType.JPG, PayloadType.PNG, PayloadType.H264):
        return StatusCode.INVALID_MEDIA_DESKSHARE_CODEC if share else StatusCode.INVALID_MEDIA_VIDEO_CODEC
    if p.resolution not in set(Resolution):
        return (
            StatusCode.INVALID_MEDIA_DESKSHARE_RESOLUTION
            if share
            else StatusCode.INVALID_MEDIA_VIDEO_RESOLUTION
        )
    if not share and p.data_opt not in (
        DataOption.VIDEO_SINGLE_ACTIVE_STREAM,
        DataOption.VIDEO_SINGLE_INDIVIDUAL_STREAM,
        DataOption.VIDEO_MIXED_GALLERY_VIEW,
    ):
        return StatusCode.INVALID_MEDIA_VIDEO_DATA_OPT
    if p.fps <= 0:
        return StatusCode.INVALID_MEDIA_DESKSHARE_FPS if share else StatusCode.INVALID_MEDIA_VIDEO_FPS
    limit = 30
    if p.codec == PayloadType.JPG or p.codec == PayloadType.PNG:
        limit = 1 if share and p.codec == PayloadType.PNG else 5
    return replace(p, fps=min(p.fps, limit))


def check_transcript(p: TranscriptParams) -> TranscriptParams | StatusCode:
    """Validate transcript params."""
    if p.content_type != ContentType.TEXT:
        return StatusCode.INVALID_MEDIA_TRANSCRIPT_CONTENT_TYPE
    if p.src_language not in set(TranscriptLanguage):
        return StatusCode.INVALID_MEDIA_TRANSCRIPT_SOURCE_LANGUAGE
    return p


def negotiate(media_type: int, requested: MediaParams | None, adjust: Adjust | None = None) -> Grant:
    """Decide a data handshake: status, channels and granted parameters."""
    channels = channels_for(media_type)
    if isinstance(channels, StatusCode):
        return _fail(channels)
    asked: dict[int, ChannelParams | None] = {
        AUDIO: requested.audio if requested else None,
        VIDEO: requested.video if requested else None,
        DESKSHARE: requested.deskshare if requested else None,
        TRANSCRIPT: requested.transcript if requested else None,
        CHAT: _chat_params(requested.chat) if requested and requested.chat else None,
    }
    granted: dict[int, ChannelParams] = {}
    for ch in channels:
        params = asked[ch] or DEFAULTS[ch]
        checked: ChannelParams | StatusCode
        if isinstance(params, AudioParams):
            checked = check_audio(params)
        elif isinstance(params, VideoParams):
            checked = check_video(params, share=ch == DESKSHARE)
        elif isinstance(params, ChatParams):
            checked = (
                params
                if params.content_type == ContentType.TEXT
                else StatusCode.INVALID_MEDIA_CHAT_CONTENT_TYPE
            )
        else:
            checked = check_transcript(params)
        if isinstance(checked, StatusCode):
            return _fail(checked, f"{checked.name} ({CHANNEL_NAMES[ch]})")
        granted[ch] = adjust(ch, checked) if adjust is not None else checked
    return Grant(int(StatusCode.OK), "", channels, granted)
