"""Emulated meetings through the whole stack as processes, and readers of the files they became.

`PipelineStack` runs every stage as its own process under `rtmsflow.stack.Supervisor` (as `rtmsflow
up` does) and `play`s a meeting with `rtmsflow emulator meeting`; the readers give NAL units from
Annex-B and MP4 samples, the white flash frame's and the beep's times."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from emulator.voices import BEEP_HZ
from rtmsflow.admin import delete_topics, ensure_topics
from rtmsflow.settings import Settings
from rtmsflow.stack import Supervisor, free_ports, stack_stages, stage_env
from schemas.topics import ALL_TOPICS
from sinks.layout import encode_component
from tests.ingest.support import CLIENT_ID, CLIENT_SECRET, RAW, read_topic

WEBHOOK_SECRET = "pipeline-files-webhook-secret"


@dataclass(frozen=True)
class MeetingRun:
    """What one emulated meeting became: its stream directory and its raw-topic records (values
    decoded, markers excluded, per raw topic in offset order)."""

    meeting_uuid: str
    stream_dir: Path
    raw: dict[str, list[dict[str, Any]]]
    stream_started_ms: int
    log_dir: Path


def _finalized_stream_dir(data_dir: Path, meeting_uuid: str) -> Path | None:
    """The meeting's stream directory once both sinks have published their manifests, else None."""
    media = list(data_dir.glob(f"*/{encode_component(meeting_uuid)}/*/manifest.json"))
    if media and (media[0].parent / "transcript.manifest.json").is_file():
        return media[0].parent
    return None


class PipelineStack:
    """Every stage as its own process under a `Supervisor`, for meetings played one at a time.

    `env` holds the test's settings (`RTMSFLOW_*`: broker, topic prefix, data dir, ...) and any
    worker options; the Zoom credentials the emulator uses are added here. Stopping (leaving the
    `async with`) stops the stages in the order that loses nothing.
    """

    def __init__(self, settings: Settings, env: dict[str, str], work_dir: Path) -> None:
        self.settings = settings
        self.env = stage_env(
            settings,
            {
                **env,
                "ZM_RTMS_CLIENT": CLIENT_ID,
                "ZM_RTMS_SECRET": CLIENT_SECRET,
                "ZOOM_SECRET_TOKEN": WEBHOOK_SECRET,
                "RTMSFLOW_ALLOWED_HOSTS": "127.0.0.1",
                "RTMSFLOW_ALLOW_INSECURE_WS": "1",
            },
        )
        self.log_dir = work_dir / "logs"
        self.sup = Supervisor(settings, stack_stages(settings, free_ports(5)), self.env, self.log_dir)
        self._watcher: asyncio.Task[None] | None = None

    async def __aenter__(self) -> PipelineStack:
        try:
            await self.sup.start()
        except BaseException:
            await self.sup.stop(drain_timeout_s=5)
            raise
        self._watcher = asyncio.create_task(self.sup.watch())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
        await self.sup.stop(drain_timeout_s=30)

    async def restart_worker(self, options: dict[str, str]) -> None:
        """Stop the ingest worker and start it again with `options` (RTMSFLOW_RTMS_* worker
        options) on top of its environment: how an operator changes what the worker asks Zoom for."""
        stage = self.sup.stage("ingest-worker")
        await stage.terminate()
        stage.env = {**stage.env, **options}
        stage.stopping = False  # watched again from now on
        stage.start()
        await stage.wait_healthy(90)

    async def play(
        self,
        emulator_args: list[str],
        meeting_uuid: str,
        timeout_s: float = 120.0,
        during: Callable[[], Awaitable[None]] | None = None,
    ) -> MeetingRun:
        """Play one meeting with `rtmsflow emulator meeting <emulator_args>` (awaiting `during()` while
        it plays), wait until both sinks have finalized it, and read what ingest received from the
        raw topics."""
        webhook = f"http://127.0.0.1:{self.sup.stage('ingest-http').spec.port}/webhook"
        log_path = self.log_dir / f"emulator-{encode_component(meeting_uuid)}.log"
        with log_path.open("wb") as log:
            emulator = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "rtmsflow.cli", "emulator", "meeting", *emulator_args,
                "--meeting-uuid", meeting_uuid, "--webhook", webhook,
                env=self.env, stdout=log, stderr=log,
            )  # fmt: skip
            try:
                async with asyncio.timeout(timeout_s):
                    if during is not None:
                        await during()
                    code = await emulator.wait()
            finally:
                if emulator.returncode is None:
                    emulator.kill()
                    await emulator.wait()
        assert code == 0, log_path.read_text(errors="replace")[-3000:]
        stream_dir = await self._wait_for_files(meeting_uuid, timeout_s)
        raw: dict[str, list[dict[str, Any]]] = {}
        for name in RAW:
            records = await read_topic(self.settings, self.settings.topic_prefix + name)
            raw[name] = [v for k, v, _, _ in records if k == meeting_uuid.encode() and not v["end_of_stream"]]
        started = {v["stream_started_ms"] for name in RAW for v in raw[name]}
        assert len(started) == 1, started
        return MeetingRun(meeting_uuid, stream_dir, raw, started.pop(), self.log_dir)

    def kill(self, stage_name: str) -> None:
        """SIGKILL one stage's process; the supervisor starts it again."""
        proc = self.sup.stage(stage_name).proc
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait() == -9

    def restarts(self) -> dict[str, int]:
        return {s.spec.name: s.restarts_total for s in self.sup.stages if s.restarts_total}

    async def _wait_for_files(self, meeting_uuid: str, timeout_s: float) -> Path:
        """Until both sinks have finalized the meeting's stream; its directory."""
        deadline = time.monotonic() + timeout_s
        data_dir = Path(self.settings.data_dir)
        while True:
            found = await asyncio.to_thread(_finalized_stream_dir, data_dir, meeting_uuid)
            if found is not None:
                return found
            if self.sup.failed:
                raise AssertionError(self.sup.failed)
            if time.monotonic() > deadline:
                tails = "\n".join(f"--- {s.spec.name}\n{s.log_tail(15)}" for s in self.sup.stages)
                raise AssertionError(f"the sinks did not finalize within {timeout_s:.0f}s\n{tails}")
            await asyncio.sleep(0.3)


@asynccontextmanager
async def pipeline_stack(
    kafka_bootstrap: str, work: Path, partitions: int, env: dict[str, str] | None = None
) -> AsyncIterator[PipelineStack]:
    """A `PipelineStack` over fresh topics of its own (created here, deleted after), its files under
    `work`; `env` adds settings (`RTMSFLOW_*`) for every stage."""
    settings = dataclasses.replace(
        Settings(),
        kafka_bootstrap=kafka_bootstrap,
        topic_prefix=f"t{uuid.uuid4().hex[:12]}.",
        data_dir=str(work / "data"),
        partitions=partitions,
    )
    stage_settings = {
        "RTMSFLOW_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "RTMSFLOW_TOPIC_PREFIX": settings.topic_prefix,
        "RTMSFLOW_PARTITIONS": str(settings.partitions),
        "RTMSFLOW_REPLICATION": str(settings.replication),
        "RTMSFLOW_DATA_DIR": settings.data_dir,
        **(env or {}),
    }
    await ensure_topics(settings, ALL_TOPICS)
    try:
        async with PipelineStack(settings, stage_settings, work) as running:
            yield running
    finally:
        await delete_topics(settings, [spec.full_name(settings.topic_prefix) for spec in ALL_TOPICS])


# --- H.264 -------------------------------------------------------------------------------------------


def annexb_nal_units(access_unit: bytes) -> list[bytes]:
    """The NAL units of an Annex-B access unit, start codes removed (trailing zero bytes, which
    belong to the next start code, removed too)."""
    from rtmsflow.h264 import iter_nal_units

    return [access_unit[n.start : n.end] for n in iter_nal_units(access_unit)]


def avcc_nal_units(sample: bytes, length_size: int = 4) -> list[bytes]:
    """The NAL units of an MP4 sample (each prefixed by its big-endian length); raises
    ValueError when the lengths do not tile the sample exactly."""
    out = []
    pos = 0
    while pos < len(sample):
        if pos + length_size > len(sample):
            raise ValueError(f"truncated length prefix at {pos} of {len(sample)}")
        n = int.from_bytes(sample[pos : pos + length_size], "big")
        pos += length_size
        if n == 0 or pos + n > len(sample):
            raise ValueError(f"NAL unit of {n} bytes at {pos} overruns the {len(sample)}-byte sample")
        out.append(sample[pos : pos + n])
        pos += n
    return out


def nal_type(nal: bytes) -> int:
    return nal[0] & 0x1F


# --- sync marks ---------------------------------------------------------------------------------------


def beep_onset_s(samples: np.ndarray, rate: int, window_ms: int = 5) -> float:
    """Seconds into `samples` (float, mono) where the sync beep starts: the first window whose
    energy at BEEP_HZ reaches half of the strongest window's. The beep (0.8 of full scale) is
    far above the voices (at most 0.3), and a narrow band at its frequency ignores the voices'
    broadband energy."""
    n = rate * window_ms // 1000
    count = len(samples) // n
    frames = samples[: count * n].reshape(count, n).astype(np.float64)
    t = np.arange(n) / rate
    # the beep's amplitude in each window, whatever its phase there (a one-bin DFT)
    amplitude = np.abs(frames @ np.exp(-2j * np.pi * BEEP_HZ * t)) * 2 / n
    first = int(np.argmax(amplitude >= amplitude.max() / 2))
    return first * n / rate


# --- decoding ------------------------------------------------------------------------------------------


def decode_packets(codec: str, packets: list[bytes], extradata: bytes) -> tuple[int, list[str]]:
    """Decode an MP4 track's samples in order (`codec` "h264" or "aac", `extradata` its avcC or
    AudioSpecificConfig) with FFmpeg's decoder in its strictest error detection; returns (frames
    decoded, errors). An error is a packet the decoder refused or a message it logged at error
    level (it conceals damage and goes on otherwise, so both are collected)."""
    import av
    import av.logging

    ctx = av.CodecContext.create(codec, "r")
    ctx.extradata = extradata
    ctx.options = {"err_detect": "crccheck+bitstream+buffer+explode"}
    frames = 0
    errors: list[str] = []
    level = av.logging.get_level()
    av.logging.set_level(av.logging.ERROR)  # PyAV passes FFmpeg's log on only when asked to
    try:
        with av.logging.Capture(True) as logs:
            for i, data in enumerate([*packets, None]):
                try:
                    frames += len(ctx.decode(av.Packet(data) if data is not None else None))
                except av.FFmpegError as exc:
                    errors.append(f"packet {i}: {exc}")
    finally:
        av.logging.set_level(level)
    errors += [f"{name}: {message}" for severity, name, message in logs if severity <= av.logging.ERROR]
    return frames, errors
