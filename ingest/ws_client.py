"""`WebSocketBackend`: the default session backend, a thin asyncio shell around `RtmsClient`.

Each WebSocket (`ingest.ws_socket`) hands its messages to one bounded inbox, and one loop feeds them to
the state machine and carries out its actions; a full inbox pauses reading from Zoom (backpressure)."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import ssl
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from ingest.backend import (
    AudioData,
    ChatData,
    DeadLetterData,
    EventData,
    FrameHandler,
    MediaLost,
    SessionOutcome,
    StreamSession,
    TaskBackend,
    TranscriptData,
    VideoData,
)
from ingest.rtms_client import Action, ClientConfig, Connect, Deliver, Disconnect, Finish, RtmsClient, Send
from ingest.ws_socket import ABNORMAL_CLOSURE, RtmsSocket
from rtmsflow.clock import now_ms
from rtmsflow.logs import get_logger
from rtmsflow.settings import Settings

log = get_logger(__name__)

MAX_MESSAGE_BYTES = 32 << 20  # a base64 key frame of a large video can be several MiB
INBOX_SLOTS = (
    256  # socket messages waiting for the loop, all sockets of one stream together; then reading pauses
)
_FRAMES = (AudioData, VideoData)  # what a media frame's message delivers (it moves no deadline nearer)


def client_config(settings: Settings, **overrides: Any) -> ClientConfig:
    """The client configuration from the settings (credentials, language, allowlist) plus overrides."""
    base: dict[str, Any] = {
        "client_id": settings.zoom_client_id,
        "client_secret": settings.zoom_client_secret,
        "transcript_language": settings.transcript_language,
        "chat": settings.rtms_chat,
        "allowed_hosts": settings.allowed_hosts,
        "allow_insecure_ws": settings.allow_insecure_ws,
        "video_individual": settings.rtms_video_mode == "individual",
        "video_participants_max": settings.rtms_video_participants,
    }
    base.update(overrides)
    return ClientConfig(**base)


@dataclass(slots=True)
class _Notice:
    """What a socket's reader or the owner tells the loop, for `_feed` to turn into an input."""

    kind: str  # open, open_failed, message, closed, stop, reconnect
    channel: str = ""
    conn: int = 0
    data: Any = None
    wall_ms: int = 0


class WebSocketBackend(TaskBackend):
    """Holds one RTMS stream over raw WebSockets (docs/PROTOCOL.md §3-§6). Build with
    `WebSocketBackend(settings, frames, config=..., ssl_context=...)`; config defaults to
    `client_config(settings)`."""

    def __init__(
        self,
        settings: Settings,
        frames: FrameHandler,
        *,
        config: ClientConfig | None = None,
        ssl_context: ssl.SSLContext | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.frames = frames
        self.config = config or client_config(settings)
        self.ssl_context = ssl_context
        self.rng = rng
        self.session: StreamSession | None = None
        self.machine: RtmsClient | None = None
        self._notices: deque[_Notice] = deque()  # one consumer, which waits on `_wake`: no asyncio.Queue
        self._inbox_messages = 0  # message notices queued; at INBOX_SLOTS the sockets pause
        self._paused: list[RtmsSocket] = []
        self._sockets: dict[tuple[str, int], RtmsSocket] = {}
        self._readers: dict[tuple[str, int], asyncio.Task[None]] = {}  # each waits for its socket's end
        self._closers: set[asyncio.Task[None]] = set()
        self._wake: asyncio.Future[None] | None = None  # the loop waits on it when the queue is empty
        self._timer: asyncio.TimerHandle | None = None  # wakes the loop for the machine's next deadline
        self._timer_at = 0.0
        # the machine's next deadline as last asked, or earlier (a media frame only moves it later)
        self._deadline: float | None = None
        self._deadline_kept = False
        self._ready = asyncio.Event()  # set once the machine first reached READY

    # --- SessionBackend ---------------------------------------------------------------------------

    async def start(self, session: StreamSession) -> None:
        self._refuse_second_start()
        self.session = session
        self.machine = RtmsClient(session, self.config, self.rng)
        self._launch(f"rtms:{session.meeting_uuid}")

    def _request_reconnect(self, server_urls: str | None, since_ms: int | None) -> None:
        self._post(_Notice("reconnect", data=(server_urls, since_ms)))

    def _request_stop(self, close_stream: bool) -> None:
        self._post(_Notice("stop", data=close_stream))

    async def connected(self) -> bool:
        """Wait until the stream is streaming (True) or the session is over first (False)."""
        if self._task is None:
            raise RuntimeError("WebSocketBackend.connected() before start()")
        ready = asyncio.ensure_future(self._ready.wait())
        try:
            await asyncio.wait([ready, self._task], return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
        return self._ready.is_set()

    @property
    def ready_count(self) -> int:
        """How many times the stream was (re)connected; for tests and logs."""
        return self.machine.ready_count if self.machine else 0

    # --- the loop ----------------------------------------------------------------------------------

    async def _run(self) -> SessionOutcome:
        assert self.machine is not None
        machine = self.machine
        outcome: SessionOutcome | None = None
        loop = asyncio.get_running_loop()  # asked once: on 3.11 each call costs a getpid()
        try:
            outcome = await self._carry_out(machine.start(time.monotonic()))
            while outcome is None:
                outcome = await self._turn(machine, await self._next_notice(machine, loop))
            return outcome
        except asyncio.CancelledError:
            return SessionOutcome(ended=False, detail="cancelled")
        except Exception as exc:  # a bug or a frame handler failure: end this session, not the worker
            log.exception("RTMS session failed", extra={"meeting": machine.session.meeting_uuid})
            return SessionOutcome(ended=False, detail=f"session failed: {exc!r}")
        finally:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            await self._close_everything()

    async def _turn(self, machine: RtmsClient, notice: _Notice | None) -> SessionOutcome | None:
        """One turn of the loop: a deadline that passed (None) or a notice; a message frees its
        inbox slot (resuming paused sockets once half the inbox is free)."""
        if notice is None:
            self._deadline_kept = False
            return await self._carry_out(machine.on_tick(time.monotonic()))
        if notice.kind != "message":
            self._deadline_kept = False
            return await self._carry_out(self._feed(machine, notice))
        actions = machine.on_message(
            notice.channel, notice.conn, notice.data, time.monotonic(), notice.wall_ms
        )
        if self._deadline_kept and not (
            len(actions) == 1 and isinstance(actions[0], Deliver) and type(actions[0].item) in _FRAMES
        ):  # anything but a media frame may have brought a deadline nearer
            self._deadline_kept = False
        outcome = await self._carry_out(actions)
        self._inbox_messages -= 1
        if self._paused and self._inbox_messages <= INBOX_SLOTS // 2:
            for sock in self._paused:
                sock.resume()
            self._paused.clear()
        if not self._ready.is_set() and machine.ready_count:
            self._ready.set()
        return outcome

    async def _next_notice(self, machine: RtmsClient, loop: asyncio.AbstractEventLoop) -> _Notice | None:
        """The next notice, or None once the machine's next deadline has passed (a deadline already
        passed wins over a queued notice).

        Same as `asyncio.wait_for(self._notices.get(), deadline - now)`, but that costs a task and a
        timer per message (~25 µs on 3.11, per frame); here a queued notice is taken directly, and
        an empty queue is waited on with one wake-up future and one timer that is only re-armed
        when the deadline comes earlier (deadlines usually move later: every message pushes the
        socket's idle deadline), so a timer firing early just means: look again. Only this task
        changes the machine; its next deadline is kept across turns that only took a media frame
        (which moves no deadline nearer) and asked again when the kept one has passed."""
        if not self._deadline_kept:
            self._deadline, self._deadline_kept = machine.next_deadline(), True
        deadline = self._deadline
        while True:
            now = time.monotonic()
            if deadline is not None and deadline <= now:
                deadline = self._deadline = machine.next_deadline()
                if deadline is not None and deadline <= now:
                    self._deadline_kept = False
                    return None
            if self._notices:
                return self._notices.popleft()
            if deadline is not None and (self._timer is None or self._timer_at > deadline):
                if self._timer is not None:
                    self._timer.cancel()
                self._timer = loop.call_later(deadline - now, self._timer_fired)
                self._timer_at = deadline
            self._wake = loop.create_future()
            try:
                await self._wake
            finally:
                self._wake = None

    def _timer_fired(self) -> None:
        self._timer = None
        self._wakeup()

    def _wakeup(self) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    def _post(self, notice: _Notice) -> None:
        """Queue a notice for the loop and wake it."""
        self._notices.append(notice)
        self._wakeup()

    def _feed(self, machine: RtmsClient, notice: _Notice) -> list[Action]:
        """A notice other than a message as the machine's input."""
        now = time.monotonic()
        if notice.kind == "open":
            return machine.on_open(notice.channel, notice.conn, now)
        if notice.kind == "open_failed":
            return machine.on_open_failed(notice.channel, notice.conn, notice.data, now)
        if notice.kind == "closed":
            return machine.on_closed(notice.channel, notice.conn, notice.data, now)
        if notice.kind == "stop":
            return machine.request_stop(now, close_stream=notice.data)
        if notice.kind == "reconnect":
            urls, since = notice.data
            return machine.request_reconnect(now, urls, since)
        raise ValueError(f"unknown notice {notice.kind}")

    async def _carry_out(self, actions: list[Action]) -> SessionOutcome | None:
        assert self.session is not None
        outcome: SessionOutcome | None = None
        for action in actions:
            if isinstance(action, Deliver):
                await self._deliver(action.item)
            elif isinstance(action, Send):
                sock = self._sockets.get((action.channel, action.conn))
                if sock is not None:  # after the close started it is dropped; the close is reported
                    sock.send_text(action.text)
            elif isinstance(action, Connect):
                key = (action.channel, action.conn)
                self._readers[key] = asyncio.create_task(self._socket(action), name=f"ws:{action.channel}")
            elif isinstance(action, Disconnect):
                if action.drain:
                    self._drain(action.channel, action.conn, action.code)
                else:
                    self._disconnect(action.channel, action.conn, action.code)
            elif isinstance(action, Finish):
                outcome = action.outcome
        return outcome

    async def _deliver(
        self, item: AudioData | VideoData | TranscriptData | ChatData | EventData | DeadLetterData | MediaLost
    ) -> None:
        assert self.session is not None
        if isinstance(item, AudioData):
            await self.frames.audio(self.session, item)
        elif isinstance(item, VideoData):
            await self.frames.video(self.session, item)
        elif isinstance(item, TranscriptData):
            await self.frames.transcript(self.session, item)
        elif isinstance(item, EventData):
            await self.frames.event(self.session, item)
        elif isinstance(item, ChatData):
            await self.frames.chat(self.session, item)
        elif isinstance(item, MediaLost):
            media_lost = getattr(self.frames, "media_lost", None)  # handlers written before it lack it
            if media_lost is not None:
                await media_lost(self.session, item)
        else:
            await self.frames.dead_letter(self.session, item)

    # --- sockets -----------------------------------------------------------------------------------

    async def _socket(self, action: Connect) -> None:
        """Connect, then wait for the socket's end and report it; the socket itself posts the open
        and every message (`_opened`, `_received`) as picows parses them."""
        key = (action.channel, action.conn)
        ssl_arg = self.ssl_context if action.url.startswith("wss://") else None
        channel, conn = action.channel, action.conn
        sock: RtmsSocket | None = None
        try:
            sock = await RtmsSocket.open(
                action.url,
                lambda s, data: self._received(channel, conn, data),
                on_open=lambda s: self._opened(s, channel, conn),
                max_message_bytes=MAX_MESSAGE_BYTES,
                ssl_context=ssl_arg,
                timeout_s=self.config.handshake_timeout_s,
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._readers.pop(key, None)
            if self._sockets.pop(key, None) is not None:  # it had opened: report its end instead
                self._post(_Notice("closed", channel, conn, ABNORMAL_CLOSURE))
            else:
                self._post(_Notice("open_failed", channel, conn, repr(exc)))
            return
        code: int | None = None
        try:
            code = await sock.closed()
        finally:
            if code is None:  # cancelled before the end: drop the connection
                sock.abort()
                code = sock.close_code
            if self._sockets.get(key) is sock:
                del self._sockets[key]
            self._readers.pop(key, None)
            self._post(_Notice("closed", channel, conn, code))

    def _opened(self, sock: RtmsSocket, channel: str, conn: int) -> None:
        self._sockets[(channel, conn)] = sock
        self._post(_Notice("open", channel, conn))

    def _received(self, channel: str, conn: int, data: str | bytes) -> None:
        """A socket's message (from its `data_received`): queue it; a full inbox pauses the socket."""
        self._post(_Notice("message", channel, conn, data, now_ms()))
        self._inbox_messages += 1
        if self._inbox_messages >= INBOX_SLOTS:
            sock = self._sockets.get((channel, conn))
            if sock is not None and not sock.paused:
                sock.pause()
                self._paused.append(sock)

    def _disconnect(self, channel: str, conn: int, code: int) -> None:
        """Close the socket; what it still receives is dropped (its close is reported, and stale)."""
        key = (channel, conn)
        sock = self._sockets.pop(key, None)
        reader = self._readers.pop(key, None)
        if sock is not None:
            sock.detached = True
            sock.close(code)
        elif reader is not None:
            reader.cancel()  # still connecting
        if reader is not None and not reader.done():
            self._closers.add(reader)
            reader.add_done_callback(self._closers.discard)

    def _drain(self, channel: str, conn: int, code: int) -> None:
        """Start the closing handshake and keep reporting every message the server sent before its
        close frame, then the close (the client finishes on that)."""
        sock = self._sockets.get((channel, conn))
        if sock is not None:
            sock.close(code)

    async def _close_everything(self) -> None:
        for channel, conn in list(self._readers):
            self._disconnect(channel, conn, 1000)
        if self._closers:
            await asyncio.gather(*list(self._closers), return_exceptions=True)


# --- STREAM_CLOSE_REQ for a stream held elsewhere (the SDK backend's, which cannot send it) ----------


class _Discard:
    """A frame handler for a connection that carries no media: what Zoom says on it is dropped."""

    async def audio(self, session: StreamSession, frame: AudioData) -> None:
        pass

    async def video(self, session: StreamSession, frame: VideoData) -> None:
        pass

    async def transcript(self, session: StreamSession, frame: TranscriptData) -> None:
        pass

    async def event(self, session: StreamSession, event: EventData) -> None:
        pass

    async def chat(self, session: StreamSession, message: ChatData) -> None:
        pass

    async def dead_letter(self, session: StreamSession | None, letter: DeadLetterData) -> None:
        pass

    async def media_lost(self, session: StreamSession, lost: MediaLost) -> None:
        pass

    async def flush(self, session: StreamSession | None = None) -> None:
        pass

    async def end_of_stream(
        self, session: StreamSession, stop_reason: int | None, *, ended: str = "STOPPED"
    ) -> None:
        pass


CLOSE_AGENT = "rtmsflow-sdk-close"
_CONFIRMED = ("closed by us", "stream terminated")  # STREAM_CLOSE_RESP, or TERMINATED while closing


async def close_stream(
    settings: Settings,
    session: StreamSession,
    config: ClientConfig,
    *,
    ssl_context: ssl.SSLContext | None = None,
) -> bool:
    """Ask Zoom to end `session`'s stream on a short signaling-only connection: the signaling
    handshake, then `RtmsClient.request_stop(close_stream=True)` (STREAM_CLOSE_REQ, wait for
    STREAM_CLOSE_RESP or TERMINATED). True if Zoom confirmed. The handshake gets
    `config.close_timeout_s`, the close as long again. Used by the SDK backend after its SDK client
    is gone, so the handshake is not a duplicate."""
    cfg = dataclasses.replace(
        config,
        audio=False,
        video=False,
        deskshare=False,
        transcript=False,
        chat=False,
        client_agent=CLOSE_AGENT,
    )
    backend = WebSocketBackend(settings, _Discard(), config=cfg, ssl_context=ssl_context)
    await backend.start(session)
    try:
        async with asyncio.timeout(config.close_timeout_s):
            connected = await backend.connected()
    except TimeoutError:
        connected = False
    if not connected:
        await backend.stop()
        log.warning(
            "STREAM_CLOSE_REQ failed: no signaling connection", extra={"meeting": session.meeting_uuid}
        )
        return False
    await backend.stop(close_stream=True)
    outcome = await backend.wait()
    return outcome.detail in _CONFIRMED
