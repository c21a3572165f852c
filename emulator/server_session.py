"""One emulated RTMS stream from the server's side, without I/O: what to answer, when to give up on a client.

`ServerSession` is fed the client's messages, socket closes and the time, and answers with actions that
`emulator.streams.Stream` (its shell, which also plays the media) carries out: handshakes checked with Zoom's
status codes, media parameters, subscriptions, state requests, keep-alives, interruptions and the stop."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Generic, TypeVar

import rtms_protocol as rp
from emulator.faults import Faults
from emulator.negotiate import Adjust, ChannelParams, Grant, negotiate
from emulator.wire import CHANNEL_NAMES, TRANSCRIPT, VIDEO
from rtms_protocol.session import SIGNALING  # a signaling socket's role; a media socket's is its URL key
from rtmsflow.logs import get_logger

if TYPE_CHECKING:
    from emulator.streams import StreamStats

log = get_logger(__name__)

S = TypeVar("S", bound=Hashable)  # a socket, as the shell knows it (the session only compares them)

# the media URL keys and the media_type each one serves (None: any, the `all` socket)
MEDIA_KEYS: dict[str, rp.MediaType | None] = {
    "audio": rp.MediaType.AUDIO,
    "video": rp.MediaType.VIDEO,
    "deskshare": rp.MediaType.DESKSHARE,
    "transcript": rp.MediaType.TRANSCRIPT,
    "chat": rp.MediaType.CHAT,
    "all": None,
}


class ServerPhase(Enum):
    """Where a stream is in its life (RTMS's stream states; `StreamHandle.state` reports the value)."""

    WAITING = "waiting"  # added, no signaling handshake yet
    CONNECTED = "connected"  # signaling handshake done, waiting for CLIENT_READY_ACK
    ACTIVE = "active"  # media flows
    INTERRUPTED = "interrupted"  # signaling lost; waiting for a reconnection
    TERMINATED = "terminated"  # the end: the stream is over


# --- actions: what the session asks its shell to do ---------------------------------------------------


@dataclass(frozen=True)
class Send(Generic[S]):
    """Send `message` on `socket`."""

    socket: S
    message: rp.Message


@dataclass(frozen=True)
class Close(Generic[S]):
    """Close `socket` with a close frame."""

    socket: S
    code: int
    reason: str


@dataclass(frozen=True)
class Abort(Generic[S]):
    """Drop `socket`'s TCP connection without a close frame (the server "died")."""

    socket: S


@dataclass(frozen=True)
class StartMedia:
    """CLIENT_READY_ACK while connected: start the media (or resume it after a reconnection), then
    report with `ServerSession.on_media_started`."""


@dataclass(frozen=True)
class StartCamera:
    """Individual video: `user_id`'s camera was subscribed; send its frames from its next keyframe."""

    user_id: int


@dataclass(frozen=True)
class ResumeMedia:
    """A media socket came back while media flows: send what was buffered for `channels`, after
    the handshake answer."""

    channels: tuple[int, ...]


@dataclass(frozen=True)
class Notify:
    """Tell the lifecycle listeners (the webhook sender): "interrupted" or "failover"."""

    kind: str


@dataclass(frozen=True)
class Finish:
    """The stream is over with `stop_reason` (None: the server is stopping; end quietly)."""

    stop_reason: int | None


Action = Send[S] | Close[S] | Abort[S] | StartMedia | StartCamera | ResumeMedia | Notify | Finish


@dataclass
class _Socket:
    """What the session knows of one accepted socket."""

    role: str  # SIGNALING or a media URL key
    channels: tuple[int, ...] = ()  # the media channels it carries
    unanswered: int = 0  # KEEP_ALIVE_REQs sent since the last response
    keepalive_seq: int = 0


class ServerSession(Generic[S]):
    """The protocol of one stream, from the server's side. Inputs are `on_*` (what the client or a
    socket did; `on_tick` once `next_deadline()` has passed) and `request_*` (what the test or the
    server wants); each returns the actions to carry out, in order. `now` is loop time in seconds,
    `ts_ms` the stream's epoch-ms clock at that time (message timestamps)."""

    def __init__(
        self,
        *,
        meeting_uuid: str,
        rtms_stream_id: str,
        session_id: str,
        signature: str,
        faults: Faults,
        stats: StreamStats,
        adjust: Adjust | None = None,
        first_packet_event: bool = True,
    ) -> None:
        self.meeting_uuid = meeting_uuid
        self.rtms_stream_id = rtms_stream_id
        self.session_id = session_id
        self.signature = signature  # what a client's handshake must carry
        self.faults = faults
        self.stats = stats
        self.adjust = adjust  # what the media source really sends of the negotiated parameters
        self.first_packet_event = first_packet_event
        self.phase = ServerPhase.WAITING
        self.paused = False
        self.signaling: S | None = None
        self.media: list[S | None] = [None] * len(CHANNEL_NAMES)  # by channel (emulator.wire)
        self.grants: dict[int, ChannelParams] = {}
        self.subscribed: set[int] = set()
        self.roster: dict[int, str] = {}  # who is in the meeting, as the events played so far say
        self.video_subscriptions: set[int] = set()  # individual video: whose cameras are sent
        self.individual = False  # video granted as VIDEO_SINGLE_INDIVIDUAL_STREAM (data_opt 4)
        self.language = rp.TranscriptLanguage.ENGLISH.value
        self.deadline: float | None = None  # without a reconnection by then, the stream ends
        self.deadline_reason = rp.StopReason.AWAIT_RECONNECTION_TIMEOUT
        self.next_keepalive: float | None = None
        self._sockets: dict[S, _Socket] = {}
        self._closing: set[S] = set()

    # --- introspection ---------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """The earliest loop time `on_tick` has something to do (None: only inputs matter)."""
        keepalive, deadline = self.next_keepalive, self.deadline  # asked on every pump: no list
        if keepalive is None or (deadline is not None and deadline < keepalive):
            return deadline
        return keepalive

    def connected(self, socket: S) -> bool:
        """`socket` passed its handshake and has not been reported closed."""
        return socket in self._sockets

    def sockets(self) -> list[S]:
        """Every socket of the stream, signaling first."""
        return ([self.signaling] if self.signaling is not None else []) + self._media_sockets()

    def _media_sockets(self) -> list[S]:
        seen: list[S] = []
        for socket in self.media:
            if socket is not None and socket not in seen:
                seen.append(socket)
        return seen

    def stream_state(self) -> rp.StreamState:
        """The stream's state as STREAM_STATE_RESP reports it."""
        if self.phase is ServerPhase.ACTIVE:
            return rp.StreamState.PAUSED if self.paused else rp.StreamState.ACTIVE
        if self.phase is ServerPhase.INTERRUPTED:
            return rp.StreamState.INTERRUPTED
        if self.phase is ServerPhase.TERMINATED:
            return rp.StreamState.TERMINATED
        return rp.StreamState.INACTIVE

    # --- inputs: sockets ---------------------------------------------------------------------------

    def on_handshake(
        self, socket: S, role: str, raw: str | bytes, now: float, media_urls: dict[str, str]
    ) -> list[Action[S]]:
        """A socket's first message: its signaling (role `SIGNALING`) or data handshake request
        (role = its media URL key). The answer is the first action; afterwards `connected(socket)`
        says whether it was accepted. `media_urls`: what an accepted signaling handshake offers."""
        signaling = role == SIGNALING
        answer = rp.HandshakeResponse if signaling else rp.DataHandshakeResponse
        response: rp.HandshakeResponse | rp.DataHandshakeResponse
        try:
            msg = rp.parse(raw)
        except rp.ProtocolError as exc:
            response = answer(rp.StatusCode.INVALID_PAYLOAD, str(exc))
        else:
            if signaling and not isinstance(msg, rp.HandshakeRequest):
                response = answer(rp.StatusCode.INVALID_MESSAGE_TYPE, "expected SIGNALING_HAND_SHAKE_REQ")
            elif not signaling and not isinstance(msg, rp.DataHandshakeRequest):
                response = answer(rp.StatusCode.INVALID_MESSAGE_TYPE, "expected DATA_HAND_SHAKE_REQ")
            else:
                assert isinstance(msg, rp.HandshakeRequest | rp.DataHandshakeRequest)
                code, reason = self._check(msg)
                if code:
                    response = answer(code, reason)
                elif isinstance(msg, rp.HandshakeRequest):  # signaling (the checks above)
                    response = self._accept_signaling(socket, now, media_urls)
                else:
                    response = self._media_grant(socket, role, msg)
        if response.status_code:
            log.info(
                "signaling handshake refused" if signaling else "data handshake refused",
                extra={
                    "meeting": self.meeting_uuid,
                    "socket": role,
                    "status": response.status_code,
                    "reason": response.reason,
                },
            )
        actions: list[Action[S]] = [Send(socket, response)]
        if not signaling and self.connected(socket) and self.phase is ServerPhase.ACTIVE:
            # a media socket came back: everything buffered for it goes out right after msg 4
            actions.append(ResumeMedia(self._sockets[socket].channels))
        return actions

    def on_closing(self, socket: S) -> list[Action[S]]:
        """`socket` is closing (its close handshake began, or its transport is gone): it no longer
        holds its place against a new handshake. `on_closed` still follows."""
        if socket in self._sockets:
            self._closing.add(socket)
        return []

    def on_closed(self, socket: S, now: float, ts_ms: int) -> list[Action[S]]:
        """A socket of this stream is gone (closed by either side, or lost)."""
        record = self._sockets.pop(socket, None)
        self._closing.discard(socket)
        if socket == self.signaling:
            self.signaling = None
            if self.phase in (ServerPhase.CONNECTED, ServerPhase.ACTIVE):
                return self._interrupt_signaling(rp.StopReason.AWAIT_RECONNECTION_TIMEOUT, now)
            return []
        return self._media_lost(socket, record.channels if record else (), now, ts_ms)

    def on_message(self, socket: S, raw: str | bytes, ts_ms: int) -> list[Action[S]]:
        """A message from the client after the handshake (either socket)."""
        try:
            msg = rp.parse(raw)
        except rp.ProtocolError as exc:
            self.stats.bad_client_messages += 1
            record = self._sockets.get(socket)
            log.warning(
                "bad client message",
                extra={
                    "meeting": self.meeting_uuid,
                    "socket": record.role if record else None,
                    "reason": exc.reason,
                    "field": exc.field,
                },
            )
            return []
        if isinstance(msg, rp.KeepAliveResponse):
            record = self._sockets.get(socket)
            if record is not None:
                record.unanswered = 0
            self.stats.keepalives_answered += 1
        elif isinstance(msg, rp.KeepAliveRequest):
            if self.faults.answer_keepalives:
                return [Send(socket, msg.response())]
        elif socket != self.signaling:
            self.stats.bad_client_messages += 1
        elif isinstance(msg, rp.ClientReadyAck):
            if self.phase is ServerPhase.CONNECTED:
                return [StartMedia()]
        elif isinstance(msg, rp.EventSubscription):
            return self._subscribe(msg, ts_ms)
        elif isinstance(msg, rp.StreamCloseRequest):
            close = rp.StreamCloseResponse(self.rtms_stream_id, rp.StatusCode.OK, "OK", ts_ms)
            return [Send(socket, close), *self.request_stop(rp.StopReason.RECEIVER_REQUEST_CLOSE, ts_ms)]
        elif isinstance(msg, rp.VideoSubscriptionRequest):
            return self._video_subscription(socket, msg, ts_ms)
        elif isinstance(msg, rp.SessionStateRequest):
            state = rp.SessionState.PAUSED if self.paused else rp.SessionState.STARTED
            return [Send(socket, rp.SessionStateResponse(self.session_id, state, ts_ms))]
        elif isinstance(msg, rp.StreamStateRequest):
            return [Send(socket, rp.StreamStateResponse(self.rtms_stream_id, self.stream_state(), ts_ms))]
        else:
            self.stats.bad_client_messages += 1
        return []

    def on_tick(self, now: float, ts_ms: int) -> list[Action[S]]:
        """Act on what is due: the reconnection deadline (the stream ends), keep-alives."""
        if self.phase is ServerPhase.TERMINATED:
            return []
        if self.deadline is not None and now >= self.deadline:
            return self.request_stop(self.deadline_reason, ts_ms)
        if self.next_keepalive is not None and now >= self.next_keepalive:
            actions = self._keepalives(now, ts_ms)
            self.next_keepalive = now + self.faults.keepalive_s
            return actions
        return []

    def on_media_started(self, ts_ms: int, base_ms: int) -> list[Action[S]]:
        """The shell started the media after `StartMedia` (offset 0 at epoch ms `base_ms`)."""
        self.phase = ServerPhase.ACTIVE
        if all(self.media[ch] is not None for ch in self.grants):
            self.deadline = None
        actions: list[Action[S]] = []
        if self.first_packet_event:
            actions += self._event(rp.EventUpdate(rp.EventType.FIRST_PACKET_TIMESTAMP, base_ms), always=True)
        if self.signaling is not None:
            actions += [
                Send(
                    self.signaling,
                    rp.StreamStateUpdate(rp.StreamState.ACTIVE, rp.StopReason.UNDEFINED, ts_ms),
                ),
                Send(self.signaling, rp.SessionStateUpdate(rp.SessionState.STARTED, ts_ms, self.session_id)),
            ]
        return actions

    # --- inputs: what the test or the server wants ------------------------------------------------

    def request_stop(self, reason: int, ts_ms: int) -> list[Action[S]]:
        """End the stream: SESSION_STATE STOPPED and STREAM_STATE TERMINATED with `reason`."""
        if self.phase is ServerPhase.TERMINATED:
            return []
        actions: list[Action[S]] = []
        if self.signaling is not None:
            actions += [
                Send(
                    self.signaling,
                    rp.SessionStateUpdate(
                        rp.SessionState.STOPPED, ts_ms, self.session_id, stop_reason=reason
                    ),
                ),
                Send(self.signaling, rp.StreamStateUpdate(rp.StreamState.TERMINATED, reason, ts_ms)),
            ]
        return actions + self._finish(reason)

    def request_shutdown(self) -> list[Action[S]]:
        """The server is stopping: end without messages."""
        if self.phase is ServerPhase.TERMINATED:
            return []
        return self._finish(None)

    def request_failover(self, now: float) -> list[Action[S]]:
        """The server "dies": abort every socket and wait for the client at a new URL."""
        sockets = self.sockets()
        self.signaling = None
        self.media = [None] * len(CHANNEL_NAMES)
        actions: list[Action[S]] = [Abort(s) for s in sockets]
        if self.phase in (ServerPhase.CONNECTED, ServerPhase.ACTIVE):
            self.phase = ServerPhase.INTERRUPTED
            self.deadline = now + self.faults.signaling_reconnect_s
            self.deadline_reason = rp.StopReason.AWAIT_RECONNECTION_TIMEOUT
        return actions + [Notify("failover")]

    def request_pause(self, ts_ms: int) -> list[Action[S]]:
        """STREAM_STATE PAUSED + SESSION_STATE PAUSED; no media until resumed."""
        if self.phase is not ServerPhase.ACTIVE or self.paused:
            return []
        self.paused = True
        return self._states(rp.StreamState.PAUSED, rp.SessionState.PAUSED, ts_ms)

    def request_resume(self, ts_ms: int) -> list[Action[S]]:
        """STREAM_STATE RESUMED + SESSION_STATE RESUMED (while active)."""
        if not self.paused:
            return []
        self.paused = False
        if self.phase is not ServerPhase.ACTIVE:
            return []
        return self._states(rp.StreamState.RESUMED, rp.SessionState.RESUMED, ts_ms)

    # --- handshakes --------------------------------------------------------------------------------

    def _check(self, msg: rp.HandshakeRequest | rp.DataHandshakeRequest) -> tuple[int, str]:
        if msg.rtms_stream_id != self.rtms_stream_id:
            return rp.StatusCode.INVALID_RTMS_STREAM_ID, "unknown rtms_stream_id"
        if not rp.signatures_equal(msg.signature, self.signature):
            return rp.StatusCode.INVALID_SIGNATURE, "invalid signature"
        return rp.StatusCode.OK, ""

    def _open(self, socket: S | None) -> bool:
        return socket is not None and socket not in self._closing

    def _accept_signaling(self, socket: S, now: float, media_urls: dict[str, str]) -> rp.HandshakeResponse:
        """Accept or refuse a signaling handshake that reached this stream's URL."""
        if self.phase is ServerPhase.TERMINATED:
            return rp.HandshakeResponse(rp.StatusCode.INVALID_RTMS_STREAM_ID, "stream is over")
        if self._open(self.signaling):
            return rp.HandshakeResponse(rp.StatusCode.DUPLICATE_SIGNAL_REQUEST, "duplicate signal request")
        self.signaling = socket
        self._sockets[socket] = _Socket(SIGNALING)
        self.stats.signaling_handshakes += 1
        if self.phase in (ServerPhase.WAITING, ServerPhase.INTERRUPTED):
            self.phase = ServerPhase.CONNECTED
        self._arm_keepalive(now)
        return rp.HandshakeResponse(rp.StatusCode.OK, "", media_urls)

    def _media_grant(self, socket: S, role: str, msg: rp.DataHandshakeRequest) -> rp.DataHandshakeResponse:
        """A valid data handshake on a media URL: refused if the URL serves another media type."""
        bit = MEDIA_KEYS[role]
        if bit is not None and msg.media_type != bit:
            return rp.DataHandshakeResponse(
                rp.StatusCode.INVALID_MEDIA_TYPE, f"this URL serves media_type {int(bit)}"
            )
        return self._accept_media(socket, role, negotiate(msg.media_type, msg.media_params, self.adjust))

    def _accept_media(self, socket: S, role: str, grant: Grant) -> rp.DataHandshakeResponse:
        """Accept or refuse a data handshake whose parameters were negotiated into `grant`."""
        if self.phase is ServerPhase.TERMINATED:
            return rp.DataHandshakeResponse(rp.StatusCode.INVALID_RTMS_STREAM_ID, "stream is over")
        if not self._open(self.signaling):
            return rp.DataHandshakeResponse(rp.StatusCode.INVALID_RTMS_STREAM_ID, "no signaling connection")
        if grant.status != rp.StatusCode.OK:
            return rp.DataHandshakeResponse(grant.status, grant.reason)
        taken = [s for s in (self.media[ch] for ch in grant.channels) if self._open(s)]
        if taken:
            code = (
                rp.StatusCode.MEDIA_DATA_ALL_CONNECTION_EXIST
                if role == "all" or any(self._sockets[s].role == "all" for s in taken if s in self._sockets)
                else rp.StatusCode.DUPLICATE_MEDIA_DATA_CONNECTION
            )
            return rp.DataHandshakeResponse(code, code.name)
        assert grant.params is not None
        for ch in grant.channels:
            self.grants.setdefault(ch, grant.params[ch])  # the first grant of a channel holds
            self.media[ch] = socket
        video = self.grants.get(VIDEO)
        self.individual = (
            isinstance(video, rp.VideoParams)
            and video.data_opt == rp.DataOption.VIDEO_SINGLE_INDIVIDUAL_STREAM
        )
        self._sockets[socket] = _Socket(role, grant.channels)
        transcript = self.grants.get(TRANSCRIPT)
        if isinstance(transcript, rp.TranscriptParams) and transcript.src_language >= 0:
            self.language = transcript.src_language
        self.stats.media_handshakes += 1
        granted = {ch: self.grants[ch] for ch in grant.channels}
        if self.phase is ServerPhase.ACTIVE and all(self.media[ch] is not None for ch in self.grants):
            self.deadline = None  # every media socket is back
        return rp.DataHandshakeResponse(
            rp.StatusCode.OK, "", Grant(0, "", grant.channels, granted).media_params()
        )

    # --- losses ------------------------------------------------------------------------------------

    def _media_lost(self, socket: S, channels: tuple[int, ...], now: float, ts_ms: int) -> list[Action[S]]:
        lost = [ch for ch in channels if self.media[ch] == socket]
        for ch in lost:
            self.media[ch] = None
        if not lost or self.phase is not ServerPhase.ACTIVE:
            return []
        actions: list[Action[S]] = []
        if self.signaling is not None:
            actions += self._event(
                rp.EventUpdate(rp.EventType.MEDIA_CONNECTION_INTERRUPTED, ts_ms), always=True
            )
            update = rp.StreamStateUpdate(
                rp.StreamState.INTERRUPTED, rp.StopReason.DATA_CONNECTION_INTERRUPTED, ts_ms
            )
            actions.append(Send(self.signaling, update))
        if self.deadline is None:
            self.deadline = now + self.faults.media_reconnect_s
            self.deadline_reason = rp.StopReason.AWAIT_RECONNECTION_TIMEOUT
        return actions

    def _interrupt_signaling(self, reason: rp.StopReason, now: float) -> list[Action[S]]:
        """Signaling is lost: media goes down with it; wait for a reconnection."""
        actions: list[Action[S]] = [Close(s, 1001, "signaling interrupted") for s in self._media_sockets()]
        self.media = [None] * len(CHANNEL_NAMES)
        self.phase = ServerPhase.INTERRUPTED
        self.deadline = now + self.faults.signaling_reconnect_s
        self.deadline_reason = reason
        return actions + [Notify("interrupted")]

    # --- keep-alives -------------------------------------------------------------------------------

    def _arm_keepalive(self, now: float) -> None:
        if self.faults.send_keepalives and self.next_keepalive is None:
            # The first one comes after 50-100 % of the interval (a fixed phase per stream), so
            # streams that started together do not all send and receive keep-alives at once.
            phase = 0.5 + 0.5 * int(self.session_id[:8], 16) / 0xFFFFFFFF
            self.next_keepalive = now + self.faults.keepalive_s * phase

    def _keepalives(self, now: float, ts_ms: int) -> list[Action[S]]:
        actions: list[Action[S]] = []
        for socket in self.sockets():
            record = self._sockets.get(socket)
            if record is None:
                continue
            if record.unanswered >= self.faults.keepalive_misses:
                actions += self._keepalive_timeout(socket, record, now, ts_ms)
                continue
            record.unanswered += 1
            record.keepalive_seq += 1
            actions.append(Send(socket, rp.KeepAliveRequest(ts_ms, record.keepalive_seq)))
        return actions

    def _keepalive_timeout(self, socket: S, record: _Socket, now: float, ts_ms: int) -> list[Action[S]]:
        log.info("keep-alive timeout", extra={"meeting": self.meeting_uuid, "socket": record.role})
        if socket == self.signaling:
            self.signaling = None
            actions: list[Action[S]] = [Close(socket, 1000, "keep-alive timeout")]
            if self.phase in (ServerPhase.CONNECTED, ServerPhase.ACTIVE):
                actions += self._interrupt_signaling(rp.StopReason.KEEP_ALIVE_TIMEOUT, now)
            return actions
        actions = self._media_lost(socket, record.channels, now, ts_ms)
        self.deadline_reason = rp.StopReason.KEEP_ALIVE_TIMEOUT
        return actions + [Close(socket, 1000, "keep-alive timeout")]

    # --- events, subscriptions, states --------------------------------------------------------------

    def _event(self, event: rp.EventUpdate, always: bool = False) -> list[Action[S]]:
        if self.signaling is None or self.phase is not ServerPhase.ACTIVE:
            return []
        if always or event.event_type in self.subscribed:
            return [Send(self.signaling, event)]
        return []

    def _subscribe(self, msg: rp.EventSubscription, ts_ms: int) -> list[Action[S]]:
        actions: list[Action[S]] = []
        for event_type, on in msg.changes:
            if not on:
                self.subscribed.discard(event_type)
            elif event_type not in self.subscribed:
                self.subscribed.add(event_type)
                if (
                    event_type == rp.EventType.PARTICIPANT_JOIN
                    and self.roster
                    and self.phase is ServerPhase.ACTIVE
                ):
                    # a late subscriber learns who is already there
                    people = tuple(rp.Participant(uid, name) for uid, name in self.roster.items())
                    actions += self._event(
                        rp.EventUpdate(rp.EventType.PARTICIPANT_JOIN, ts_ms, participants=people)
                    )
        return actions

    def _video_subscription(self, socket: S, msg: rp.VideoSubscriptionRequest, ts_ms: int) -> list[Action[S]]:
        uid = msg.user_id
        if not self.individual:
            code = rp.StatusCode.INVALID_MEDIA_VIDEO_DATA_OPT
            refused = rp.VideoSubscriptionResponse(
                uid, code, "video data_opt is not individual stream", ts_ms
            )
            return [Send(socket, refused)]
        subscribed = self.video_subscriptions
        if msg.subscribe and uid in subscribed:
            code = rp.StatusCode.DUPLICATE_VIDEO_SUBSCRIPTION
            return [Send(socket, rp.VideoSubscriptionResponse(uid, code, code.name, ts_ms))]
        capacity = self.faults.individual_videos
        if msg.subscribe and capacity == 1:
            subscribed.clear()  # Zoom's V1: one camera at a time, a new subscription replaces the last
        elif msg.subscribe and len(subscribed) >= capacity:
            code = rp.StatusCode.INVALID_MEDIA_VIDEO_PARAMS  # our choice: Zoom names no code for it
            refused = rp.VideoSubscriptionResponse(uid, code, "too many individual videos", ts_ms)
            return [Send(socket, refused)]
        ok: list[Action[S]] = [Send(socket, rp.VideoSubscriptionResponse(uid, rp.StatusCode.OK, "OK", ts_ms))]
        if not msg.subscribe:
            subscribed.discard(uid)
            return ok
        subscribed.add(uid)
        return [StartCamera(uid), *ok]  # a new subscriber's picture starts at an IDR

    def _states(self, stream: rp.StreamState, session: rp.SessionState, ts_ms: int) -> list[Action[S]]:
        if self.signaling is None:
            return []
        return [
            Send(self.signaling, rp.StreamStateUpdate(stream, rp.StopReason.UNDEFINED, ts_ms)),
            Send(self.signaling, rp.SessionStateUpdate(session, ts_ms, self.session_id)),
        ]

    def _finish(self, stop_reason: int | None) -> list[Action[S]]:
        self.phase = ServerPhase.TERMINATED
        return [Finish(stop_reason)]
