"""Helpers shared by the ingest integration tests: settings for the emulator, reading topics back."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from rtmsflow.kafka_client import bootstrap_servers
from rtmsflow.settings import Settings
from schemas.codec import Codec
from schemas.markers import read_control

CLIENT_ID = "test_client_id"
CLIENT_SECRET = "test_client_secret"
WEBHOOK_SECRET = "test_webhook_secret"


def ingest_settings(settings: Settings) -> Settings:
    """The test's settings plus Zoom credentials and the emulator's loopback host allowed."""
    return dataclasses.replace(
        settings,
        zoom_client_id=CLIENT_ID,
        zoom_client_secret=CLIENT_SECRET,
        zoom_webhook_secret=WEBHOOK_SECRET,
        allowed_hosts=("127.0.0.1",),
        allow_insecure_ws=True,
    )


async def read_topic(
    settings: Settings, topic: str, *, marks: bool = False
) -> list[tuple[bytes | None, dict[str, Any], int, int]]:
    """Every record of `topic` now: (key, decoded value, partition, offset), per partition in offset
    order. Values get `end_of_stream: False`; an end-of-stream marker (null value, StreamEnd header)
    reads as its StreamEnd fields plus `end_of_stream: True`; progress marks are left out, or with
    `marks` read as their StreamProgress fields plus `progress: True`."""
    codec = Codec(settings.schema_registry_url, settings.topic_prefix)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers(settings), enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(settings.partitions)]  # every topic has this count
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        # no seek_to_beginning: it races the initial offset reset; "earliest" is the reset itself
        out: list[tuple[bytes | None, dict[str, Any], int, int]] = []
        remaining = {tp for tp in tps if ends[tp] > 0}
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=500)
            for tp, records in batch.items():
                for r in records:
                    if r.offset < ends[tp]:
                        value = _value(codec, topic, r.value, r.headers, marks)
                        if value is not None:
                            out.append((r.key, value, tp.partition, r.offset))
            # positions, not record offsets: they also move past offsets that hold no record
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
        out.sort(key=lambda rec: (rec[2], rec[3]))
        return out
    finally:
        await consumer.stop()


def _value(codec: Codec, topic: str, value: bytes | None, headers: Any, marks: bool) -> dict[str, Any] | None:
    """A record as the tests read it; a progress mark only when `marks` (with "progress": True)."""
    if value is None:
        control = read_control(headers)
        assert control is not None, f"a null value without control headers on {topic}"
        if "ended" not in control:
            return {**control, "progress": True, "end_of_stream": False} if marks else None
        return {**control, "end_of_stream": True}
    return {**codec.decode(topic, value), "end_of_stream": False}


# --- the whole ingest path against the emulator -------------------------------------------------------

import uuid  # noqa: E402
from collections.abc import AsyncIterator  # noqa: E402
from contextlib import AsyncExitStack, asynccontextmanager  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402

from emulator.media import MeetingSpec, SyntheticMeeting  # noqa: E402
from emulator.server import RTMSServer  # noqa: E402
from emulator.webhooks import StreamIdentity, WebhookSender  # noqa: E402
from ingest.backend import FrameHandler, SessionBackend  # noqa: E402
from ingest.webhook import WebhookServer  # noqa: E402
from ingest.worker import SessionWorker  # noqa: E402
from ingest.ws_client import WebSocketBackend, client_config  # noqa: E402

RAW = ("rtms.raw.audio", "rtms.raw.video", "rtms.raw.transcript", "rtms.raw.events", "rtms.raw.chat")


def small_meeting(seed: int = 1, duration_s: float = 3.0, participants: int = 2) -> SyntheticMeeting:
    """A short meeting with small video (360p, 10 fps) and sync beeps every second."""
    meeting = SyntheticMeeting(
        MeetingSpec(
            seed=seed,
            participants=participants,
            duration_s=duration_s,
            video="360p",
            fps=10,
            beep_every_ms=1000,
        )
    )
    meeting.prepare()
    return meeting


@dataclass
class Stack:
    """Emulator ("Zoom"), webhook endpoint and in-process workers over one test's topics."""

    settings: Settings
    server: RTMSServer
    hooks: WebhookSender
    webhook: WebhookServer
    group: str
    backends: list[WebSocketBackend] = field(default_factory=list)
    workers: list[SessionWorker] = field(default_factory=list)
    running: AsyncExitStack = field(default_factory=AsyncExitStack)  # the workers' `async with`

    def backend_factory(self, s: Settings, frames: FrameHandler) -> SessionBackend:
        config = client_config(s, backoff_base_s=0.2, video_resolution=1, video_fps=10)
        backend = WebSocketBackend(s, frames, config=config)
        self.backends.append(backend)
        return backend

    async def start_worker(self) -> SessionWorker:
        worker = SessionWorker(
            self.settings, group_id=self.group, backend_factory=self.backend_factory, session_timeout_ms=6000
        )
        self.workers.append(await self.running.enter_async_context(worker))
        return worker

    async def stop_workers(self) -> None:
        """Stop every worker (the last started first)."""
        await self.running.aclose()
        self.workers.clear()

    def stream(
        self, meeting: SyntheticMeeting | list[Any], *, seed: int = 1, speed: float = 1.0, **kw: Any
    ) -> tuple[StreamIdentity, Any]:
        """A new emulated meeting: its webhook identity and its emulator handle (frames recorded)."""
        identity = StreamIdentity.generate("meeting", "", seed=seed, index=int(uuid.uuid4().int % 10**6))
        handle = self.server.add_stream(
            identity.instance_id, identity.rtms_stream_id, meeting, speed=speed, record=True, **kw
        )
        return dataclasses.replace(identity, server_urls=handle.server_urls), handle

    def interrupted_webhooks(self, identity: StreamIdentity, handle: Any) -> list[asyncio.Task[Any]]:
        """Send `rtms_interrupted` whenever the emulator loses the stream's signaling, as Zoom does."""
        tasks: list[asyncio.Task[Any]] = []

        def on_change(event: Any) -> None:
            if event.kind == "interrupted":
                tasks.append(asyncio.ensure_future(self.hooks.rtms_interrupted(identity)))

        handle.on_lifecycle(on_change)
        return tasks

    async def raw(self, meeting_uuid: str) -> dict[str, list[dict[str, Any]]]:
        """The meeting's records on each raw topic, in offset order."""
        out = {}
        for name in RAW:
            records = await read_topic(self.settings, self.settings.topic_prefix + name)
            out[name] = [v for k, v, _, _ in records if k == meeting_uuid.encode()]
        return out

    async def wait_eos(self, meeting_uuid: str, timeout_s: float = 30.0) -> dict[str, list[dict[str, Any]]]:
        """Until every raw topic has the meeting's end-of-stream marker; returns the records."""
        async with asyncio.timeout(timeout_s):
            while True:
                raw = await self.raw(meeting_uuid)
                if all(any(v["end_of_stream"] for v in raw[name]) for name in RAW):
                    return raw
                await asyncio.sleep(0.5)


@asynccontextmanager
async def ingest_stack(settings: Settings, **server_kw: Any) -> AsyncIterator[Stack]:
    s = ingest_settings(settings)
    server = RTMSServer(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, **server_kw)
    await server.start()
    webhook = WebhookServer(s)
    port = await webhook.start(host="127.0.0.1", port=0)
    hooks = WebhookSender(f"http://127.0.0.1:{port}/webhook", WEBHOOK_SECRET, retries=0)
    await hooks.start()
    stack = Stack(s, server, hooks, webhook, group=f"ingest-{uuid.uuid4().hex[:8]}")
    try:
        yield stack
    finally:
        await stack.stop_workers()
        await hooks.stop()
        await webhook.stop()
        await server.stop()


def frames_of(raw: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [v for v in raw if not v["end_of_stream"]]


def assert_eos_last(
    raw: dict[str, list[dict[str, Any]]], reason: int | None, *, ended: str = "STOPPED", complete: bool = True
) -> None:
    """Each raw topic ends with exactly one end-of-stream marker, carrying the stop reason, how the
    stream ended, and per stream kind exactly as many records as the topic holds of the stream."""
    for name in RAW:
        records = raw[name]
        assert records and records[-1]["end_of_stream"] and records[-1]["stop_reason"] == reason, name
        assert sum(v["end_of_stream"] for v in records) == 1, name
        marker = records[-1]
        assert marker["topic"] == name and marker["ended"] == ended and marker["complete"] is complete, name
        counted: dict[str, int] = {}
        for v in frames_of(records):
            counted[v["stream_kind"]] = counted.get(v["stream_kind"], 0) + 1
        if complete:
            assert marker["counts"] == counted, name


def assert_ingest_seq_increasing(raw: dict[str, list[dict[str, Any]]]) -> None:
    """On each raw topic, the ingest sequence of each stream kind counts 0, 1, 2, ... in receive
    order within each ingest epoch."""
    for name in RAW:
        by_lane: dict[tuple[str, int], list[int]] = {}
        for v in frames_of(raw[name]):
            by_lane.setdefault((v["stream_kind"], v["ingest_epoch"]), []).append(v["ingest_seq"])
        for lane, seqs in by_lane.items():
            if seqs != list(range(len(seqs))):  # say which records, so a rare failure can be read
                shown = [
                    (v["ingest_seq"], v.get("name"), v["timestamp_ms"], v["received_at_ms"])
                    for v in frames_of(raw[name])
                    if (v["stream_kind"], v["ingest_epoch"]) == lane
                ]
                raise AssertionError((name, lane, seqs[:50], shown[:50]))


# Zoom's SDK closes every socket the moment STREAM_STATE TERMINATED arrives on signaling (docs/PROTOCOL.md
# §8.2), so what was still on its way on a media socket is lost: up to this much media time at
# the very end of a stream (our WebSocket client drains the media sockets and loses nothing).
SDK_MAY_LOSE_TAIL_MS = 2000


def assert_prefix_with_tail(
    got: list[tuple[Any, ...]], want: list[tuple[Any, ...]], tail_ms: int, when: int = 0
) -> None:
    """`got` equals `want`, except that frames of the last `tail_ms` of `want` may be missing at
    the end (a frame's time: its element `when`). `tail_ms=0`: equal."""
    if tail_ms == 0 or got == want:
        assert got == want
        return
    assert got == want[: len(got)], "not a prefix of what was sent"
    missing = want[len(got) :]
    assert missing[0][when] >= max(w[when] for w in want) - tail_ms, (
        f"{len(missing)} frames missing from {missing[0][when]}, more than the last {tail_ms} ms"
    )


def assert_same_frames(sent: list, raw: dict[str, list[dict]], may_lose_tail_ms: int = 0) -> None:
    """What the emulator sent, per channel, equals what is on the raw topics (order included);
    `may_lose_tail_ms` (the SDK backend: `SDK_MAY_LOSE_TAIL_MS`): but for a missing end."""
    audio = [(f.timestamp, f.user_id, f.data) for f in sent if f.channel == "audio"]
    video = [(f.timestamp, f.user_id, f.data) for f in sent if f.channel == "video"]
    text = [
        (f.timestamp, f.user_id, f.data, f.start_time, f.end_time) for f in sent if f.channel == "transcript"
    ]
    got_audio = [
        (v["timestamp_ms"], v["participant_id"], v["payload"]) for v in frames_of(raw["rtms.raw.audio"])
    ]
    got_video = [
        (v["timestamp_ms"], v["participant_id"], v["payload"]) for v in frames_of(raw["rtms.raw.video"])
    ]
    got_text = [(v["timestamp_ms"], v["participant_id"], v["text"], v["start_time_ms"], v["end_time_ms"])
                for v in frames_of(raw["rtms.raw.transcript"])]  # fmt: skip
    assert audio and video and text
    assert_prefix_with_tail(got_audio, audio, may_lose_tail_ms)
    assert_prefix_with_tail(got_video, video, may_lose_tail_ms)
    assert_prefix_with_tail(got_text, text, may_lose_tail_ms, when=4)  # a piece's end time


async def play_whole_meeting(
    stack: Stack, meeting: SyntheticMeeting, may_lose_tail_ms: int = 0
) -> tuple[Any, dict[str, list[dict[str, Any]]]]:
    """Play `meeting` through the stack's started/stopped webhooks and check the raw-topic contract
    every backend must keep: exactly one end-of-stream marker last with the stop reason, ingest
    sequence in receive order, every frame the emulator sent byte for byte, and the granted L16
    16 kHz mono mixed audio recorded with each audio frame. Returns the emulator's stream handle
    and the raw topics' records, for the backend-specific checks that follow."""
    identity, handle = stack.stream(meeting, speed=2.0)
    (delivery,) = await stack.hooks.rtms_started(identity)
    assert delivery.delivered
    async with asyncio.timeout(30):
        reason = await handle.wait_done()
    await stack.hooks.rtms_stopped(identity, reason)
    raw = await stack.wait_eos(identity.instance_id)
    assert_eos_last(raw, reason)
    assert_ingest_seq_increasing(raw)
    assert_same_frames(handle.sent, raw, may_lose_tail_ms)
    audio = frames_of(raw["rtms.raw.audio"])[0]
    assert audio["media"] == {
        "codec": "L16",
        "sample_rate": 16000,
        "channels": 1,
        "send_rate_ms": 20,
        "mixed": True,
    }
    return handle, raw


# --- worker processes (for kill -9) ------------------------------------------------------------------

import os  # noqa: E402
import select  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import aiohttp  # noqa: E402

from rtmsflow.children import die_with_parent  # noqa: E402

SESSION_TIMEOUT_MS = 6000  # the broker's minimum


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is gone for our purpose only once reaped; /proc says which
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def wait_gone(pid: int, timeout_s: float = 30.0) -> None:
    """Block until process `pid` (not necessarily our child) has exited, or fail: Linux wakes us
    through a pidfd, no polling."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return  # gone already
    try:
        readable, _, _ = select.select([fd], [], [], timeout_s)
    finally:
        os.close(fd)
    assert readable, f"process {pid} still runs after {timeout_s} s"


class WorkerProcess:
    """`rtmsflow ingest worker` in a subprocess with its /health port."""

    def __init__(self, env: dict[str, str], group: str, log_path: Path) -> None:
        self.port = free_port()
        self.log_path = log_path
        self.log = log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rtmsflow.cli", "ingest", "worker", "--group", group,
             "--session-timeout-ms", str(SESSION_TIMEOUT_MS), "--backoff-base-s", "0.3",
             "--video-resolution", "360p", "--video-fps", "10", "--metrics-port", str(self.port)],
            env=env, stdout=self.log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent,
        )  # fmt: skip

    async def health(self) -> dict[str, Any] | None:
        try:
            async with aiohttp.ClientSession() as http:
                async with http.get(
                    f"http://127.0.0.1:{self.port}/health", timeout=aiohttp.ClientTimeout(total=1)
                ) as r:
                    return dict(await r.json())
        except (aiohttp.ClientError, TimeoutError):
            return None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def worker_env(settings_env: dict[str, str]) -> dict[str, str]:
    """A worker subprocess's environment: the test's settings plus the emulator's credentials."""
    return {
        **settings_env,
        "ZM_RTMS_CLIENT": CLIENT_ID,
        "ZM_RTMS_SECRET": CLIENT_SECRET,
        "RTMSFLOW_ALLOWED_HOSTS": "127.0.0.1",
        "RTMSFLOW_ALLOW_INSECURE_WS": "1",
        "RTMSFLOW_HTTP_HOST": "127.0.0.1",
    }
