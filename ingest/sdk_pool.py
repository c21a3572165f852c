"""The SDK host processes, seen from the worker: `HostHandle` and `HostPool` (`HOSTS`).

One live host per event loop, shared by its SDK sessions; each client (one join attempt) has a route by
sid: media and events to the session's frame handler, the rest as typed notices (`ingest.sdk_session`).
A host that dies tells every route (`HostLost`); the next join starts a new one."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from weakref import WeakKeyDictionary

from prometheus_client import Counter

from ingest.sdk_session import HostLost, Notice, SessionFailed
from ingest.sdk_wire import QUIT, ControlMessage, Kind, Message, MessageReader
from rtmsflow.logs import get_logger
from rtmsflow.settings import Settings, default_cache_dir

log = get_logger(__name__)

HOST_RESTARTS = Counter("rtmsflow_ingest_sdk_host_exits", "SDK host processes that exited unexpectedly.")

HOST_START_TIMEOUT_S = 60.0
LOG_KEEP_DAYS = 3


class SdkUnavailable(RuntimeError):
    """Zoom's SDK cannot run here (not installed, unsupported platform, host failed to start)."""


@dataclass(frozen=True)
class SdkOptions:
    """How the SDK host process runs (the variables: docs/DECISIONS.md, "Ingest")."""

    home: Path = field(default_factory=lambda: default_cache_dir() / "sdk")
    threads: int = 1  # the C core is not safe across SDK threads (docs/DECISIONS.md, "Ingest")
    poll_ms: float = 10.0
    python: str = sys.executable
    linger_s: float = 2.0  # keep an idle host this long, so a meeting starting right after reuses it

    @classmethod
    def from_settings(cls, settings: Settings) -> SdkOptions:
        """The options the RTMSFLOW_SDK_* settings name."""
        return cls(
            home=settings.sdk_home_path(),
            threads=settings.sdk_threads,
            poll_ms=settings.sdk_poll_ms,
            python=settings.sdk_python_path(),
        )


class Route:
    """Where the host's messages for one sid go: `deliver(sid, msg)` (the session's; frames go to
    its frame handler, awaited, in order) and `post(notice)` (the session's queue). `ctx` is the
    session's log context."""

    def __init__(
        self,
        sid: int,
        deliver: Callable[[int, Message], Awaitable[None]],
        post: Callable[[Notice], None],
        ctx: dict[str, Any],
    ) -> None:
        self.sid = sid
        self._deliver = deliver
        self.post = post
        self.ctx = ctx
        self.left: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.failed = False

    async def deliver(self, msg: Message) -> None:
        if self.failed:
            return
        try:
            await self._deliver(self.sid, msg)
        except Exception as exc:  # a frame handler failure ends this session, not the host's other sessions
            self.failed = True
            log.exception("SDK session failed", extra={**self.ctx, "sid": self.sid})
            self.post(SessionFailed(self.sid, repr(exc)))

    def gone(self) -> None:
        if not self.left.done():
            self.left.set_result(None)


class HostHandle:
    """One `python -m ingest.sdk_host` child and the reader that routes its messages.

    `start()` spawns it and waits for its HELLO (raises `SdkUnavailable` if it cannot run);
    `join`/`leave` send commands; `stop()` asks it to leave everything and exit. If the child dies
    on its own, every route is told (`lost`) and the host is marked dead; the pool starts a new one.
    """

    def __init__(self, options: SdkOptions) -> None:
        self.options = options
        self.proc: asyncio.subprocess.Process | None = None
        self.routes: dict[int, Route] = {}
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
        # the child inherits this process's environment (its Python, locale, SSL paths), minus the
        # Zoom credentials it never needs: the parent signs the joins
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

    def new_route(
        self,
        deliver: Callable[[int, Message], Awaitable[None]],
        post: Callable[[Notice], None],
        ctx: dict[str, Any],
    ) -> Route:
        """A new sid (one SDK client) whose messages go to `deliver` and `post`."""
        self._sid += 1
        route = Route(self._sid, deliver, post, ctx)
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
                route.post(HostLost(route.sid, f"SDK host exited ({code})"))
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


class HostPool:
    """At most one live SDK host per event loop, shared by that loop's SDK backends."""

    def __init__(self) -> None:
        self._hosts: WeakKeyDictionary[asyncio.AbstractEventLoop, HostHandle] = WeakKeyDictionary()
        self._starting: WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = WeakKeyDictionary()

    async def acquire(self, options: SdkOptions) -> HostHandle:
        loop = asyncio.get_running_loop()
        lock = self._starting.setdefault(loop, asyncio.Lock())
        async with lock:
            host = self._hosts.get(loop)
            if host is None or not host.alive:
                host = HostHandle(options)
                await host.start()
                self._hosts[loop] = host
            if host._linger is not None:
                host._linger.cancel()
                host._linger = None
            host.refs += 1
            return host

    def release(self, host: HostHandle) -> None:
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


HOSTS = HostPool()


async def shutdown_sdk_hosts() -> None:
    """Stop the SDK host of the running event loop, if any (idempotent)."""
    await HOSTS.shutdown()
