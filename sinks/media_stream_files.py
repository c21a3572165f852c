"""`MediaStreamFiles`: a stream's WAVs and MP4s, built from its ordered audio and video records.

It writes the WAVs by `offset_ms` and the MP4s, muxing video only once the WAV holds its audio, so the
bytes depend only on the records (the builder contract: `sinks.stream_files`)."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Literal

from schemas.records import StreamEnd as MarkerEnd
from schemas.topics import AUDIO, VIDEO
from sinks.atomic import FileGroup
from sinks.layout import StreamLayout, participant_wav_name
from sinks.manifest import (
    StreamTally,
)
from sinks.media_timeline import SAMPLES_PER_MS
from sinks.mp4_recorder import MediaFrameError, Mp4Recorder
from sinks.participant_videos import ParticipantVideos, is_participant_video
from sinks.stream_files import EndHow, Finalized, owns_media, publish_stream, stream_end
from sinks.wav_writer import HEADER_BYTES, MIXED_WAV_NAME, WavTracks

MEDIA_MANIFEST = "manifest.json"
RECORDING_NAME = "recording.mp4"
DESKSHARE_NAME = "deskshare.mp4"
_READ_CHUNK_SAMPLES = 16 * 1024  # audio handed to the recorder per read (whole ms: a multiple of 16)


@dataclass
class _Lanes:
    """Where each lane's media ends so far (ms from t = 0), for the stream's end."""

    ends: dict[str, int] = field(default_factory=dict)

    def reach(self, lane: str, end_ms: int) -> None:
        self.ends[lane] = max(self.ends.get(lane, 0), end_ms)

    def end(self, prefix: str = "") -> int:
        return max((v for k, v in self.ends.items() if k.startswith(prefix)), default=0)


class MediaStreamFiles:
    """`audio.wav`, participant WAVs, `recording.mp4`, `deskshare.mp4`, participant videos
    (`sinks.participant_videos`) and `manifest.json` of a stream."""

    topics: tuple[str, ...] = (AUDIO.name, VIDEO.name)
    manifest_name = MEDIA_MANIFEST

    def __init__(
        self,
        layout: StreamLayout,
        *,
        fragmented: bool = True,
        muxer_process: bool = False,
        groups: Callable[..., FileGroup] = FileGroup,
    ) -> None:
        self.layout = layout
        self.origin_ms = layout.start_ms
        self.fragmented = fragmented
        self.muxer_process = muxer_process  # the MP4s' muxers in processes of their own (replay)
        self.group = groups(layout.stream_dir, MEDIA_MANIFEST, owns_media)  # on disk or a bucket
        self.tally = StreamTally(layout.rtms_stream_id)
        self.markers: dict[str, MarkerEnd] = {}
        self.after_end = 0  # records that came after their topic's marker (ignored)
        self.silent_gaps = 0  # SILENT gaps of participant lanes: counted, not listed (one per pause)
        self._wavs: WavTracks | None = None
        self._recorder: Mp4Recorder | None = None
        self._deskshare: Mp4Recorder | None = None
        self._cameras: ParticipantVideos | None = None  # individual video: video-<participant>.mp4
        self._audio_mode: Literal["mixed", "multi"] | None = None
        self._video_size: tuple[int, int] | None = None
        self._queue: deque[Mapping[str, Any]] = deque()
        self._queued_bytes = 0
        self._fed = 0  # samples of mixed audio handed to the recorder
        self._reader: BinaryIO | None = None
        self._lanes = _Lanes()
        self._rejected: list[tuple[str, Mapping[str, Any], Exception]] = []
        self._audio_done = False  # finalizing: no more audio will come, whatever the markers say

    @classmethod
    def is_finalized(cls, layout: StreamLayout) -> bool:
        """True when the stream's media manifest exists (its files are complete)."""
        return (layout.stream_dir / MEDIA_MANIFEST).is_file()

    def begin(self) -> None:
        """Clear a crash's leftovers of this sink in the stream directory and open the WAV tracks."""
        self.group.begin()
        # tolerance 0: a frame goes exactly where its offset says (the processors tile the lane)
        self._wavs = WavTracks(self.group.partial, self.origin_ms, tolerance_ms=0)

    # -- input ------------------------------------------------------------------------------------

    def add(self, topic: str, record: Mapping[str, Any]) -> None:
        """One decoded record of `rtms.audio` or `rtms.video` (topic = base name)."""
        if topic in self.markers:
            self.after_end += 1
            return
        if topic == AUDIO.name:
            self._audio(record)
        elif topic == VIDEO.name:
            self._video(record)
        else:
            raise ValueError(f"the media sink does not read {topic}")

    def end_topic(self, topic: str, marker: MarkerEnd) -> None:
        """The stream's end-of-stream marker on `topic` (a repeated one is a no-op)."""
        if topic in self.markers:
            return
        self.markers[topic] = marker
        if topic == AUDIO.name:
            self._drain_video()

    @property
    def ready(self) -> bool:
        """Both topics' markers are in: the stream can be finalized."""
        return all(t in self.markers for t in self.topics)

    def buffered_bytes(self) -> int:
        """Video payload bytes held while waiting for the audio to reach them."""
        return self._queued_bytes

    def take_rejected(self) -> list[tuple[str, Mapping[str, Any], Exception]]:
        """(topic, record, error) of records that could not be muxed since the last call: queued
        video rejected while another record was being fed (the caller dead-letters them)."""
        out, self._rejected = self._rejected, []
        return out

    @property
    def open_files(self) -> int:
        wavs = len(self._wavs.names) if self._wavs else 0
        cameras = len(self._cameras) if self._cameras else 0
        return wavs + (self._recorder is not None) + (self._deskshare is not None) + cameras

    def _audio(self, r: Mapping[str, Any]) -> None:
        wavs = self._tracks()
        offset = r["offset_ms"]
        mixed = bool(r["media"].get("mixed", True))
        pid = r["participant_id"]
        if self._audio_mode is None:
            self._audio_mode = "mixed" if mixed else "multi"
        if pid:
            self.tally.participant(pid, r.get("participant_name"))
        name = MIXED_WAV_NAME if mixed else participant_wav_name(pid)
        lane = f"audio:{name}"
        gap = r.get("gap")
        if gap is not None:
            length = gap["length_ms"]
            self.tally.observe("AUDIO_GAP", self.origin_ms + offset, length)
            if not mixed and gap.get("reason") == "SILENT":
                self.silent_gaps += 1
            else:
                self.tally.gap("audio", pid, self.origin_ms + offset, length, gap.get("reason"))
            wavs.gap(name, self.origin_ms + offset + length)
            self._lanes.reach(lane, offset + length)
        else:
            payload = r["payload"]
            self.tally.observe("AUDIO", self.origin_ms + offset, len(payload) // 32)
            media = r["media"]
            if (media.get("codec", "L16"), media.get("sample_rate", 16000), media.get("channels", 1)) != (
                "L16",
                16000,
                1,
            ):
                raise MediaFrameError(f"unsupported audio {dict(media)}", "audio", r["timestamp_ms"])
            placement = wavs.writer(name).write_frame(self.origin_ms + offset, payload)
            self._lanes.reach(lane, -(-(placement.start_sample + placement.samples) // SAMPLES_PER_MS))
        if mixed:
            self._drain_video()

    def _video(self, r: Mapping[str, Any]) -> None:
        kind = r["stream_kind"]
        is_gap = r.get("gap") is not None
        pid = r["participant_id"]
        if pid:
            self.tally.participant(pid, r.get("participant_name"))
        if kind not in ("VIDEO", "DESKSHARE"):
            raise MediaFrameError(f"stream kind {kind} on the video topic", "video", r["timestamp_ms"])
        self.tally.observe(kind + ("_GAP" if is_gap else ""), r["timestamp_ms"])
        offset = r["offset_ms"]
        fps = max(1, r["media"].get("fps", 30))
        camera = is_participant_video(r)
        lane = f"{kind}:{pid}" if camera else kind
        if is_gap:
            self.tally.gap(
                kind.lower(),
                pid if camera else 0,
                self.origin_ms + offset,
                r["gap"]["length_ms"],
                r["gap"].get("reason"),
            )
            self._lanes.reach(lane, offset + r["gap"]["length_ms"])
        else:
            self._lanes.reach(lane, offset + 1000 // fps)
        if camera:
            self._participant_videos().add(r)
            return
        if kind == "DESKSHARE":
            self._deskshare_record(r)
            return
        if self._video_size is None:
            self._video_size = (r["media"].get("width", 1280), r["media"].get("height", 720))
        self._queue.append(r)
        self._queued_bytes += len(r["payload"])
        self._drain_video()

    # -- the recorder -------------------------------------------------------------------------------

    def _tracks(self) -> WavTracks:
        if self._wavs is None:
            raise RuntimeError("begin() the stream before feeding it")
        return self._wavs

    def _audio_ready(self) -> int | None:
        """Mixed samples the recorder may take now; None: as many as it wants (no mixed audio to
        wait for: the audio topic ended, or the stream has per-participant audio only)."""
        if self._audio_done or AUDIO.name in self.markers or self._audio_mode == "multi":
            return None
        if self._audio_mode is None:
            return 0
        return self._tracks().writer(MIXED_WAV_NAME).timeline.position

    def _ensure_recorder(self, video: bool) -> Mp4Recorder:
        if self._recorder is None:
            self._recorder = Mp4Recorder(
                self.group.partial(RECORDING_NAME),
                self.origin_ms,
                video=video,
                audio=True,
                video_size=self._video_size or (1280, 720),
                audio_tolerance_ms=0,
                fragmented=self.fragmented,
                process=self.muxer_process,
            )
            self._recorder.start()
        return self._recorder

    def _drain_video(self) -> None:
        while self._queue:
            r = self._queue[0]
            target = r["offset_ms"] * SAMPLES_PER_MS
            ready = self._audio_ready()
            if ready is not None and ready < target:
                return
            self._queue.popleft()
            self._queued_bytes -= len(r["payload"])
            recorder = self._ensure_recorder(video=True)
            self._feed_audio_to(target)
            try:
                if r.get("gap") is not None:
                    recorder.gap("video", self.origin_ms + r["offset_ms"], r["gap"]["length_ms"])
                else:
                    recorder.video_frame(
                        self.origin_ms + r["offset_ms"],
                        r["payload"],
                        keyframe=r["keyframe"],
                        has_parameter_sets=r["has_parameter_sets"],
                    )
            except MediaFrameError as exc:
                self._rejected.append((VIDEO.name, r, exc))

    def _feed_audio_to(self, target: int) -> None:
        """Hand the recorder the mixed audio up to sample `target` (a multiple of 16), read back
        from the partial WAV; silence where there is none (no mixed lane, or past its end)."""
        recorder = self._recorder
        if recorder is None or target <= self._fed:
            return
        if self._audio_mode == "mixed":
            writer = self._tracks().writer(MIXED_WAV_NAME)
            writer.flush()
            available = writer.timeline.position
            upto = min(target, available - available % SAMPLES_PER_MS)
            if self._reader is None:
                self._reader = open(writer.path, "rb")  # noqa: SIM115 - held for the stream's life
            while self._fed < upto:
                n = min(_READ_CHUNK_SAMPLES, upto - self._fed)
                self._reader.seek(HEADER_BYTES + self._fed * 2)
                pcm = self._reader.read(n * 2)
                recorder.audio_frame(self.origin_ms + self._fed // SAMPLES_PER_MS, pcm)
                self._fed += n
        if self._fed < target:
            start_ms = self._fed // SAMPLES_PER_MS
            recorder.gap("audio", self.origin_ms + start_ms, target // SAMPLES_PER_MS - start_ms)
            self._fed = target

    def _participant_videos(self) -> ParticipantVideos:
        if self._cameras is None:
            self._cameras = ParticipantVideos(
                self.group.partial, self.origin_ms, fragmented=self.fragmented, process=self.muxer_process
            )
        return self._cameras

    def _deskshare_record(self, r: Mapping[str, Any]) -> None:
        if self._deskshare is None:
            media = r["media"]
            self._deskshare = Mp4Recorder(
                self.group.partial(DESKSHARE_NAME),
                self.origin_ms,
                video=True,
                audio=False,
                video_size=(media.get("width", 1280), media.get("height", 720)),
                fragmented=self.fragmented,
                process=self.muxer_process,
            )
            self._deskshare.start()
        if r.get("gap") is not None:
            self._deskshare.gap("video", self.origin_ms + r["offset_ms"], r["gap"]["length_ms"])
        else:
            self._deskshare.video_frame(
                self.origin_ms + r["offset_ms"],
                r["payload"],
                keyframe=r["keyframe"],
                has_parameter_sets=r["has_parameter_sets"],
            )

    # -- the end ------------------------------------------------------------------------------------

    def finalize(self, how: EndHow) -> Finalized:
        """Close every file at the stream's end, fsync, rename into place, manifest last."""
        wavs = self._tracks()
        # the end: where the longest lane ends (audio lanes tile to it with their trailing gap)
        end_ms = self._lanes.end()
        for name in wavs.names:
            end_ms = max(end_ms, -(-wavs.writer(name).timeline.position // SAMPLES_PER_MS))
        if self._audio_mode == "mixed":
            wavs.writer(MIXED_WAV_NAME).pad_to(self.origin_ms + end_ms)
        self._audio_done = True  # nothing more to wait for
        self._drain_video()
        if self._recorder is None and wavs.names:
            self._ensure_recorder(video=False)  # a stream without video: audio-only recording
        if self._recorder is not None:
            self._feed_audio_to(end_ms * SAMPLES_PER_MS)
            self._recorder.close(self.origin_ms + end_ms)
        if self._deskshare is not None:
            self._deskshare.close(self.origin_ms + self._lanes.end("DESKSHARE"))
        if self._cameras is not None:
            self._cameras.close(end_ms)
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        wav_stats = wavs.close(self.origin_ms + end_ms)
        end = stream_end(how, self.markers, self.tally)
        extra = {
            "audio_tracks": {
                name: {"pcm_samples": s.pcm_samples, "silence_samples": s.silence_samples}
                for name, s in wav_stats.items()
            },
            "participant_silent_gaps": self.silent_gaps,
            "records_after_end": self.after_end,
        }
        span_ms = (self.origin_ms, self.origin_ms + end_ms)
        return publish_stream(self.layout, self.group, how, end, self.tally, span_ms, extra)

    def abort(self) -> None:
        """Drop everything unfinished (a rebalance or a stop): the next owner rebuilds the stream."""
        for recorder in (self._recorder, self._deskshare):
            if recorder is not None:
                recorder.abort()
        if self._cameras is not None:
            self._cameras.abort()
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._wavs is not None:
            self._wavs.abort()
        self.group.abort()
        self._queue.clear()
        self._queued_bytes = 0
