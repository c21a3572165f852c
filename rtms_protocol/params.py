"""The `media_params` of RTMS data handshakes: what a client asks for and what the server grants.

Absent numbers take the protocol defaults (L16 16 kHz mono mixed 20 ms audio; H.264 720p video).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

from rtms_protocol.codec import drop_none, get, get_obj
from rtms_protocol.constants import (
    AudioChannel,
    AudioSampleRate,
    ContentType,
    DataOption,
    PayloadType,
    Resolution,
    TranscriptLanguage,
)


@dataclass(frozen=True, slots=True)
class AudioParams:
    """`media_params.audio`. Protocol defaults: L16, 16 kHz, mono, mixed, 20 ms."""

    content_type: int = ContentType.RAW_AUDIO
    sample_rate: int = AudioSampleRate.SR_16K
    channel: int = AudioChannel.MONO
    codec: int = PayloadType.L16
    data_opt: int = DataOption.AUDIO_MIXED_STREAM
    send_rate: int = 20


@dataclass(frozen=True, slots=True)
class VideoParams:
    """`media_params.video` (`data_opt` None) or `.deskshare` (no `data_opt` on the wire)."""

    content_type: int = ContentType.RAW_VIDEO
    codec: int = PayloadType.H264
    resolution: int = Resolution.HD
    data_opt: int | None = DataOption.VIDEO_SINGLE_ACTIVE_STREAM
    fps: int = 30


@dataclass(frozen=True, slots=True)
class TranscriptParams:
    """`media_params.transcript`."""

    content_type: int = ContentType.TEXT
    src_language: int = TranscriptLanguage.ENGLISH
    enable_lid: bool = True


@dataclass(frozen=True, slots=True)
class MediaParams:
    """The `media_params` object of a data handshake: one entry per media type (None = absent)."""

    audio: AudioParams | None = None
    video: VideoParams | None = None
    deskshare: VideoParams | None = None
    transcript: TranscriptParams | None = None
    chat: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.audio is not None:
            out["audio"] = _params_dict(self.audio)
        if self.video is not None:
            out["video"] = _params_dict(self.video)
        if self.deskshare is not None:
            out["deskshare"] = _params_dict(self.deskshare)
        if self.transcript is not None:
            out["transcript"] = _params_dict(self.transcript)
        if self.chat is not None:
            out["chat"] = dict(self.chat)
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None, path: str = "media_params.") -> MediaParams | None:
        """Parse `media_params`; unknown keys are ignored, absent numbers take the protocol default."""
        if d is None:
            return None
        audio = get_obj(d, "audio", path, required=False)
        video = get_obj(d, "video", path, required=False)
        share = get_obj(d, "deskshare", path, required=False)
        transcript = get_obj(d, "transcript", path, required=False)
        chat = get_obj(d, "chat", path, required=False)
        return cls(
            audio=_params_from(AudioParams, audio, path + "audio.") if audio is not None else None,
            video=_params_from(VideoParams, video, path + "video.") if video is not None else None,
            deskshare=(
                _params_from(VideoParams, share, path + "deskshare.", data_opt=None)
                if share is not None
                else None
            ),
            transcript=(
                _params_from(TranscriptParams, transcript, path + "transcript.")
                if transcript is not None
                else None
            ),
            chat=chat,
        )


def _params_dict(p: AudioParams | VideoParams | TranscriptParams) -> dict[str, Any]:
    return drop_none({name: getattr(p, name) for name in p.__slots__})


_P = TypeVar("_P", AudioParams, VideoParams, TranscriptParams)


def _params_from(cls: type[_P], d: dict[str, Any], path: str, **overrides: Any) -> _P:
    values: dict[str, Any] = {}
    for name in cls.__slots__:
        default = overrides.get(name, getattr(cls(), name))
        typ = bool if isinstance(default, bool) else int
        values[name] = get(d, name, typ, default, path)
    return cls(**values)
