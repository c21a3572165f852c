"""`SdkBackend`: the session backend on Zoom's official Python SDK (`rtms`, extra `sdk`).

Selected by `RTMSFLOW_INGEST_BACKEND=sdk`: the same values as `ingest.ws_client`, from an SDK host process
(`ingest.sdk_pool`, `ingest.sdk_host`), with the join decisions of `ingest.sdk_session`. Why a host process,
what the SDK cannot give, its defects and environment: docs/DECISIONS.md, "Ingest"."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import ssl
import time
from typing import Any

import rtms_protocol as proto
from ingest.backend import (
    AudioData,
    DeadLetterData,
    FrameHandler,
    SessionOutcome,
    StreamSession,
    TaskBackend,
    TranscriptData,
    VideoData,
)
from ingest.rtms_client import ClientConfig
from ingest.sdk_plan import SdkPlan, event_data, join_status_decision, leave_decision, sdk_plan
from ingest.sdk_pool import HOSTS, HostHandle, SdkOptions, SdkUnavailable, shutdown_sdk_hosts
from ingest.sdk_session import (
    Action,
    CloseStream,
    Finish,
    HostLost,
    Join,
    JoinConfirmed,
    Leave,
    Notice,
    ReconnectRequested,
    Rejoined,
    SdkError,
    SdkLeft,
    SdkSession,
    StopRequested,
)
from ingest.sdk_wire import JoinCommand, Kind, LeaveCommand, MediaMessage, Message
from ingest.ws_client import client_config, close_stream
from rtmsflow.clock import now_ms
from rtmsflow.logs import get_logger
from rtmsflow.settings import Settings

log = get_logger(__name__)

# names other code imports from here
__all__ = [
    "HOSTS",
    "SdkBackend",
    "SdkOptions",
    "SdkPlan",
    "SdkUnavailable",
    "event_data",
    "join_status_decision",
    "leave_decision",
    "sdk_plan",
    "shutdown_sdk_hosts",
]

LEFT_TIMEOUT_S = 5.0  # wait this long for the host to release a client


class SdkBackend(TaskBackend):
    """Holds one RTMS stream through Zoom's SDK. Build with `SdkBackend(settings, frames)`;
    `config` defaults to the raw backend's `client_config(settings)`, so both ask Zoom for the same
    media and follow the same reconnect policy."""

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
        self.options = options or SdkOptions.from_settings(settings)
        self.plan = sdk_plan(self.config)
        self.rng = rng or random.Random()
        self.ssl_context = ssl_context
        self.session: StreamSession | None = None
        self.machine: SdkSession | None = None
        self.host: HostHandle | None = None
        self._signature = ""
        self._queue: asyncio.Queue[Notice] = asyncio.Queue()
        self._current: int | None = None  # sid of the live join attempt
        self._first_packets = 0  # FIRST_PACKET_TIMESTAMP events seen for the live attempt

    @property
    def ready_count(self) -> int:
        """Confirmed joins plus the SDK's own silent rejoins; for tests and logs."""
        return self.machine.ready_count if self.machine else 0

    # --- SessionBackend --------------------------------------------------------------------------

    async def start(self, session: StreamSession) -> None:
        self._refuse_second_start()
        self.session = session
        self.machine = SdkSession(session.server_urls, self.config, self.rng, ctx=self._ctx())
        self._signature = proto.handshake_signature(
            self.config.client_id, self.config.client_secret, session.meeting_uuid, session.rtms_stream_id
        )
        self.host = await HOSTS.acquire(self.options)
        self._launch(f"rtms-sdk:{session.meeting_uuid}")

    def _request_reconnect(self, server_urls: str | None, since_ms: int | None) -> None:
        self._post(ReconnectRequested(server_urls, since_ms))

    def _request_stop(self, close_stream: bool) -> None:
        self._post(StopRequested(close_stream))

    # --- the session loop: the machine's actions, carried out ------------------------------------

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
        machine = self.machine
        assert machine is not None
        outcome = await self._carry_out(machine.start(time.monotonic()))
        while outcome is None:
            deadline = machine.next_deadline()
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                notice = await asyncio.wait_for(self._queue.get(), timeout)
            except TimeoutError:
                actions = machine.on_tick(time.monotonic())
            else:
                actions = machine.on_notice(notice, time.monotonic(), now_ms())
            outcome = await self._carry_out(actions)
        return outcome

    async def _carry_out(self, actions: list[Action]) -> SessionOutcome | None:
        machine = self.machine
        assert machine is not None
        for action in actions:
            if isinstance(action, Join):
                machine.on_join_started(await self._join(action.url), time.monotonic())
            elif isinstance(action, Leave):
                await self._leave(action.sid)
            elif isinstance(action, CloseStream):
                return await self._carry_out(machine.on_stream_closed(await self._close_stream()))
            elif isinstance(action, Finish):
                return action.outcome
        return None

    async def _close_stream(self) -> bool:
        """STREAM_CLOSE_REQ through the WebSocket client, to the URLs of the stream's start."""
        assert self.session is not None and self.machine is not None
        urls = ",".join(self.machine.allowed(self.session.server_urls))
        session = dataclasses.replace(self.session, server_urls=urls)
        return await close_stream(self.settings, session, self.config, ssl_context=self.ssl_context)

    async def _join(self, url: str) -> int:
        assert self.session is not None
        host = self.host
        if host is None or not host.alive:
            if host is not None:
                HOSTS.release(host)
            self.host = host = await HOSTS.acquire(self.options)
        route = host.new_route(self._deliver, self._post, self._ctx())
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
            self._post(HostLost(route.sid, f"SDK host not running: {exc}"))
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

    # --- from the host's reader ----------------------------------------------------------------------

    def _post(self, notice: Notice) -> None:
        self._queue.put_nowait(notice)

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
                    self._post(Rejoined(sid))
            await self.frames.event(session, event)
            return
        if msg.kind is Kind.JOIN_CONFIRM:
            self._post(JoinConfirmed(sid, msg.reason or 0))
        elif msg.kind is Kind.LEAVE:
            self._post(SdkLeft(sid, msg.reason or 0))
        elif msg.kind is Kind.ERROR:
            self._post(SdkError(sid, msg.text))

    def _ctx(self, **extra: Any) -> dict[str, Any]:
        s = self.session
        base = {"meeting": s.meeting_uuid, "rtms_stream_id": s.rtms_stream_id} if s else {}
        return {**base, "backend": "sdk", **extra}
