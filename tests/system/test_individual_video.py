"""Individual video and chat through the whole stack: each participant's camera becomes its own MP4.

The worker asks RTMS for individual video (`RTMSFLOW_RTMS_VIDEO_MODE=individual`) and subscribes every
participant's camera; the emulator plays three participants' cameras, distinct, the third's off for a
stretch, and a chat of public and private messages (kept: RTMSFLOW_CHAT_PRIVATE=keep). The sinks write
`video-<participant id>.mp4` each, holding exactly that participant's NAL units at their RTMS times, the
camera-off stretch a VIDEO_OFF gap of that participant, and `chat.jsonl`/`chat.txt`; the transcript
sink is killed with SIGKILL mid-meeting; a replay from the topics writes the same files byte for byte.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import uuid
from collections.abc import AsyncIterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import pytest

from emulator.conversation import make_participants
from sinks.replay import replay_meeting
from tests.system.pipeline import MeetingRun, PipelineStack, annexb_nal_units, avcc_nal_units, pipeline_stack
from tests.system.support import wait_until

pytestmark = pytest.mark.kafka

SEED = 51  # its chat: public and private messages, the first at 1.7 s
DURATION_S = 10
PARTICIPANTS = 3
SPEED = 2


@pytest.fixture(scope="module")
async def stack(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[PipelineStack]:
    work = tmp_path_factory.mktemp("individual-video")
    async with pipeline_stack(
        kafka_bootstrap,
        work,
        2,
        {
            "RTMSFLOW_RTMS_VIDEO_MODE": "individual",
            "RTMSFLOW_RTMS_VIDEO_PARTICIPANTS": str(PARTICIPANTS),
            "RTMSFLOW_CHAT_PRIVATE": "keep",
        },
    ) as running:
        yield running


@pytest.fixture(scope="module")
async def meeting(stack: PipelineStack) -> MeetingRun:
    args = ["--participants", str(PARTICIPANTS), "--duration", str(DURATION_S), "--seed", str(SEED),
            "--speed", str(SPEED), "--camera-off", "--individual-videos", str(PARTICIPANTS)]  # fmt: skip
    data = Path(stack.settings.data_dir)

    def chat_written() -> bool:
        for partial in data.glob("*/*/*/.chat.txt.partial"):
            with contextlib.suppress(FileNotFoundError):  # renamed as we look: finalized
                if partial.stat().st_size:
                    return True
        return False

    def finalized() -> bool:
        return any(data.glob("*/*/*/transcript.manifest.json"))

    async def kill_the_transcript_sink_once_chat_is_written() -> None:
        await wait_until(lambda: asyncio.to_thread(chat_written), 60)
        assert not await asyncio.to_thread(finalized), "the meeting was finalized before the kill"
        stack.kill("sink-transcripts")

    return await stack.play(
        args, f"cams-{uuid.uuid4().hex[:8]}==", during=kill_the_transcript_sink_once_chat_is_written
    )


def cameras(run: MeetingRun) -> dict[int, list[dict[str, Any]]]:
    """The raw video frames by participant, each list in timestamp order."""
    out: dict[int, list[dict[str, Any]]] = {}
    for v in sorted(run.raw["rtms.raw.video"], key=lambda v: (v["participant_id"], v["timestamp_ms"])):
        out.setdefault(v["participant_id"], []).append(v)
    return out


def video_samples(path: Path) -> tuple[list[av.Packet], Fraction, int]:
    """An MP4's video packets in file order, the track's time base and its number of streams."""
    with av.open(str(path)) as mp4:
        stream = mp4.streams.video[0]
        packets = [p for p in mp4.demux(stream) if p.size]
        return packets, Fraction(stream.time_base), len(mp4.streams)


def holes_ms(frames: list[dict[str, Any]], max_ms: int) -> list[tuple[int, int]]:
    """(last frame before, first frame after) of each stretch without a frame longer than max_ms."""
    return [
        (a["timestamp_ms"], b["timestamp_ms"])
        for a, b in zip(frames, frames[1:], strict=False)
        if b["timestamp_ms"] - a["timestamp_ms"] > max_ms
    ]


def test_each_participant_camera_is_its_own_mp4_with_its_frames_at_their_times(meeting: MeetingRun) -> None:
    ids = [p.user_id for p in make_participants(SEED, PARTICIPANTS)]
    by_pid = cameras(meeting)
    assert sorted(by_pid) == sorted(ids)
    assert {v["media"]["mode"] for v in meeting.raw["rtms.raw.video"]} == {"INDIVIDUAL"}
    # the cameras differ: the first picture of each is another access unit
    assert len({frames[0]["payload"] for frames in by_pid.values()}) == PARTICIPANTS
    names = sorted(p.name for p in meeting.stream_dir.glob("video-*.mp4"))
    assert names == sorted(f"video-{pid}.mp4" for pid in ids)
    for pid, frames in by_pid.items():
        packets, time_base, streams = video_samples(meeting.stream_dir / f"video-{pid}.mp4")
        assert streams == 1  # video alone: the mixed audio is in recording.mp4
        assert [avcc_nal_units(bytes(p)) for p in packets] == [annexb_nal_units(v["payload"]) for v in frames]
        assert [p.pts * time_base * 1000 for p in packets] == [
            v["timestamp_ms"] - meeting.stream_started_ms for v in frames
        ]
    # no active-speaker video in this mode: recording.mp4 is the mixed audio alone
    with av.open(str(meeting.stream_dir / "recording.mp4")) as mp4:
        assert [s.type for s in mp4.streams] == ["audio"]


def test_the_camera_off_stretch_is_a_video_off_gap_of_that_participant_only(meeting: MeetingRun) -> None:
    ids = [p.user_id for p in make_participants(SEED, PARTICIPANTS)]
    by_pid = cameras(meeting)
    fps = by_pid[ids[0]][0]["media"]["fps"]
    frame_ms = -(-1000 // fps)
    holes = {pid: holes_ms(frames, 3 * frame_ms) for pid, frames in by_pid.items()}
    assert holes[ids[0]] == holes[ids[1]] == []
    (hole,) = holes[ids[2]]  # the emulator turned the third camera off once
    assert hole[1] - hole[0] > 1000
    manifest = json.loads((meeting.stream_dir / "manifest.json").read_text())
    (stream,) = manifest["streams"]
    listed = sorted(
        (
            (g["participant_id"], g["start_ms"], g["duration_ms"], g["reason"])
            for g in stream["gaps"]
            if g["kind"] == "video"
        ),
    )
    # a camera's file starts at its first IDR after the subscription: before it, a gap from t = 0
    origin = meeting.stream_started_ms
    leading = [
        (pid, origin, frames[0]["timestamp_ms"] - origin, "VIDEO_OFF")
        for pid, frames in by_pid.items()
        if frames[0]["timestamp_ms"] - origin > max(3 * frame_ms, 200)
    ]
    # the last frame before the hole is held one frame interval, the gap runs from there
    off = (ids[2], hole[0] + frame_ms, hole[1] - hole[0] - frame_ms, "VIDEO_OFF")
    assert listed == sorted([*leading, off])
    assert [g for g in listed if g[1] > origin] == [off]  # the other cameras never went off


async def test_a_replay_writes_the_participant_videos_byte_for_byte(
    stack: PipelineStack, meeting: MeetingRun, tmp_path: Path
) -> None:
    out = tmp_path / "replayed"
    settings = dataclasses.replace(stack.settings, data_dir=str(tmp_path / "unused"))
    await replay_meeting(settings, meeting.meeting_uuid, out)
    rebuilt = out / meeting.stream_dir.relative_to(stack.settings.data_dir)
    live = {p.name: p.read_bytes() for p in sorted(meeting.stream_dir.iterdir()) if p.is_file()}
    again = {p.name: p.read_bytes() for p in sorted(rebuilt.iterdir()) if p.is_file()}
    assert sum(name.startswith("video-") for name in live) == PARTICIPANTS
    assert {"chat.jsonl", "chat.txt", "transcript.txt", "audio.wav", "recording.mp4"} <= set(live)
    chat = [json.loads(line) for line in live["chat.jsonl"].splitlines()]
    assert any(m["recipients"] for m in chat) and any(not m["recipients"] for m in chat)
    assert stack.restarts() == {"sink-transcripts": 1}  # killed mid-meeting, started again
    assert again == live
