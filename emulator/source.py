"""What a stream plays: a `SyntheticMeeting` (adapted to the negotiated parameters) or a list of
hand-made items (played as given)."""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable, Iterator, Sequence
from typing import Any

from emulator.clips import RESOLUTIONS
from emulator.negotiate import ChannelParams
from emulator.wire import AUDIO, CHAT, DESKSHARE, TRANSCRIPT, VIDEO, MediaItemLike
from rtms_protocol import (
    AudioChannel,
    AudioParams,
    AudioSampleRate,
    ContentType,
    PayloadType,
    Resolution,
    VideoParams,
)


def _clip_label(resolution: int) -> str:
    """The clip size a requested resolution plays: its own, else the largest (QHD plays 1080p)."""
    label = Resolution(resolution).label
    return label if label in RESOLUTIONS else Resolution.FHD.label


class MeetingSource:
    """Adapts one meeting to what a client negotiated.

    A synthetic meeting is L16 16 kHz mono and H.264 (any other audio format or JPG/PNG is
    granted as that, and the response says so); its camera resolution and frame rate follow the
    first video or deskshare handshake when the spec allows it (a rate that does not divide the
    sync-beep period keeps the spec's). Hand-made items are played exactly as given and the
    requested parameters are echoed.
    """

    def __init__(self, meeting: Any) -> None:
        self._items: Sequence[MediaItemLike] | None = None
        self._meeting = meeting
        if not hasattr(meeting, "timeline"):
            self._items = sorted(meeting, key=lambda item: item.offset_ms)
        self._video_fixed = False

    @property
    def synthetic(self) -> bool:
        return self._items is None

    @property
    def key(self) -> Hashable:
        """Equal for sources that play the same items (shared timelines): a synthetic meeting's
        spec, else this source itself."""
        return (type(self._meeting), self._meeting.spec) if self._items is None else ("items", id(self))

    def adjust(self, channel: int, params: ChannelParams) -> ChannelParams:
        """The parameters this source really sends for `channel` given the validated request."""
        if self._items is not None:
            return params
        if channel == AUDIO and isinstance(params, AudioParams):
            return dataclasses.replace(
                params,
                content_type=ContentType.RAW_AUDIO,
                codec=PayloadType.L16,
                sample_rate=AudioSampleRate.SR_16K,
                channel=AudioChannel.MONO,
            )
        if channel in (VIDEO, DESKSHARE) and isinstance(params, VideoParams):
            spec = self._meeting.spec
            if not self._video_fixed and spec.video is not None:
                self._video_fixed = True
                self._meeting = self._derive(spec, _clip_label(params.resolution), params.fps)
                spec = self._meeting.spec
            resolution = Resolution.from_label(spec.video) if spec.video else params.resolution
            return dataclasses.replace(params, codec=PayloadType.H264, resolution=resolution, fps=spec.fps)
        return params

    def _derive(self, spec: Any, video: str, fps: int) -> Any:
        for changes in ({"video": video, "fps": fps}, {"video": video}):
            if all(getattr(spec, k) == v for k, v in changes.items()):
                return self._meeting
            try:
                new_spec = dataclasses.replace(spec, **changes)
            except ValueError:
                continue
            return type(self._meeting)(new_spec)
        return self._meeting

    def prepare(self, send_rate_ms: int) -> None:
        """Load or encode what the meeting needs (blocking: call it in a thread)."""
        if self._items is None:
            self._meeting.prepare(send_rate_ms)

    def items(
        self, channels: set[int], audio_mode: str, send_rate_ms: int, start_ms: int = 0, cameras: bool = False
    ) -> Iterator[MediaItemLike]:
        """Every item from `start_ms` on, sorted by offset: events, and media of `channels`
        (`cameras`: every participant's own camera instead of the active speaker's)."""
        if self._items is not None:
            return (i for i in self._items if i.offset_ms >= start_ms)
        timeline: Iterator[MediaItemLike] = self._meeting.timeline(
            audio_mode=audio_mode,
            send_rate_ms=send_rate_ms,
            video=VIDEO in channels,
            transcripts=TRANSCRIPT in channels,
            deskshare=DESKSHARE in channels,
            events=True,
            audio=AUDIO in channels,
            chat=CHAT in channels,
            start_ms=start_ms,
            cameras=cameras,
        )
        return timeline
