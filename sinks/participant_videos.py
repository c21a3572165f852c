"""Individual video: each participant's camera in a `video-<participant id>.mp4` of its own.

Video only (the stream's mixed audio is in `recording.mp4`), every sample at its RTMS time from the
stream's t = 0 like every other file of the stream, so the files play in sync; a camera-off gap holds
the last frame. At most `MAX_PARTICIPANT_VIDEOS` files per stream."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from sinks.layout import participant_video_name
from sinks.mp4_recorder import MediaFrameError, Mp4Recorder

# Zoom serves four individual cameras per stream by default; a few more are tolerated, beyond that a
# record is rejected (dead-lettered) so hostile input cannot open files without bound.
MAX_PARTICIPANT_VIDEOS = 16


def is_participant_video(record: Mapping[str, Any]) -> bool:
    """True for a `rtms.video` record of one participant's own camera (individual video)."""
    return record["stream_kind"] == "VIDEO" and record["media"].get("mode") == "INDIVIDUAL"


class ParticipantVideos:
    """The per-participant MP4s of one stream; `partial(name)` is where a file is written until
    published (`sinks.atomic.FileGroup.partial`)."""

    def __init__(
        self, partial: Callable[[str], Path], origin_ms: int, *, fragmented: bool, process: bool
    ) -> None:
        self.partial = partial
        self.origin_ms = origin_ms
        self.fragmented = fragmented
        self.process = process
        self.recorders: dict[int, Mp4Recorder] = {}

    def __len__(self) -> int:
        return len(self.recorders)

    def add(self, r: Mapping[str, Any]) -> None:
        """One frame or gap record of a participant's camera, in the lane's order. Raises
        MediaFrameError for a frame the file cannot take (the caller dead-letters the record)."""
        recorder = self._recorder(r)
        at_ms = self.origin_ms + r["offset_ms"]
        if r.get("gap") is not None:
            recorder.gap("video", at_ms, r["gap"]["length_ms"])
        else:
            recorder.video_frame(
                at_ms, r["payload"], keyframe=r["keyframe"], has_parameter_sets=r["has_parameter_sets"]
            )

    def close(self, end_ms: int) -> None:
        """End of stream at `end_ms` (ms from t = 0): every file holds its last frame until then."""
        for pid in sorted(self.recorders):
            self.recorders[pid].close(self.origin_ms + end_ms)

    def abort(self) -> None:
        """Release every file unfinished (idempotent)."""
        for recorder in self.recorders.values():
            recorder.abort()

    def _recorder(self, r: Mapping[str, Any]) -> Mp4Recorder:
        pid = r["participant_id"]
        recorder = self.recorders.get(pid)
        if recorder is not None:
            return recorder
        if len(self.recorders) >= MAX_PARTICIPANT_VIDEOS:
            raise MediaFrameError(
                f"more than {MAX_PARTICIPANT_VIDEOS} participant videos", "video", r["timestamp_ms"]
            )
        if pid <= 0:
            raise MediaFrameError(
                f"participant id {pid} on a participant's camera", "video", r["timestamp_ms"]
            )
        name = participant_video_name(pid)
        media = r["media"]
        recorder = Mp4Recorder(
            self.partial(name),
            self.origin_ms,
            video=True,
            audio=False,
            video_size=(media.get("width", 1280), media.get("height", 720)),
            fragmented=self.fragmented,
            process=self.process,
        )
        recorder.start()
        self.recorders[pid] = recorder
        return recorder
