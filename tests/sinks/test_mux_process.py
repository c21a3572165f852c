"""The muxer in a process of its own (sinks.mux_process): the bytes of the inline muxer whatever the
ring's size, errors raised in the recorder's process, and a child that never outlives its parent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from emulator.clips import ClipParams, get_clip
from sinks.media_timeline import AAC_FRAME_SAMPLES, SAMPLE_RATE
from sinks.mp4_muxer import Mp4Muxer, MuxerSpec
from sinks.mux_process import MuxProcess, MuxProcessError
from tests.ingest.support import alive, wait_gone

Call = tuple[Any, ...]
RING = 16 * 1024  # a ring this small wraps every few frames; a keyframe over RING / 4 takes the pipe


@pytest.fixture(scope="module")
def calls() -> list[Call]:
    """Two speakers' 360p/720p H.264 at 25 fps and a 440 Hz tone in AAC frames, interleaved by time
    as a recorder makes its calls."""
    clips = [get_clip(ClipParams(k, r, 25, 50, gop=25, flash_index=None)) for k, r in (("camera", "360p"), ("screen", "720p"))]  # fmt: skip
    frames = [(d, k) for c in clips for d, k in zip(c.frames, c.keyframes, strict=True)]
    out: list[Call] = []
    position = 0
    for i, (data, key) in enumerate(frames):
        while position < i * 40 * 16:
            n = np.arange(position, position + AAC_FRAME_SAMPLES)
            pcm = (0.3 * 32767 * np.sin(2 * np.pi * 440 * n / SAMPLE_RATE)).astype("<i2").tobytes()
            out.append(("a", position, pcm))
            position += AAC_FRAME_SAMPLES
        out.append(("v", i * 40, 40, data, key))
    return out


def run(muxer: Mp4Muxer | MuxProcess, calls: list[Call]) -> int:
    muxer.open()
    for call in calls:
        if call[0] == "a":
            muxer.encode(call[1], call[2])
        else:
            muxer.mux_video(call[1], call[2], call[3], call[4])
    return muxer.finish()


def spec(path: Path) -> MuxerSpec:
    return MuxerSpec(str(path), video=True, audio=True, video_size=(640, 360))


def test_the_muxer_process_writes_the_inline_muxers_bytes_through_a_ring_that_wraps(
    tmp_path: Path, calls: list[Call]
) -> None:
    sizes = [len(c[3]) for c in calls if c[0] == "v"]
    # the setup exercises every path: payloads through the pipe and through the ring, many wraps
    assert any(s > RING // 4 for s in sizes) and sum(s <= RING // 4 for s in sizes) > 50
    assert sum(sizes) > 10 * RING
    inline, other = tmp_path / "inline.mp4", tmp_path / "process.mp4"
    packets = run(Mp4Muxer(spec(inline)), calls)
    assert run(MuxProcess(spec(other), batch_bytes=2048, ring_bytes=RING), calls) == packets > 50
    assert other.read_bytes() == inline.read_bytes()


def _backwards(calls: list[Call]) -> list[Call]:
    """The calls with one video sample's dts going back in time, then many more calls."""
    video = [i for i, c in enumerate(calls) if c[0] == "v"]
    bad = calls[video[10]]
    return [*calls[: video[20]], ("v", bad[1], *bad[2:]), *calls[video[20] :]]


def test_a_call_that_fails_in_the_child_is_raised_in_the_recorders_process(
    tmp_path: Path, calls: list[Call]
) -> None:
    broken = _backwards(calls)
    # the same calls inline: FFmpeg's MP4 muxer refuses the sample (non-monotonic dts: EINVAL)
    with pytest.raises(av.FFmpegError, match="Invalid argument"):
        run(Mp4Muxer(spec(tmp_path / "inline.mp4")), broken)
    # in a process, with a ring that fills: the error comes back instead of a wait for room
    with pytest.raises(MuxProcessError, match="Invalid argument") as raised:
        run(MuxProcess(spec(tmp_path / "process.mp4"), batch_bytes=4096, ring_bytes=RING), broken)
    assert "process.mp4" in str(raised.value)


def test_a_file_the_child_cannot_create_is_an_error_of_the_recording(
    tmp_path: Path, calls: list[Call]
) -> None:
    with pytest.raises(MuxProcessError, match="No such file or directory"):
        run(MuxProcess(spec(tmp_path / "missing" / "process.mp4")), calls)
    assert run(MuxProcess(spec(tmp_path / "process.mp4")), calls[:50]) > 0  # the control: it can


def test_abort_ends_the_child_and_leaves_the_partial_file(tmp_path: Path, calls: list[Call]) -> None:
    path = tmp_path / "process.mp4"
    muxer = MuxProcess(spec(path))
    muxer.open()
    child = muxer._child
    assert child is not None and alive(child.pid)
    for call in calls[:200]:
        if call[0] == "v":
            muxer.mux_video(call[1], call[2], call[3], call[4])
    muxer.abort()
    assert child.returncode is not None and not alive(child.pid)
    assert path.exists()  # the caller's to discard (a partial file, never published)
    muxer.abort()  # idempotent


def test_the_child_dies_with_its_parent(tmp_path: Path) -> None:
    script = (
        "import sys; from sinks.mux_process import MuxProcess; from sinks.mp4_muxer import MuxerSpec\n"
        f"m = MuxProcess(MuxerSpec({str(tmp_path / 'x.mp4')!r}, video=True, audio=True)); m.open()\n"
        "print(m._child.pid, flush=True); sys.stdin.read()\n"
    )
    root = str(Path(__file__).resolve().parents[2])
    parent = subprocess.Popen(
        [sys.executable, "-c", script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": root},
    )
    assert parent.stdout is not None
    pid = int(parent.stdout.readline())
    assert alive(pid)  # the control: the child runs while its parent does
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    wait_gone(pid)
