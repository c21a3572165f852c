"""`SdkBackend`: the session backend on Zoom's official Python SDK (`rtms`, extra `sdk`).

Selected by `RTMSFLOW_INGEST_BACKEND=sdk`. It produces the same values as the raw WebSocket
backend (`ingest.ws_client`) from the SDK's callbacks: audio, video, deskshare and transcript
frames with the participant from the SDK's `Metadata`, EVENT_UPDATEs from `on_event_ex`, and the
outcome from `on_leave(reason)`. What it cannot produce, because the SDK does not expose it:
STREAM_STATE / SESSION_STATE records (its only window on them, `on_session_update`, crashes), the
transcript `language` and ZCC `channel_id`, the parameters Zoom actually granted (we record what we
asked for), and dead letters for frames the SDK drops by itself (protocol notes 3.3). Mixed audio is
recorded as user 0, as Zoom sends it: the SDK's `Metadata` then holds a stale user from an earlier
frame of any kind (-1 before the first), which is not the speaker.

Where the SDK runs: in a child process (`ingest.sdk_host`), one per worker process, shared by all
its SDK sessions on one `rtms.EventLoopPool`; frames come back over a pipe (`ingest.sdk_wire`).
Why not in the worker itself:
* the C core is not memory-safe in practice (segfaults in `join()` without a pool and in `poll()`
  with `on_session_update`, garbage in `Session` fields, `std::terminate` at interpreter exit). In
  the worker a crash would take the Kafka producer with every frame not yet acknowledged, for
  every meeting; with a host the worker loses nothing it holds, restarts the host and rejoins;
* the SDK holds the GIL inside `poll()` and its callbacks, and its Python layer prints to stdout;
* its configuration is process-global (`SSB_HOME` for its log directory, `ZM_RTMS_CA`).
The price is one more copy of each frame (a binary pipe message, no JSON), measured by
`benchmarks/ingest_bench.py --backend sdk`.

SDK defects handled (protocol notes 4.2, 5, 6):
* many clients need one shared `EventLoopPool` (else segfault in `join`): the host has one, with
  ONE thread by default: with two, a `join` on one SDK thread shortly after a `release` on the
  other (a failover to the next URL) segfaulted in our tests, reproducibly;
* `on_session_update` segfaults in `poll()`: never registered;
* typed event callbacks never subscribe, and a silent rejoin replays nothing: the host calls
  `subscribe_event` after `on_join_confirm(0)` and again after every repeated
  FIRST_PACKET_TIMESTAMP, from the client's own thread (inside a callback it deadlocks);
* `leave()` from another thread leaves the sockets open (the C core refuses to close sockets off
  its owner thread): the host releases each client on its own SDK thread, which closes them;
* no STREAM_CLOSE_REQ exists in the SDK: `stop(close_stream=True)` sends it on a short raw
  signaling connection after the SDK client is gone;
* `generate_signature` prefers env `ZM_RTMS_CLIENT`/`ZM_RTMS_SECRET`: we compute the signature
  and the host does not even see those variables; the `ca` argument is ignored: `ZM_RTMS_CA` is
  passed through to the host;
* the C core writes `./logs/...` relative to the CWD: it honours `SSB_HOME`, so the host gets
  `SSB_HOME=$RTMSFLOW_SDK_HOME` (default `<cache>/sdk`) with a `logs/` directory, pruned at start;
* `server_urls` is not split on commas: we try each URL in order, with our own join timeout (the
  SDK retries a refused connect forever without a callback);
* SDK audio/video defaults differ from the protocol's (issue #92): explicit parameters, the same
  as the raw backend asks for (`ClientConfig.media_params`).

Environment (until these join `Settings`): `RTMSFLOW_SDK_HOME`, `RTMSFLOW_SDK_THREADS` (SDK loop
threads, default 1), `RTMSFLOW_SDK_POLL_MS` (poll interval, default 10), `RTMSFLOW_SDK_PYTHON`
(interpreter of the host, default this one).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import ssl
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from weakref import WeakKeyDictionary

from prometheus_client import Counter
from websockets.asyncio.client import connect

import rtms_protocol as proto
from ingest import metrics
from ingest.allowlist import DisallowedUrl, check_url, split_server_urls
from ingest.backend import (
    AudioData,
    AudioParams,
    DeadLetterData,
    EventData,
    FrameHandler,
    Participant,
    Product,
    SessionBackend,
    SessionOutcome,
    StreamSession,
    TranscriptData,
    VideoData,
    VideoParams,
    video_mode,
)
from ingest.rtms_client import Backoff, ClientConfig, event_name
from ingest.sdk_wire import (
    QUIT,
    ControlMessage,
    JoinCommand,
    Kind,
    LeaveCommand,
    MediaMessage,
    Message,
    MessageReader,
    SdkMedia,
)
from ingest.ws_client import client_config
from rtmsflow.logs import get_logger
from rtmsflow.rtms_protocol import Codec  # not yet in the rtms_protocol package
from rtmsflow.settings import Settings, default_cache_dir

log = get_logger(__name__)

HOST_RESTARTS = Counter("rtmsflow_ingest_sdk_host_exits", "SDK host processes that exited unexpectedly.")

LEFT_TIMEOUT_S = 5.0  # wait this long for the host to release a client
HOST_START_TIMEOUT_S = 60.0
LOG_KEEP_DAYS = 3


class SdkUnavailable(RuntimeError):
    """Zoom's SDK cannot run here (not installed, unsupported platform, host failed to start)."""


@dataclass(frozen=True)
class SdkOptions:
    """How the SDK host process runs (see the module docstring for the variables)."""

    home: Path = field(default_factory=lambda: default_cache_dir() / "sdk")
    threads: int = 1  # see the module docstring: the C core is not safe across SDK threads
    poll_ms: float = 10.0
    python: str = sys.executable
    linger_s: float = 2.0  # keep an idle host this long, so a meeting starting right after reuses it

    @classmethod
    def from_env(cls) -> SdkOptions:
        env = os.environ
        return cls(
            home=Path(env["RTMSFLOW_SDK_HOME"])
            if env.get("RTMSFLOW_SDK_HOME")
            else default_cache_dir() / "sdk",
            threads=int(env.get("RTMSFLOW_SDK_THREADS") or 1),
            poll_ms=float(env.get("RTMSFLOW_SDK_POLL_MS") or 10.0),
            python=env.get("RTMSFLOW_SDK_PYTHON") or sys.executable,
        )


# --- what we ask the SDK for, and what we record ---------------------------------------------


@dataclass(frozen=True)
class SdkPlan:
    """The SDK media parameters for a `ClientConfig`, and the parameters recorded with frames."""

    media: SdkMedia
    audio: AudioParams
    video: VideoParams
    deskshare: VideoParams


def sdk_plan(config: ClientConfig) -> SdkPlan:
    """Ask the SDK for exactly what the raw backend asks for (`ClientConfig.media_params`): its
    defaults (OPUS 48 kHz stereo, 30 fps) differ from the protocol's (issue #92). The SDK does not
    expose Zoom's answer, so the recorded parameters are the requested ones."""
    a = config.media_params("audio").audio or proto.AudioParams()
    v = config.media_params("video").video or proto.VideoParams()
    d = config.media_params("deskshare").deskshare or proto.VideoParams(data_opt=None)
    t = config.media_params("transcript").transcript or proto.TranscriptParams()
    hz = proto.AudioSampleRate(a.sample_rate).hz
    media = SdkMedia(
        audio=(
            (
                a.content_type,
                a.codec,
                a.sample_rate,
                a.channel,
                a.data_opt,
                a.send_rate,
                hz * a.send_rate // 1000,
            )
            if config.audio
            else None
        ),
        video=(
            (
                v.content_type,
                v.codec,
                v.resolution,
                v.data_opt or proto.DataOption.VIDEO_SINGLE_ACTIVE_STREAM,
                v.fps,
            )
            if config.video
            else None
        ),
        deskshare=(d.content_type, d.codec, d.resolution, d.fps) if config.deskshare else None,
        transcript=(t.src_language, t.enable_lid) if config.transcript else None,
    )

    def video_params(p: proto.VideoParams) -> VideoParams:
        width, height = proto.Resolution(p.resolution).size
        return VideoParams(
            codec=Codec(p.codec).name,
            width=width,
            height=height,
            fps=p.fps,
            mode=video_mode(p.data_opt),
        )

    return SdkPlan(
        media=media,
        audio=AudioParams(
            codec=Codec(a.codec).name,
            sample_rate=hz,
            channels=a.channel,
            send_rate_ms=a.send_rate,
            mixed=a.data_opt != proto.DataOption.AUDIO_MULTI_STREAMS,
        ),
        video=video_params(v),
        deskshare=video_params(d),
    )


# --- decisions (pure) ---------------------------------------------------------------------------


def join_status_decision(status: int) -> str:
    """What an `on_join_confirm(status)` means: "ok", "retry" (status 8: the previous owner still
    holds the stream), "fatal" (any other RTMS status code, e.g. 3 bad signature), or "next" (a
    connection problem, try the next URL): SDK codes outside the RTMS table (610 TLS failure) and 1,
    which the SDK reports when its own connect retries give up (RTMS' 1, invalid message type, is
    not something a server says to a well-formed handshake)."""
    if status == proto.StatusCode.OK:
        return "ok"
    if status == proto.StatusCode.DUPLICATE_SIGNAL_REQUEST:
        return "retry"
    if status == proto.StatusCode.INVALID_MESSAGE_TYPE:
        return "next"
    if 0 < status <= max(proto.StatusCode):
        return "fatal"
    return "next"


def leave_decision(reason: int) -> tuple[str, int | None]:
    """What an `on_leave(reason)` means. The SDK calls it for STREAM_STATE TERMINATED with Zoom's
    stop reason (-1 when the message had none; the raw backend records 0 then) -> ("ended", reason);
    960 (a socket closed with a close frame, no TERMINATED) and other codes beyond the stop-reason
    table are a lost connection -> ("retry", None)."""
    if reason == -1:
        return "ended", 0
    if 0 <= reason <= max(proto.StopReason):
        return "ended", reason
    return "retry", None


def event_data(raw: str, product: Product) -> EventData:
    """An `on_event_ex` JSON text (the inner `event` of an EVENT_UPDATE) as the raw backend's value.
    The body is the EVENT_UPDATE rebuilt around the SDK's text (the SDK re-serializes it, so it is
    not Zoom's bytes). Raises `ProtocolError` for a malformed event."""
    obj = proto.decode_json('{"msg_type":6,"event":' + raw + "}") if raw.strip() else None
    if obj is None:
        raise proto.ProtocolError("bad_json", "event", "empty")
    ev = proto.EventUpdate.from_dict(obj)
    name = event_name(ev.event_type, product)
    return EventData(
        msg_type=proto.MsgType.EVENT_UPDATE,
        name=name,
        timestamp_ms=ev.timestamp,
        body='{"msg_type":6,"event":' + raw + "}",
        event_type=ev.event_type,
        participant_id=ev.user_id or 0,
        participant_name=ev.user_name or None,
        participants=tuple(Participant(p.user_id, p.user_name) for p in ev.participants or ()),
    )


# --- the host process, seen from the worker --------------------------------------------------------


class _Route:
    """Where the host's messages for one sid go: frames to the frame handler (awaited, in order), control
    messages to the owning backend's queue."""

    def __init__(self, backend: SdkBackend, sid: int) -> None:
        self.backend = backend
        self.sid = sid
        self.left: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.failed = False

    async def deliver(self, msg: Message) -> None:
        if self.failed:
            return
        try:
            await self.backend._deliver(self.sid, msg)
        except Exception as exc:  # a frame handler failure ends this session, not the host's other sessions
            self.failed = True
            log.exception("SDK session failed", extra=self.backend._ctx(sid=self.sid))
            self.backend._post(("failed", self.sid, repr(exc)))

    def gone(self) -> None:
        if not self.left.done():
            self.left.set_result(None)


class SdkHost:
    """One `python -m ingest.sdk_host` child and the reader that routes its messages.

    `start()` spawns it and waits for its HELLO (raises `SdkUnavailable` if it cannot run);
    `join`/`leave` send commands; `stop()` asks it to leave everything and exit. If the child dies
    on its own, every route is told (`lost`) and the host is marked dead; the pool starts a new one.
    """

    def __init__(self, options: SdkOptions) -> None:
        self.options = options
        self.proc: asyncio.subprocess.Process | None = None
        self.routes: dict[int, _Route] = {}
        self.alive = False
        self.refs = 0
        self.rtms_version = ""
        self._sid = 0
        self._reader_task: asyncio.Task[None] | None = None
        self._stderr_task: asyncio.Task[None] | None = None
        self._stderr_tail: deque[str] = deque(maxlen=60)
        self._stopping = False
        self._linger: asyncio.TimerHandle | None = None

    async def start(self) -> None:
        home = self.options.home
        (home / "logs").mkdir(parents=True, exist_ok=True)
        _prune_logs(home / "logs", LOG_KEEP_DAYS)
        env = {k: v for k, v in os.environ.items() if k not in ("ZM_RTMS_CLIENT", "ZM_RTMS_SECRET")}
        env.update(SSB_HOME=str(home), ZM_RTMS_LOG_ENABLED="false", PYTHONUNBUFFERED="1")
        self.proc = await asyncio.create_subprocess_exec(
            self.options.python,
            "-m",
            "ingest.sdk_host",
            "--threads",
            str(self.options.threads),
            "--poll-ms",
            str(self.options.poll_ms),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            cwd=str(home),
            limit=4 << 20,
        )
        self._stderr_task = asyncio.create_task(self._pump_stderr(), name="sdk-host-stderr")
        reader = MessageReader()
        assert self.proc.stdout is not None
        try:
            hello = await asyncio.wait_for(self._first_message(reader), HOST_START_TIMEOUT_S)
        except TimeoutError:
            await self._kill()
            raise SdkUnavailable("the SDK host did not start in time") from None
        if not isinstance(hello, ControlMessage) or hello.kind is not Kind.HELLO:
            await self._kill()
            why = hello.text if isinstance(hello, ControlMessage) else ""
            why = why or "; ".join(self._stderr_tail)
            raise SdkUnavailable(f"the SDK host could not start: {why or 'exited'}")
        info = json.loads(hello.text)
        self.rtms_version = str(info.get("rtms", ""))
        self.alive = True
        self._reader_task = asyncio.create_task(self._read(reader), name="sdk-host-reader")
        log.info("SDK host started", extra={"pid": info.get("pid"), "rtms": self.rtms_version})

    def new_route(self, backend: SdkBackend) -> _Route:
        self._sid += 1
        route = _Route(backend, self._sid)
        self.routes[route.sid] = route
        return route

    def send(self, command: bytes) -> None:
        if not self.alive or self.proc is None or self.proc.stdin is None:
            raise ConnectionError("SDK host is not running")
        self.proc.stdin.write(command)

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Leave every client, let the host exit; kill it if it does not within `timeout_s`."""
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        self._stopping = True
        proc = self.proc
        if proc is None:
            return
        if proc.returncode is None and proc.stdin is not None:
            try:
                proc.stdin.write(QUIT)
                proc.stdin.close()
            except (ConnectionError, RuntimeError):
                pass
        try:
            await asyncio.wait_for(proc.wait(), timeout_s)
        except TimeoutError:
            await self._kill()
        for task in (self._reader_task, self._stderr_task):
            if task is not None:
                await asyncio.gather(task, return_exceptions=True)
        self.alive = False

    async def _kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()

    async def _first_message(self, reader: MessageReader) -> Message | None:
        assert self.proc is not None and self.proc.stdout is not None
        while True:
            chunk = await self.proc.stdout.read(1 << 16)
            if not chunk:
                return None
            messages = reader.feed(chunk)
            if messages:
                # HELLO is the first thing a host writes; anything else is an error message
                first, rest = messages[0], messages[1:]
                if rest:
                    raise SdkUnavailable(f"unexpected SDK host output before ready: {rest[0]}")
                return first

    async def _read(self, reader: MessageReader) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        stdout = self.proc.stdout
        try:
            while True:
                chunk = await stdout.read(1 << 20)
                if not chunk:
                    break
                for msg in reader.feed(chunk):
                    route = self.routes.get(msg.sid)
                    if route is None:
                        if isinstance(msg, ControlMessage) and msg.kind is Kind.ERROR:
                            log.error("SDK host error", extra={"sid": msg.sid, "error": msg.text})
                        continue
                    if isinstance(msg, ControlMessage) and msg.kind is Kind.LEFT:
                        del self.routes[msg.sid]
                        route.gone()
                        continue
                    await route.deliver(msg)
        except asyncio.CancelledError:
            # the event loop is going away without `shutdown_sdk_hosts()`: end the host quietly
            # (on stdin EOF it leaves every client and exits)
            self._stopping = True
            if self.proc.stdin is not None:
                self.proc.stdin.close()
            raise
        except Exception:
            log.exception("SDK host reader failed")
            raise
        finally:
            self.alive = False
            code = self.proc.returncode
            if not self._stopping:
                with contextlib.suppress(TimeoutError):
                    code = await asyncio.wait_for(self.proc.wait(), 2.0)  # EOF: it is exiting
                HOST_RESTARTS.inc()
                log.error(
                    "SDK host exited",
                    extra={
                        "returncode": code,
                        "stderr": list(self._stderr_tail),
                        "sessions": len(self.routes),
                    },
                )
            routes, self.routes = self.routes, {}
            for route in routes.values():
                route.backend._post(("lost", route.sid, f"SDK host exited ({code})"))
                route.gone()

    async def _pump_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        async for line in self.proc.stderr:
            text = line.decode("utf-8", "replace").rstrip()
            if text:
                self._stderr_tail.append(text)
                log.debug("SDK host stderr", extra={"line": text})


def _prune_logs(logs: Path, keep_days: int) -> None:
    """Delete the C core's log files older than `keep_days` (it never rotates them away)."""
    cutoff = time.time() - keep_days * 86400
    for path in logs.glob("*.log"):
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
        except OSError:
            pass


class _HostPool:
    """At most one live SDK host per event loop, shared by that loop's SDK backends."""

    def __init__(self) -> None:
        self._hosts: WeakKeyDictionary[asyncio.AbstractEventLoop, SdkHost] = WeakKeyDictionary()
        self._starting: WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = WeakKeyDictionary()

    async def acquire(self, options: SdkOptions) -> SdkHost:
        loop = asyncio.get_running_loop()
        lock = self._starting.setdefault(loop, asyncio.Lock())
        async with lock:
            host = self._hosts.get(loop)
            if host is None or not host.alive:
                host = SdkHost(options)
                await host.start()
                self._hosts[loop] = host
            if host._linger is not None:
                host._linger.cancel()
                host._linger = None
            host.refs += 1
            return host

    def release(self, host: SdkHost) -> None:
        host.refs -= 1
        if host.refs > 0 or not host.alive:
            return
        loop = asyncio.get_running_loop()

        def close() -> None:
            host._linger = None
            if host.refs == 0:
                if self._hosts.get(loop) is host:
                    del self._hosts[loop]
                loop.create_task(host.stop())

        host._linger = loop.call_later(host.options.linger_s, close)

    async def shutdown(self) -> None:
        """Stop this loop's host now (worker shutdown, end of a test or benchmark)."""
        host = self._hosts.pop(asyncio.get_running_loop(), None)
        if host is not None:
            await host.stop()


HOSTS = _HostPool()


async def shutdown_sdk_hosts() -> None:
    """Stop the SDK host of the running event loop, if any (idempotent)."""
    await HOSTS.shutdown()


# --- the backend ------------------------------------------------------------------------------------


class SdkBackend(SessionBackend):
    """Holds one RTMS stream through Zoom's SDK. Build with `SdkBackend(settings, frames)`;
    `config` defaults to the raw backend's `client_config(settings)`, so both ask Zoom for the same
    media and follow the same reconnect budget."""

    def __init__(
        self,
        settings: Settings,
        frames: FrameHandler,
        *,
        config: ClientConfig | None = None,
        options: SdkOptions | None = None,
        rng: random.Random | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.settings = settings
        self.frames = frames
        self.config = config or client_config(settings)
        self.options = options or SdkOptions.from_env()
        self.plan = sdk_plan(self.config)
        self.rng = rng or random.Random()
        self.ssl_context = ssl_context
        self.session: StreamSession | None = None
        self.host: SdkHost | None = None
        self.ready_count = 0  # confirmed joins plus the SDK's own silent rejoins; for tests and logs
        self._ready_at_ms = 0
        self._signature = ""
        self._queue: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
        self._task: asyncio.Task[SessionOutcome] | None = None
        self._current: int | None = None  # sid of the live join attempt
        self._first_packets = 0  # FIRST_PACKET_TIMESTAMP events seen for the live attempt

    # --- SessionBackend --------------------------------------------------------------------------

    async def start(self, session: StreamSession) -> None:
        if self._task is not None:
            raise RuntimeError("SdkBackend.start() called twice; use one backend per stream")
        self.session = session
        self._signature = proto.handshake_signature(
            self.config.client_id, self.config.client_secret, session.meeting_uuid, session.rtms_stream_id
        )
        self.host = await HOSTS.acquire(self.options)
        self._task = asyncio.create_task(self._run(), name=f"rtms-sdk:{session.meeting_uuid}")

    async def reconnect(self, server_urls: str | None = None, since_ms: int | None = None) -> None:
        self._post(("reconnect", server_urls, since_ms))

    async def stop(self, *, close_stream: bool = False) -> None:
        if self._task is None:
            return
        if not self._task.done():
            self._post(("stop", close_stream))
        await asyncio.wait([self._task])

    async def wait(self) -> SessionOutcome:
        if self._task is None:
            raise RuntimeError("SdkBackend.wait() before start()")
        return await asyncio.shield(self._task)

    # --- the session loop --------------------------------------------------------------------------

    async def _run(self) -> SessionOutcome:
        assert self.session is not None and self.host is not None
        try:
            return await self._session()
        except asyncio.CancelledError:
            return SessionOutcome(ended=False, detail="cancelled")
        except Exception as exc:
            log.exception("SDK session failed", extra=self._ctx())
            return SessionOutcome(ended=False, detail=f"session failed: {exc!r}")
        finally:
            if self._current is not None:
                await self._leave(self._current)
            HOSTS.release(self.host)

    async def _session(self) -> SessionOutcome:
        assert self.session is not None
        cfg = self.config
        urls = self._allowed(self.session.server_urls)
        if not urls:
            return SessionOutcome(ended=True, detail="no allowed server_urls")
        backoff = Backoff(cfg.backoff_base_s, cfg.backoff_cap_s, self.rng)
        index = 0
        while True:
            ready_before = self.ready_count
            sid = await self._join(urls[index])
            result = await self._attempt(sid)
            kind = result[0]
            if kind == "stop":
                return await self._stopped(sid, close_stream=result[1])
            await self._leave(sid)
            if self.ready_count > ready_before:
                backoff.reset()  # the budget counts consecutive failures since we last streamed
            if kind == "ended":
                return SessionOutcome(ended=True, stop_reason=result[1], detail=result[2])
            if kind == "failed":
                return SessionOutcome(ended=False, detail=f"session failed: {result[1]}")
            if kind == "reconnect":
                if result[1]:
                    urls = self._allowed(result[1]) or urls
                index = 0
                metrics.RECONNECTS.labels(scope="failover" if result[1] else "interrupted").inc()
                continue
            # "next" / "retry": this URL did not work (now) -> the next URL, else back off
            why = result[1]
            if kind == "next" and index + 1 < len(urls):
                index += 1
                continue
            index = 0
            if backoff.attempts >= cfg.max_attempts:
                log.error("RTMS reconnect budget spent", extra=self._ctx(why=why, attempts=backoff.attempts))
                return SessionOutcome(ended=True, detail=f"gave up after {backoff.attempts} attempts: {why}")
            # a session that had streamed rejoins at once (Zoom does not buffer video through the
            # wait), then backs off; the same policy as the WebSocket client's (Backoff.after_drop)
            streamed = self.ready_count > ready_before
            delay = (
                backoff.after_drop(time.monotonic())
                if streamed and cfg.reconnect_at_once
                else backoff.next_delay()
            )
            log.info("RTMS reconnect scheduled", extra=self._ctx(why=why, delay_s=round(delay, 3)))
            request = await self._pause(delay)
            if request is not None and request[0] == "stop":
                return await self._stopped(None, close_stream=request[1])
            if request is not None and request[0] == "reconnect" and request[1]:
                urls = self._allowed(request[1]) or urls

    async def _attempt(self, sid: int) -> tuple[Any, ...]:
        """One join: wait for its confirmation (bounded), then for its end. Returns why it ended:
        ("stop", close), ("ended", reason, detail), ("retry"|"next", why), ("reconnect", urls),
        ("failed", why)."""
        deadline = time.monotonic() + self.config.handshake_timeout_s
        confirmed = False
        while True:
            timeout = None if confirmed else max(0.0, deadline - time.monotonic())
            try:
                item = await asyncio.wait_for(self._queue.get(), timeout)
            except TimeoutError:
                return ("next", "no join confirmation in time")
            kind = item[0]
            if kind == "stop":
                return item
            if kind == "reconnect":
                urls, since_ms = item[1], item[2]
                if not urls and (not confirmed or (since_ms is not None and self._ready_at_ms >= since_ms)):
                    continue  # a drop the SDK already healed, or a join still under way
                return ("reconnect", urls)
            if item[1] != sid:
                continue  # about an earlier attempt
            if kind == "confirm":
                decision = join_status_decision(item[2])
                if decision == "ok":
                    confirmed = True
                    self._on_ready()
                    continue
                if decision == "fatal":
                    log.error("RTMS handshake refused", extra=self._ctx(status_code=item[2]))
                    return ("ended", None, f"handshake status {item[2]}")
                return (decision, f"join status {item[2]}")
            if kind == "leave":
                action, reason = leave_decision(item[2])
                if action == "ended":
                    log.info("RTMS stream terminated", extra=self._ctx(stop_reason=reason))
                    return ("ended", reason, "stream terminated")
                log.warning("RTMS connection lost", extra=self._ctx(sdk_reason=item[2]))
                return ("retry", f"connection lost (SDK reason {item[2]})")
            if kind == "rejoined":
                self._on_ready()
                continue
            if kind == "lost":
                return ("retry", item[2])
            if kind == "failed":
                return ("failed", item[2])
            if kind == "error":
                log.warning("SDK error", extra=self._ctx(error=item[2]))

    def _on_ready(self) -> None:
        self.ready_count += 1
        self._ready_at_ms = time.time_ns() // 1_000_000
        if self.ready_count > 1:
            metrics.RECONNECTS.labels(scope="full").inc()
        log.info("RTMS stream connected (SDK)", extra=self._ctx(connects=self.ready_count))

    async def _pause(self, delay: float) -> tuple[Any, ...] | None:
        """Sleep `delay`, unless a stop or reconnect request comes first (then return it)."""
        deadline = time.monotonic() + delay
        while (left := deadline - time.monotonic()) > 0:
            try:
                item = await asyncio.wait_for(self._queue.get(), left)
            except TimeoutError:
                return None
            if item[0] in ("stop", "reconnect"):
                return item
        return None

    async def _stopped(self, sid: int | None, close_stream: bool) -> SessionOutcome:
        if sid is not None:
            await self._leave(sid)
        if not close_stream:
            return SessionOutcome(ended=False, detail="left")
        assert self.session is not None
        closed = await request_stream_close(
            self.session,
            self._allowed(self.session.server_urls),
            self._signature,
            timeout_s=self.config.close_timeout_s,
            ssl_context=self.ssl_context,
        )
        return SessionOutcome(
            ended=True,
            stop_reason=proto.StopReason.RECEIVER_REQUEST_CLOSE,
            detail="closed by us" if closed else "close timed out",
        )

    async def _join(self, url: str) -> int:
        assert self.session is not None
        host = self.host
        if host is None or not host.alive:
            if host is not None:
                HOSTS.release(host)
            self.host = host = await HOSTS.acquire(self.options)
        route = host.new_route(self)
        self._current = route.sid
        self._first_packets = 0
        command = JoinCommand(
            sid=route.sid,
            meeting_uuid=self.session.meeting_uuid,
            rtms_stream_id=self.session.rtms_stream_id,
            server_url=url,
            signature=self._signature,
            media=self.plan.media,
        ).encode()
        try:
            host.send(command)
        except ConnectionError as exc:
            self._post(("lost", route.sid, f"SDK host not running: {exc}"))
        return route.sid

    async def _leave(self, sid: int) -> None:
        """Release the SDK client `sid` and wait until the host confirms (all its frames are in)."""
        if self._current == sid:
            self._current = None
        host = self.host
        if host is None:
            return
        route = host.routes.get(sid)
        if route is None:
            return
        try:
            host.send(LeaveCommand(sid).encode())
            await asyncio.wait_for(asyncio.shield(route.left), LEFT_TIMEOUT_S)
        except (ConnectionError, TimeoutError):
            log.warning("SDK client not released in time", extra=self._ctx(sid=sid))
            host.routes.pop(sid, None)

    def _allowed(self, server_urls: str) -> list[str]:
        urls = []
        for url in split_server_urls(server_urls):
            try:
                check_url(url, self.config.allowed_hosts, self.config.allow_insecure_ws)
            except DisallowedUrl as exc:
                log.error("server URL not allowed", extra=self._ctx(error=str(exc)))
                continue
            urls.append(url)
        return urls

    # --- from the host's reader ----------------------------------------------------------------------

    def _post(self, item: tuple[Any, ...]) -> None:
        self._queue.put_nowait(item)

    async def _deliver(self, sid: int, msg: Message) -> None:
        """Turn one host message into a frame handler call (frames, events) or a queue item (the rest)."""
        assert self.session is not None
        session = self.session
        if isinstance(msg, MediaMessage):
            name = msg.user_name or None
            # Zoom's user ids are never negative; the SDK says -1 for "none" (issues #75/#80).
            uid = msg.user_id if msg.user_id >= 0 else 0
            if msg.kind is Kind.AUDIO:
                if self.plan.audio.mixed:
                    # Mixed audio carries user_id 0 and no name on the wire, but the SDK's Metadata
                    # then holds whoever the previous frame of any kind named (-1 before that): the
                    # stale user is not the speaker. Record what Zoom sent, as the raw backend does.
                    uid, name = 0, None
                await self.frames.audio(
                    session, AudioData(msg.timestamp_ms, msg.payload, self.plan.audio, uid, name)
                )
            elif msg.kind is Kind.VIDEO:
                await self.frames.video(
                    session, VideoData("VIDEO", msg.timestamp_ms, msg.payload, self.plan.video, uid, name)
                )
            elif msg.kind is Kind.DESKSHARE:
                await self.frames.video(
                    session,
                    VideoData("DESKSHARE", msg.timestamp_ms, msg.payload, self.plan.deskshare, uid, name),
                )
            else:
                try:
                    text = msg.payload.decode("utf-8")
                except UnicodeDecodeError as exc:
                    await self.frames.dead_letter(
                        session,
                        DeadLetterData(
                            "sdk:transcript",
                            f"transcript is not UTF-8: {exc}",
                            "UnicodeDecodeError",
                            msg.payload,
                        ),
                    )
                    return
                await self.frames.transcript(
                    session,
                    TranscriptData(
                        timestamp_ms=msg.timestamp_ms,
                        text=text,
                        participant_id=uid,
                        participant_name=name,
                        start_time_ms=msg.start_ms,
                        end_time_ms=msg.end_ms,
                    ),
                )
            return
        if msg.kind is Kind.EVENT:
            try:
                event = event_data(msg.text, session.product)
            except proto.ProtocolError as exc:
                letter = DeadLetterData(
                    "sdk:event", str(exc), f"ProtocolError.{exc.reason}", msg.text.encode()
                )
                await self.frames.dead_letter(session, letter)
                return
            if event.event_type == proto.EventType.FIRST_PACKET_TIMESTAMP and sid == self._current:
                self._first_packets += 1
                if self._first_packets > 1:
                    # Zoom sends one per connect: the SDK rejoined by itself (no other sign of it)
                    self._post(("rejoined", sid))
            await self.frames.event(session, event)
            return
        if msg.kind is Kind.JOIN_CONFIRM:
            self._post(("confirm", sid, msg.reason))
        elif msg.kind is Kind.LEAVE:
            self._post(("leave", sid, msg.reason))
        elif msg.kind is Kind.ERROR:
            self._post(("error", sid, msg.text))

    def _ctx(self, **extra: Any) -> dict[str, Any]:
        s = self.session
        base = {"meeting": s.meeting_uuid, "rtms_stream_id": s.rtms_stream_id} if s else {}
        return {**base, "backend": "sdk", **extra}


# --- STREAM_CLOSE_REQ, which the SDK cannot send ----------------------------------------------------


async def request_stream_close(
    session: StreamSession,
    urls: list[str],
    signature: str,
    *,
    timeout_s: float = 5.0,
    ssl_context: ssl.SSLContext | None = None,
) -> bool:
    """Ask Zoom to end the stream: a short signaling connection (handshake, STREAM_CLOSE_REQ, wait
    for STREAM_CLOSE_RESP or TERMINATED, close 1000). True if Zoom confirmed within `timeout_s`.
    Used after the SDK client is gone, so the handshake is not a duplicate."""
    hello = proto.HandshakeRequest(
        meeting_uuid=session.meeting_uuid,
        rtms_stream_id=session.rtms_stream_id,
        signature=signature,
        sequence=1,
        rtms_client_agent="rtmsflow-sdk-close",
    )
    for url in urls:
        try:
            async with asyncio.timeout(timeout_s):
                ssl_arg: Any = ssl_context if url.startswith("wss://") and ssl_context else None
                async with connect(url, ssl=ssl_arg, compression=None, max_size=None, close_timeout=2) as ws:
                    await ws.send(proto.encode(hello))
                    async for raw in ws:
                        msg = proto.decode_json(raw)
                        kind = msg["msg_type"]
                        if kind == proto.MsgType.SIGNALING_HAND_SHAKE_RESP:
                            if msg.get("status_code") != proto.StatusCode.OK:
                                break
                            await ws.send(proto.encode(proto.StreamCloseRequest(session.rtms_stream_id)))
                        elif kind == proto.MsgType.KEEP_ALIVE_REQ:
                            await ws.send(proto.encode(proto.KeepAliveRequest.from_dict(msg).response()))
                        elif kind == proto.MsgType.STREAM_CLOSE_RESP or (
                            kind == proto.MsgType.STREAM_STATE_UPDATE
                            and msg.get("state") == proto.StreamState.TERMINATED
                        ):
                            return True
        except (TimeoutError, OSError, proto.ProtocolError) as exc:
            log.warning(
                "STREAM_CLOSE_REQ failed",
                extra={"meeting": session.meeting_uuid, "url": url, "error": repr(exc)},
            )
        except Exception as exc:  # websockets' handshake errors and closes
            log.warning(
                "STREAM_CLOSE_REQ failed",
                extra={"meeting": session.meeting_uuid, "url": url, "error": repr(exc)},
            )
    return False
