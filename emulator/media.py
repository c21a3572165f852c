"""Synthetic meetings: real PCM, real H.264, transcripts and events, deterministic from a seed.

`SyntheticMeeting(MeetingSpec(...)).timeline()` yields `MediaItem`s in media-time order, lazily over
cached material, so memory does not grow with the meeting. At each `beep_instants_ms` the audio beeps and
the videos show a white frame: sync markers."""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from emulator.clips import RESOLUTIONS, ClipParams, VideoClip, get_clip
from emulator.conversation import (
    TRANSCRIPT_DELAY_MS,
    ChatMessage,
    Participant,
    Utterance,
    chat_messages,
    make_participants,
    utterances,
)
from emulator.voices import BEEP_MS, BYTES_PER_MS, add_beep, mix, voice_for, voice_loop

__all__ = ["MediaItem", "MeetingSpec", "Participant", "SyntheticMeeting"]

MediaKind = Literal["audio", "video", "deskshare", "transcript", "chat", "event"]
AudioMode = Literal["mixed", "multi"]

# EVENT_UPDATE event types (RTMS protocol, section 2.8).
EV_ACTIVE_SPEAKER = 2
EV_PARTICIPANT_JOIN = 3
EV_PARTICIPANT_LEAVE = 4
EV_SHARING_START = 5
EV_SHARING_STOP = 6
EV_VIDEO_ON = 8
EV_VIDEO_OFF = 9

# At equal offsets: events first (a speaker change precedes that speaker's audio), then media.
_PRIORITY = {"event": 0, "audio": 1, "video": 2, "deskshare": 3, "transcript": 4, "chat": 5}

MAX_CLIP_MS = 10_000  # beep period (= video loop length) cap: keeps clip encode time and memory small


@dataclass(frozen=True, slots=True)
class MediaItem:
    """One thing the server sends, at `offset_ms` of media time from the stream's start.

    * audio: `data` is L16 PCM (16 kHz mono); mixed audio has user_id 0 and user_name "".
    * video / deskshare: `data` is one H.264 Annex-B access unit; `keyframe` marks IDRs (which
      carry SPS/PPS in-band).
    * transcript: `data` is the text; `start_ms`/`end_ms` bound the utterance (media time).
    * chat: `data` is the text, from `user_id`; `event` holds `message_id` and `recipients`
      ([{user_id, user_name}], empty: to everyone).
    * event: `event` is the EVENT_UPDATE `event` object without its `timestamp`.
    """

    kind: MediaKind
    offset_ms: int
    user_id: int
    user_name: str
    data: bytes | str = b""
    start_ms: int | None = None
    end_ms: int | None = None
    event: dict[str, Any] | None = None
    keyframe: bool = False


@dataclass(frozen=True)
class MeetingSpec:
    """What a synthetic meeting contains. Equal specs give byte-identical timelines.

    `fps` defaults to 30, what Zoom's SDK asks for with H.264. `beep_every_ms` (None: no sync
    marks) must put beeps on whole video frames and 20 ms audio packets, and is also the video
    loop length, so it is capped at MAX_CLIP_MS.
    """

    seed: int = 1
    participants: int = 3
    duration_s: float = 60.0
    video: str | None = "720p"
    fps: int = 30
    audio_send_rate_ms: int = 20
    beep_every_ms: int | None = 5_000
    transcripts: bool = True
    deskshare: bool = False
    chat: bool = True  # a chat script (`emulator.conversation.chat_messages`) for chat subscribers
    # The last participant's camera is off for a stretch in the middle (`camera_off_window`).
    camera_off: bool = False

    def __post_init__(self) -> None:
        if self.participants < 1:
            raise ValueError(f"participants must be >= 1, got {self.participants}")
        if not self.duration_s > 0:
            raise ValueError(f"duration_s must be positive, got {self.duration_s}")
        if self.video is not None and self.video not in RESOLUTIONS:
            raise ValueError(f"video must be one of {sorted(RESOLUTIONS)} or None, got {self.video!r}")
        if not 1 <= self.fps <= 30:
            raise ValueError(f"fps must be in 1..30 (RTMS maximum), got {self.fps}")
        _check_send_rate(self.audio_send_rate_ms)
        if self.beep_every_ms is not None:
            unit = self.beep_unit_ms
            if self.beep_every_ms % unit or not 2 * unit <= self.beep_every_ms <= MAX_CLIP_MS:
                raise ValueError(
                    f"beep_every_ms must be a multiple of {unit} ms (whole frames at {self.fps} fps and whole "
                    f"20 ms packets) between {2 * unit} and {MAX_CLIP_MS}, got {self.beep_every_ms}"
                )

    @property
    def duration_ms(self) -> int:
        return round(self.duration_s * 1000)

    @property
    def beep_unit_ms(self) -> int:
        """The smallest step that is both a whole number of frames and of 20 ms packets."""
        frame_step = 1000 // math.gcd(1000, self.fps)
        return math.lcm(20, frame_step)


def _check_send_rate(send_rate_ms: int) -> None:
    if send_rate_ms % 20 or not 20 <= send_rate_ms <= 1000:
        raise ValueError(f"audio send rate must be a multiple of 20 ms in 20..1000, got {send_rate_ms}")


@dataclass(frozen=True, slots=True)
class _Share:
    """When participant 0 shares their screen: frame indices [first, end)."""

    first_frame: int
    end_frame: int
    start_ms: int
    stop_ms: int


@dataclass(frozen=True, slots=True)
class _CameraOff:
    """When the last participant's camera is off: frame indices [first, end), media ms [start, stop)."""

    user_id: int
    first_frame: int
    end_frame: int
    start_ms: int
    stop_ms: int


@dataclass
class SyntheticMeeting:
    """A meeting played from a `MeetingSpec`; see the module docstring."""

    spec: MeetingSpec
    participants: list[Participant] = field(init=False)

    def __post_init__(self) -> None:
        self.participants = make_participants(self.spec.seed, self.spec.participants)

    # -- sync marks ---------------------------------------------------------------------------

    @property
    def duration_ms(self) -> int:
        return self.spec.duration_ms

    @property
    def beep_phase_ms(self) -> int:
        """Offset of the first beep: about half a period in, on the alignment grid."""
        period = self.spec.beep_every_ms
        if period is None:
            return 0
        unit = self.spec.beep_unit_ms
        return max(unit, period // 2 // unit * unit)

    @property
    def beep_instants_ms(self) -> range:
        """Media-time offsets where a beep starts and a flash frame is shown (a lazy range)."""
        period = self.spec.beep_every_ms
        if period is None:
            return range(0)
        # Every flash frame of the looped video has its beep (one near the end may be cut short).
        return range(self.beep_phase_ms, self.duration_ms, period)

    # -- cached material ------------------------------------------------------------------------

    def _clip_params(self, kind: Literal["camera", "screen"]) -> ClipParams:
        spec = self.spec
        resolution = spec.video or "720p"
        period = spec.beep_every_ms
        frame_count = (period if period else 2_000) * spec.fps // 1000
        flash = self.beep_phase_ms * spec.fps // 1000 if period else None
        return ClipParams(
            kind, resolution, spec.fps, frame_count, gop=min(spec.fps, frame_count), flash_index=flash
        )

    def video_clip(self) -> VideoClip:
        """The camera loop (encoded on first use in this process or machine)."""
        return get_clip(self._clip_params("camera"))

    def share_clip(self) -> VideoClip:
        """The screen-share loop."""
        return get_clip(self._clip_params("screen"))

    def prepare(self, send_rate_ms: int | None = None) -> None:
        """Load or encode every clip and voice this meeting needs. Blocking (up to ~1 s per clip
        on a cache miss): call it from a thread before serving, not on the event loop."""
        if self.spec.video:
            self.video_clip()
        if self.spec.deskshare:
            self.share_clip()
        for i in range(self.spec.participants):
            voice_loop(voice_for(self.spec.seed, i), send_rate_ms or self.spec.audio_send_rate_ms)

    def utterances(self) -> Iterator[Utterance]:
        """The turns of the conversation, in time order (generated lazily)."""
        return utterances(self.spec.seed, self.spec.participants, self.duration_ms)

    def _frame_count(self) -> int:
        """Video frames j with offset j*1000//fps < duration."""
        return -(-self.duration_ms * self.spec.fps // 1000)

    def share_window(self) -> _Share | None:
        """Screen sharing from ~20 % to ~80 % of the meeting, starting on a keyframe."""
        if not self.spec.deskshare:
            return None
        params = self._clip_params("screen")
        total = self._frame_count()
        first = -(-total // 5)
        while (first % params.frame_count) % params.gop:
            first += 1
        end = total * 4 // 5
        if first >= end:
            return None
        fps = self.spec.fps
        return _Share(first, end, first * 1000 // fps, end * 1000 // fps)

    def camera_off_window(self) -> _CameraOff | None:
        """The last participant's camera off from ~40 % to ~60 % of the meeting, back on at a
        keyframe of their camera (`spec.camera_off`)."""
        if not (self.spec.camera_off and self.spec.video):
            return None
        clip = self._clip_params("camera")
        total = self._frame_count()
        last = len(self.participants) - 1
        first, end = total * 2 // 5, total * 3 // 5
        while end < total and (end + self._camera_shift(last)) % clip.frame_count % clip.gop:
            end += 1
        if not first < end < total:
            return None
        fps = self.spec.fps
        uid = self.participants[last].user_id
        return _CameraOff(uid, first, end, first * 1000 // fps, end * 1000 // fps)

    def _camera_shift(self, index: int) -> int:
        """Participant `index`'s camera plays the loop from this frame on (a keyframe), so the
        cameras differ: the same clip, started one GOP further per participant."""
        clip = self._clip_params("camera")
        return index * clip.gop % clip.frame_count

    # -- the timeline ---------------------------------------------------------------------------

    def timeline(
        self,
        audio_mode: AudioMode = "mixed",
        send_rate_ms: int | None = None,
        video: bool = True,
        transcripts: bool = True,
        deskshare: bool = False,
        events: bool = True,
        *,
        audio: bool = True,
        chat: bool = False,
        start_ms: int = 0,
        cameras: bool = False,
    ) -> Iterator[MediaItem]:
        """Every item of the meeting with `offset_ms >= start_ms`, sorted by offset.

        The flags select what the client receives (what it subscribed to); the spec says what
        the meeting has: video needs `spec.video`, deskshare `spec.deskshare`, transcripts
        `spec.transcripts`, chat `spec.chat`. Events describe the meeting whatever was subscribed: joins and
        leaves, active-speaker changes, camera on/off (if it has video), sharing start/stop.
        `send_rate_ms` defaults to `spec.audio_send_rate_ms`. `cameras`: the video is every
        participant's own camera (individual streams, `_cameras`) instead of the active speaker's.
        """
        if audio_mode not in ("mixed", "multi"):
            raise ValueError(f"audio_mode must be 'mixed' or 'multi', got {audio_mode!r}")
        send_rate = send_rate_ms or self.spec.audio_send_rate_ms
        _check_send_rate(send_rate)
        streams: list[Iterator[tuple[int, int, int, MediaItem]]] = []
        if events:
            streams.append(self._events(start_ms))
        if audio:
            streams.append(self._audio(audio_mode, send_rate, start_ms))
        if video and self.spec.video:
            streams.append(self._cameras(start_ms) if cameras else self._camera(start_ms))
        if deskshare and self.spec.deskshare:
            streams.append(self._screen(start_ms))
        if transcripts and self.spec.transcripts:
            streams.append(self._transcripts(start_ms))
        if chat and self.spec.chat:
            streams.append(self._chat(start_ms))
        for _offset, _prio, _seq, item in heapq.merge(*streams):
            yield item

    def _events(self, start_ms: int) -> Iterator[tuple[int, int, int, MediaItem]]:
        people = self.participants
        end = self.duration_ms
        ids = [{"user_id": p.user_id} for p in people]
        named = [{"user_id": p.user_id, "user_name": p.user_name} for p in people]
        nobody = Participant(0, "")
        # (offset, event, who the item is about), sorted by offset
        fixed: list[tuple[int, dict[str, Any], Participant]] = [
            (0, {"event_type": EV_PARTICIPANT_JOIN, "participants": named}, nobody)
        ]
        if self.spec.video:
            fixed.append((0, {"event_type": EV_VIDEO_ON, "participants": ids}, nobody))
        share = self.share_window()
        if share:
            host = people[0]
            start = {"event_type": EV_SHARING_START, "user_id": host.user_id, "user_name": host.user_name}
            fixed.append((share.start_ms, start, host))
            fixed.append((share.stop_ms, {"event_type": EV_SHARING_STOP}, nobody))
        off = self.camera_off_window()
        if off:
            camera = [{"user_id": off.user_id}]
            fixed.append((off.start_ms, {"event_type": EV_VIDEO_OFF, "participants": camera}, nobody))
            fixed.append((off.stop_ms, {"event_type": EV_VIDEO_ON, "participants": camera}, nobody))
            fixed.sort(key=lambda e: e[0])
        if self.spec.video:
            fixed.append((end, {"event_type": EV_VIDEO_OFF, "participants": ids}, nobody))
        fixed.append((end, {"event_type": EV_PARTICIPANT_LEAVE, "participants": ids}, nobody))

        def speakers() -> Iterator[tuple[int, dict[str, Any], Participant]]:
            last = None
            for utt in self.utterances():
                if utt.speaker != last:
                    last = utt.speaker
                    p = people[utt.speaker]
                    event = {"event_type": EV_ACTIVE_SPEAKER, "user_id": p.user_id, "user_name": p.user_name}
                    yield utt.start_ms, event, p

        seq = 0
        for offset, event, who in heapq.merge(fixed, speakers(), key=lambda e: e[0]):
            if offset >= start_ms:
                yield offset, 0, seq, MediaItem("event", offset, who.user_id, who.user_name, event=event)
                seq += 1

    def _audio(
        self, mode: AudioMode, send_rate: int, start_ms: int
    ) -> Iterator[tuple[int, int, int, MediaItem]]:
        spec = self.spec
        people = self.participants
        loops = [voice_loop(voice_for(spec.seed, i), send_rate) for i in range(spec.participants)]
        silence = bytes(send_rate * BYTES_PER_MS)
        turns = self.utterances()
        pending = next(turns, None)
        active: list[Utterance] = []
        beeps = iter(self.beep_instants_ms)
        beep = next(beeps, None)
        windows = -(-self.duration_ms // send_rate)
        first = -(-start_ms // send_rate)
        multi = mode == "multi"
        seq = 0
        for k in range(first, windows):
            ws = k * send_rate
            we = ws + send_rate
            while pending is not None and pending.start_ms < we:
                active.append(pending)
                pending = next(turns, None)
            if active and active[0].end_ms <= ws:
                active = [u for u in active if u.end_ms > ws]
            while beep is not None and beep + BEEP_MS <= ws:
                beep = next(beeps, None)
            beeping = beep is not None and beep < we
            if multi:
                host_done = False
                for utt in active:
                    p = people[utt.speaker]
                    data = loops[utt.speaker].packet(k)
                    if beeping and utt.speaker == 0:
                        data = add_beep(data, send_rate, ws, beep)  # type: ignore[arg-type]
                        host_done = True
                    yield ws, 1, seq, MediaItem("audio", ws, p.user_id, p.user_name, data)
                    seq += 1
                if beeping and not host_done:
                    host = people[0]
                    data = add_beep(None, send_rate, ws, beep)  # type: ignore[arg-type]
                    yield ws, 1, seq, MediaItem("audio", ws, host.user_id, host.user_name, data)
                    seq += 1
            else:
                if not active:
                    data = silence
                elif len(active) == 1:
                    data = loops[active[0].speaker].packet(k)
                else:
                    data = mix([loops[u.speaker].packet(k) for u in active])
                if beeping:
                    data = add_beep(data, send_rate, ws, beep)  # type: ignore[arg-type]
                yield ws, 1, seq, MediaItem("audio", ws, 0, "", data)
                seq += 1

    def _video(
        self, kind: Literal["video", "deskshare"], clip: VideoClip, first: int, end: int, follow_speaker: bool
    ) -> Iterator[tuple[int, int, int, MediaItem]]:
        """Frames [first, end) of the looped clip. Camera video is the active speaker's (RTMS's
        default single-active-stream mode); the label only moves at a keyframe, as a real
        switch starts a new picture, so each participant's frames begin with an IDR."""
        people = self.participants
        fps = self.spec.fps
        frames, keys, n = clip.frames, clip.keyframes, clip.frame_count
        prio = _PRIORITY[kind]
        turns = self.utterances() if follow_speaker else iter(())
        pending = next(turns, None)
        speaker = people[0]  # until someone speaks, the host is shown
        current = speaker
        # Start at the keyframe before `first` so a resumed timeline labels frames as a full one does.
        begin = first
        while begin > 0 and not keys[begin % n]:
            begin -= 1
        for j in range(begin, end):
            offset = j * 1000 // fps
            while pending is not None and pending.start_ms <= offset:
                speaker = people[pending.speaker]
                pending = next(turns, None)
            i = j % n
            if keys[i]:
                current = speaker
            if j >= first:
                yield (
                    offset,
                    prio,
                    j,
                    MediaItem(kind, offset, current.user_id, current.user_name, frames[i], keyframe=keys[i]),
                )

    def _camera(self, start_ms: int) -> Iterator[tuple[int, int, int, MediaItem]]:
        first = -(-start_ms * self.spec.fps // 1000)
        return self._video("video", self.video_clip(), first, self._frame_count(), follow_speaker=True)

    def _cameras(self, start_ms: int) -> Iterator[tuple[int, int, int, MediaItem]]:
        """Every participant's own camera, frame by frame at the same instants (individual
        streams: the server sends only the subscribed ones), without the camera-off window."""
        people = self.participants
        clip = self.video_clip()
        frames, keys, n = clip.frames, clip.keyframes, clip.frame_count
        fps = self.spec.fps
        shifts = [self._camera_shift(i) for i in range(len(people))]
        off = self.camera_off_window()
        prio = _PRIORITY["video"]
        for j in range(-(-start_ms * fps // 1000), self._frame_count()):
            offset = j * 1000 // fps
            for i, p in enumerate(people):
                if off and p.user_id == off.user_id and off.first_frame <= j < off.end_frame:
                    continue
                k = (j + shifts[i]) % n
                item = MediaItem("video", offset, p.user_id, p.user_name, frames[k], keyframe=keys[k])
                yield offset, prio, j * len(people) + i, item

    def _screen(self, start_ms: int) -> Iterator[tuple[int, int, int, MediaItem]]:
        share = self.share_window()
        if share is None:
            return iter(())
        first = max(share.first_frame, -(-start_ms * self.spec.fps // 1000))
        return self._video("deskshare", self.share_clip(), first, share.end_frame, follow_speaker=False)

    def _transcripts(self, start_ms: int) -> Iterator[tuple[int, int, int, MediaItem]]:
        people = self.participants
        for utt in self.utterances():
            offset = utt.end_ms + TRANSCRIPT_DELAY_MS
            if offset < start_ms:
                continue
            p = people[utt.speaker]
            yield (
                offset,
                4,
                utt.index,
                MediaItem(
                    "transcript",
                    offset,
                    p.user_id,
                    p.user_name,
                    utt.text,
                    start_ms=utt.start_ms,
                    end_ms=utt.end_ms,
                ),
            )

    def chat_messages(self) -> Iterator[ChatMessage]:
        """The meeting's chat script, in time order (generated lazily)."""
        return chat_messages(self.spec.seed, self.spec.participants, self.duration_ms)

    def _chat(self, start_ms: int) -> Iterator[tuple[int, int, int, MediaItem]]:
        people = self.participants
        for msg in self.chat_messages():
            if msg.offset_ms < start_ms:
                continue
            sender = people[msg.sender]
            to = [{"user_id": people[r].user_id, "user_name": people[r].user_name} for r in msg.recipients]
            extra = {"message_id": f"chat-{self.spec.seed}-{msg.index}", "recipients": to}
            item = MediaItem("chat", msg.offset_ms, sender.user_id, sender.user_name, msg.text, event=extra)
            yield msg.offset_ms, _PRIORITY["chat"], msg.index, item
