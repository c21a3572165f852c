"""A Zoom RTMS server on 127.0.0.1: signaling and media WebSockets for emulated streams.

`RTMSServer.add_stream(...)` gives each stream its own URL token (a failover gives a new one); handshakes
are checked with Zoom's status codes, and what Zoom's SDK sends is tolerated. Example: README.md."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import ssl
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any

from websockets.asyncio.server import Request, Response, Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

import rtms_protocol as rp
from emulator.faults import Faults, Malformed
from emulator.negotiate import ChannelParams
from emulator.pacer import Pacer
from emulator.peer import Peer
from emulator.server_session import MEDIA_KEYS, SIGNALING, ServerPhase
from emulator.source import MeetingSource
from emulator.streams import Lifecycle, SentFrame, Stream, StreamStats
from emulator.timeline import TimelineCache
from emulator.wire import CHANNEL_NAMES, CHANNEL_OF, FrameEncoder
from rtmsflow.logs import get_logger

log = get_logger(__name__)


class StreamHandle:
    """What a test holds of one emulated stream: its URLs, its progress, and the faults it can
    trigger at a moment of its choosing."""

    def __init__(self, stream: Stream, server: RTMSServer) -> None:
        self._stream = stream
        self._server = server

    # --- what it is and where it stands ------------------------------------------------------------

    @property
    def meeting_uuid(self) -> str:
        return self._stream.meeting_uuid

    @property
    def stream_id(self) -> str:
        return self._stream.stream_id

    @property
    def server_urls(self) -> str:
        """The `server_urls` of the rtms_started webhook (the signaling URL)."""
        return self._stream.server_urls

    @property
    def state(self) -> str:
        """waiting, connected, active, interrupted or terminated."""
        return self._stream.phase.value

    @property
    def paused(self) -> bool:
        return self._stream.paused

    @property
    def base_ms(self) -> int | None:
        """Epoch ms of media offset 0 (timestamps = base_ms + offset); known once media started."""
        return self._stream.base_ms

    @property
    def stats(self) -> StreamStats:
        return self._stream.stats

    @property
    def sent(self) -> list[SentFrame]:
        """Every media frame sent, in order (only with `add_stream(record=True)`)."""
        return list(self._stream.sent_log or [])

    @property
    def subscribed_events(self) -> frozenset[int]:
        return frozenset(self._stream.subscribed)

    @property
    def granted(self) -> dict[str, ChannelParams]:
        """The media parameters granted per channel (audio, video, deskshare, transcript)."""
        return {CHANNEL_NAMES[ch]: params for ch, params in self._stream.grants.items()}

    @property
    def participants(self) -> dict[int, str]:
        """Who is in the meeting now, as the events played so far say (user_id -> name)."""
        return dict(self._stream.roster)

    # --- waiting ------------------------------------------------------------------------------------

    async def wait_done(self) -> int:
        """Until the stream is terminated; returns its stop reason (use `asyncio.timeout`)."""
        return await asyncio.shield(self._stream.done)

    async def wait_active(self) -> None:
        """Until media started flowing (first CLIENT_READY_ACK handled)."""
        await self._stream.active_event.wait()

    async def wait_media(self, offset_ms: int) -> None:
        """Until the media clock passed `offset_ms` and what was due by then was sent."""
        await self._stream.wait_media(offset_ms)

    def on_lifecycle(self, callback: Callable[[Lifecycle], None]) -> None:
        """Call `callback` on "interrupted", "failover" and "stopped" (for the webhook sender)."""
        self._stream.listeners.append(callback)

    # --- things that happen ---------------------------------------------------------------------------

    def stop(self, reason: int = rp.StopReason.MEETING_ENDED) -> None:
        """Terminate the stream with `reason` (SESSION_STATE STOPPED, STREAM_STATE TERMINATED)."""
        self._stream.terminate(reason)

    def pause(self) -> None:
        """Pause the stream: STREAM_STATE PAUSED + SESSION_STATE PAUSED; no media until resume."""
        self._stream.pause()

    def resume(self) -> None:
        """Resume after `pause` (media due in between is not sent)."""
        self._stream.resume()

    def drop_signaling(self, close_frame: bool = True, code: int = 1011, reason: str = "") -> None:
        """Lose the signaling socket: with a close frame (`code`), or a TCP abort (client sees 1006).
        Media goes down with it; the stream waits `signaling_reconnect_s` for a reconnection."""
        self._drop(self._stream.signaling, close_frame, code, reason)

    def drop_media(
        self, channel: str = "audio", close_frame: bool = True, code: int = 1011, reason: str = ""
    ) -> None:
        """Lose the media socket carrying `channel`; EVENT 7 and STREAM_STATE INTERRUPTED (14) follow."""
        self._drop(self._stream.media[CHANNEL_OF[channel]], close_frame, code, reason)

    @staticmethod
    def _drop(peer: Peer | None, close_frame: bool, code: int, reason: str) -> None:
        if peer is None:
            raise RuntimeError("no such socket is connected")
        if close_frame:
            peer.close(code, reason)
        else:
            peer.abort()

    def failover(self) -> str:
        """The RTMS server "dies" (every socket aborted) and the stream moves to a new URL with the
        same stream id; returns the new `server_urls` (send it in a new rtms_started)."""
        return self._server._failover(self._stream)

    def inject(self, kind: Malformed | str, channel: str = "audio") -> bool:
        """Send one malformed message now on `channel`'s socket; False if it is not connected."""
        return self._stream.inject(Malformed(kind), channel)


class RTMSServer:
    """An RTMS server for emulated streams. Bind to 127.0.0.1 only.

    A stream's URLs are `<url>/rtms/<token>/signaling` and `<url>/rtms/<token>/media/{audio,video,
    transcript,deskshare,all}`; after a failover the old token answers 404. Handshakes are refused as
    Zoom does (unknown stream 2, bad signature 3, second signaling connection 8, second media
    connection 16 / 15); Zoom's SDK's quirks are tolerated (Host without port, the `websocket`
    subprotocol, X-WebSocket-Token, null media_params, JSON in binary frames).

    `timeline_share_s` (load tests): streams of equal meetings (equal `MeetingSpec`s and
    parameters) whose media start within this many seconds of the first one's read one serialized
    timeline, so each frame's wire text is made once; it costs the memory of that many seconds of
    the meeting. 0 (default): they share only while no stream has moved past the timeline's head."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        client_id: str,
        client_secret: str,
        ssl_context: ssl.SSLContext | None = None,
        handshake_timeout_s: float = 10.0,
        timeline_share_s: float = 0.0,
    ) -> None:
        self.host = host
        self.port = port
        self.client_id = client_id
        self.client_secret = client_secret
        self.ssl_context = ssl_context
        self.handshake_timeout_s = handshake_timeout_s
        self._server: Server | None = None
        self._routes: dict[str, Stream] = {}
        self._streams: dict[str, Stream] = {}
        self._pacer: Pacer | None = None
        self._encoder = FrameEncoder()
        self._timelines = TimelineCache(share_s=timeline_share_s)

    @property
    def url(self) -> str:
        """ws://host:port (wss:// with TLS); valid after start()."""
        if self._server is None:
            raise RuntimeError("server not started")
        scheme = "wss" if self.ssl_context is not None else "ws"
        return f"{scheme}://{self.host}:{self.port}"

    @property
    def pacer(self) -> Pacer:
        if self._pacer is None:
            raise RuntimeError("server not started")
        return self._pacer

    async def start(self) -> None:
        if self._server is not None:
            return
        self._pacer = Pacer()
        self._server = await serve(
            self._handle,
            self.host,
            self.port,
            ssl=self.ssl_context,
            process_request=self._route,
            compression=None,  # Zoom's SDK offers none; raw frames are written uncompressed
            ping_interval=None,  # RTMS keep-alives are application messages (msg 12/13)
            max_size=1 << 20,
            write_limit=1 << 20,
            server_header=None,
            backlog=1024,  # hundreds of meetings join at once in load tests
        )
        sock = next(iter(self._server.sockets))
        self.port = sock.getsockname()[1]
        log.info("rtms emulator listening", extra={"url": self.url})

    async def stop(self) -> None:
        """Close every connection and the listener. Idempotent."""
        if self._server is None:
            return
        for stream in self._streams.values():
            stream.shutdown()  # quietly: no interruption or stop is reported for a server going away
        server = self._server
        server.close()
        await server.wait_closed()
        self._server = None
        if self._pacer is not None:
            self._pacer.close()

    async def __aenter__(self) -> RTMSServer:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # --- streams ---------------------------------------------------------------------------------------

    def add_stream(
        self,
        meeting_uuid: str,
        stream_id: str,
        meeting: Any,
        faults: Faults | None = None,
        speed: float = 1.0,
        *,
        base_ms: int | None = None,
        start_delay_s: float = 0.05,
        record: bool = False,
        start_after_subscribing: Iterable[int] = (),
        preroll_ms: int = 0,
        first_packet_event: bool = True,
    ) -> StreamHandle:
        """Make a stream reachable and return its handle.

        `meeting` is a `SyntheticMeeting` or a list of items (MediaItem-like, played as given).
        Media time runs `speed` times faster than real time; timestamps are `base_ms` + media offset
        (base_ms defaults to the wall clock when media starts, `start_delay_s` after the client's
        CLIENT_READY_ACK). `record` keeps every sent frame in `handle.sent`.
        `start_after_subscribing`: event types the client must have subscribed to before media
        starts (a test knob for checking every event from the first; Zoom does not wait: a client
        that subscribes late misses the events before).
        `preroll_ms`: Zoom's pre-connect buffering: the media clock started this long before media
        starts, so the first `preroll_ms` of media (stamped before the connect, and before the
        started webhook's `event_ts`) go out at once. `first_packet_event` False: no EVENT_UPDATE 1
        (a server that leaves it out).
        """
        if self._pacer is None:
            raise RuntimeError("start() the server before adding streams")
        if stream_id in self._streams and self._streams[stream_id].phase is not ServerPhase.TERMINATED:
            raise ValueError(f"stream {stream_id!r} already exists")
        stream = Stream(
            meeting_uuid=meeting_uuid,
            stream_id=stream_id,
            signature=rp.handshake_signature(self.client_id, self.client_secret, meeting_uuid, stream_id),
            source=MeetingSource(meeting),
            faults=faults or Faults(),
            speed=speed,
            base_ms=base_ms,
            start_delay_s=start_delay_s,
            start_after_subscribing=frozenset(start_after_subscribing),
            preroll_ms=preroll_ms,
            first_packet_event=first_packet_event,
            record=record,
            encoder=self._encoder,
            timelines=self._timelines,
            pacer=self._pacer,
            urls=self._stream_url,
        )
        stream.route = secrets.token_hex(6)
        self._routes[stream.route] = stream
        self._streams[stream_id] = stream
        return StreamHandle(stream, self)

    def _stream_url(self, stream: Stream) -> str:
        return f"{self.url}/rtms/{stream.route}/signaling"

    def _failover(self, stream: Stream) -> str:
        old = stream.route
        stream.route = secrets.token_hex(6)
        self._routes.pop(old, None)
        self._routes[stream.route] = stream
        stream.failover()
        return stream.server_urls

    # --- connections ------------------------------------------------------------------------------------

    def _parse_path(self, path: str) -> tuple[Stream, str] | None:
        parts = path.split("?", 1)[0].strip("/").split("/")
        if len(parts) == 3 and parts[0] == "rtms" and parts[2] == "signaling":
            role = SIGNALING
        elif len(parts) == 4 and parts[0] == "rtms" and parts[2] == "media" and parts[3] in MEDIA_KEYS:
            role = parts[3]
        else:
            return None
        stream = self._routes.get(parts[1])
        return (stream, role) if stream is not None else None

    def _route(self, connection: ServerConnection, request: Request) -> Response | None:
        # Host, Origin, subprotocol offers and X-WebSocket-Token are deliberately not checked.
        if self._parse_path(request.path) is None:
            return connection.respond(404, "no RTMS stream at this URL\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        target = self._parse_path(ws.request.path if ws.request is not None else "")
        if target is None:  # the route died between the upgrade and now (failover)
            return
        stream, role = target
        peer = Peer(ws, role)
        try:
            first = await asyncio.wait_for(ws.recv(), self.handshake_timeout_s)
        except (TimeoutError, ConnectionClosed):
            return
        if not stream.handshake(peer, first):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ws.wait_closed(), 2.0)  # the client closes after a refusal
            return
        try:
            async for message in ws:
                stream.on_message(peer, message)
        except ConnectionClosed:
            pass
        finally:
            stream.detach(peer)
