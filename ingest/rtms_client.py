"""The RTMS client as a pure state machine (sans-I/O): what to send, when to (re)connect, what to emit.

`RtmsClient` is fed what its sockets did and the time, and answers with actions (`Connect`, `Send`,
`Disconnect`, `Deliver`, `Finish`) that `ingest.ws_client` carries out: handshakes, keep-alives, per-socket
or full reconnects, failover to new URLs, backoff (`ingest.reconnect`). Stale connection numbers are ignored."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import rtms_protocol as proto
from ingest import metrics
from ingest.allowlist import DisallowedUrl, check_url, split_server_urls
from ingest.backend import (
    AudioData,
    ChatData,
    DeadLetterData,
    EventData,
    MediaLost,
    SessionOutcome,
    StreamSession,
    TranscriptData,
    VideoData,
)
from ingest.camera_subscriptions import CameraSubscriptions, VideoRequest
from ingest.reconnect import Backoff
from ingest.rtms_values import FAST_MEDIA, STATE_MSGS, MediaValues
from rtms_protocol import EventType, MediaType, MsgType, ProtocolError, StreamState
from rtms_protocol.session import SIGNALING, ClientPhase, ClientSession, Verdict, keep_alive_reply
from rtmsflow.logs import get_logger

log = get_logger(__name__)

__all__ = [
    "SIGNALING",
    "Backoff",
    "ClientConfig",
    "ClientPhase",
    "RtmsClient",
]  # re-exported: Backoff, ClientPhase

CLIENT_AGENT = "rtmsflow-ws"

# media type -> (channel / server_urls key, MediaType bit)
_MEDIA_KEYS: dict[str, MediaType] = {
    "audio": MediaType.AUDIO,
    "video": MediaType.VIDEO,
    "deskshare": MediaType.DESKSHARE,
    "transcript": MediaType.TRANSCRIPT,
    "chat": MediaType.CHAT,
}
_SUBSCRIBED_EVENTS = (
    EventType.ACTIVE_SPEAKER_CHANGE,
    EventType.PARTICIPANT_JOIN,
    EventType.PARTICIPANT_LEAVE,
    EventType.SHARING_START,
    EventType.SHARING_STOP,
    EventType.PARTICIPANT_VIDEO_ON,
    EventType.PARTICIPANT_VIDEO_OFF,
)
_KNOWN_MSG_TYPES = frozenset(int(t) for t in MsgType)


@dataclass(frozen=True)
class ClientConfig:
    """What to ask Zoom for, and how patiently to reconnect."""

    client_id: str
    client_secret: str
    audio: bool = True
    audio_multi: bool = False  # per-participant audio (data_opt 2) instead of the mixed stream
    video: bool = True
    video_resolution: int = proto.Resolution.HD
    video_fps: int = 25
    # each participant's camera (individual streams, data_opt 4) instead of the active speaker's,
    # up to this many at once (`ingest.camera_subscriptions`)
    video_individual: bool = False
    video_participants_max: int = 1
    deskshare: bool = False
    transcript: bool = True
    transcript_language: int = -1  # RTMS language code as a hint; -1 = automatic
    chat: bool = False  # in-meeting chat (media type 16, msg 18)
    buffer_data: bool | None = None  # None: Zoom's default (flush audio buffered before we connected)
    backoff_base_s: float = 3.0
    backoff_cap_s: float = 30.0
    max_attempts: int = 5
    # Reconnect a lost working socket at once (`ingest.reconnect`); False = back off first.
    reconnect_at_once: bool = True
    handshake_timeout_s: float = 10.0
    idle_timeout_s: float = 65.0  # no message at all on a socket for this long = it is dead
    close_timeout_s: float = 5.0  # wait for STREAM_CLOSE_RESP
    allowed_hosts: tuple[str, ...] = ("*",)
    allow_insecure_ws: bool = True
    client_agent: str = CLIENT_AGENT  # the handshake's rtms_client_agent

    def backoff(self, rng: random.Random) -> Backoff:
        """A fresh reconnect policy for one connection (see `ingest.reconnect`)."""
        return Backoff(
            self.backoff_base_s,
            self.backoff_cap_s,
            rng,
            max_attempts=self.max_attempts,
            at_once=self.reconnect_at_once,
        )

    def media_params(self, key: str) -> proto.MediaParams:
        """The `media_params` we request for one media socket."""
        if key == "audio":
            opt = (
                proto.DataOption.AUDIO_MULTI_STREAMS
                if self.audio_multi
                else proto.DataOption.AUDIO_MIXED_STREAM
            )
            return proto.MediaParams(audio=proto.AudioParams(data_opt=opt))
        if key == "video":
            opt = (
                proto.DataOption.VIDEO_SINGLE_INDIVIDUAL_STREAM
                if self.video_individual
                else proto.DataOption.VIDEO_SINGLE_ACTIVE_STREAM
            )
            return proto.MediaParams(
                video=proto.VideoParams(resolution=self.video_resolution, fps=self.video_fps, data_opt=opt)
            )
        if key == "deskshare":
            return proto.MediaParams(
                deskshare=proto.VideoParams(
                    codec=proto.PayloadType.JPG, resolution=proto.Resolution.HD, data_opt=None, fps=1
                )
            )
        if key == "chat":
            return proto.MediaParams()  # the server's default (content_type 5, text)
        if self.transcript_language >= 0:
            return proto.MediaParams(transcript=proto.TranscriptParams(src_language=self.transcript_language))
        return proto.MediaParams(
            transcript=proto.TranscriptParams(src_language=proto.TranscriptLanguage.NONE, enable_lid=True)
        )

    def wanted(self) -> list[str]:
        """The media types to connect, in handshake order."""
        flags = {
            "audio": self.audio,
            "video": self.video,
            "deskshare": self.deskshare,
            "transcript": self.transcript,
            "chat": self.chat,
        }
        return [key for key in _MEDIA_KEYS if flags[key]]


# --- actions ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Connect:
    """Open a WebSocket to `url` for `channel`; report back with `conn`."""

    channel: str
    url: str
    conn: int


@dataclass(frozen=True)
class Send:
    """Send `text` on the socket `conn` of `channel`."""

    channel: str
    conn: int
    text: str


@dataclass(frozen=True)
class Disconnect:
    """Close the socket `conn` of `channel` with `code`. Without `drain` its later events are stale
    (the shell drops it at once); with `drain` the shell performs the closing handshake and keeps
    reporting what the server sent before its close frame, then the close (see `ClientPhase.DRAINING`)."""

    channel: str
    conn: int
    code: int = 1000
    drain: bool = False


@dataclass(frozen=True)
class Deliver:
    """Hand a parsed value to the frame handler (in this order)."""

    item: AudioData | VideoData | TranscriptData | ChatData | EventData | DeadLetterData | MediaLost


@dataclass(frozen=True)
class Finish:
    """The session is over; nothing more will be asked."""

    outcome: SessionOutcome


Action = Connect | Send | Disconnect | Deliver | Finish


@dataclass
class _Socket:
    conn: int
    url: str
    ready: bool = False  # handshake answered with status 0
    last_rx: float = 0.0
    deadline: float = 0.0  # handshake deadline until ready


@dataclass
class _MediaSlot:
    """One media type's connection state, kept across reconnects of its socket."""

    key: str
    url: str
    backoff: Backoff
    retry_at: float | None = None
    disabled: bool = False


class RtmsClient:
    """One RTMS stream's client logic. Methods take `now` (monotonic seconds) and return actions."""

    def __init__(
        self, session: StreamSession, config: ClientConfig, rng: random.Random | None = None
    ) -> None:
        self.session = session
        self.config = config
        self.rng = rng or random.Random()
        self.phase = ClientPhase.IDLE
        self.urls = split_server_urls(session.server_urls)
        self.url_index = 0
        self.backoff = config.backoff(self.rng)
        self.retry_at: float | None = None
        self.close_deadline: float | None = None  # CLOSING: the response's; DRAINING: the drain's
        self.drained_outcome: SessionOutcome | None = None  # DRAINING: the outcome once drained
        self.sockets: dict[str, _Socket] = {}
        self.media: dict[str, _MediaSlot] = {}
        self.values = MediaValues(session.product)  # received messages -> values
        self.handshake = ClientSession.signed(
            config.client_id,
            config.client_secret,
            session.meeting_uuid,
            session.rtms_stream_id,
            client_agent=config.client_agent,
            buffer_data=config.buffer_data,
            subscribe=tuple(int(t) for t in _SUBSCRIBED_EVENTS),
        )
        self.cameras = (
            CameraSubscriptions(config.video_participants_max)
            if config.video and config.video_individual
            else None
        )
        self.ready_count = 0  # how often the client reached READY (1 = first connect)
        self.ready_at_wall_ms = 0
        self._conn = 0

    # --- introspection ---------------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        return self.phase is ClientPhase.FINISHED

    def next_deadline(self) -> float | None:
        """The earliest time `on_tick` has something to do (None = only socket events matter)."""
        if self.phase is ClientPhase.DRAINING:
            return self.close_deadline
        # a running minimum, no list (asked once per received message); the earliest idle deadline is
        # the earliest last_rx plus the timeout (float addition is monotonic: the very same float)
        due = self.retry_at
        t = self.close_deadline
        if t is not None and (due is None or t < due):
            due = t
        for slot in self.media.values():
            t = slot.retry_at
            if t is not None and (due is None or t < due):
                due = t
        if self.sockets:
            last_rx = None
            for sock in self.sockets.values():
                if last_rx is None or sock.last_rx < last_rx:
                    last_rx = sock.last_rx
                if not sock.ready and (due is None or sock.deadline < due):
                    due = sock.deadline
            assert last_rx is not None
            t = last_rx + self.config.idle_timeout_s
            if due is None or t < due:
                due = t
        return due

    # --- inputs ------------------------------------------------------------------------------------

    def start(self, now: float) -> list[Action]:
        """Connect for the first time."""
        if self.phase is not ClientPhase.IDLE:
            raise RuntimeError(f"start() in phase {self.phase.value}")
        if not self.urls:
            return self._finish(True, None, "no server_urls")
        return self._connect_signaling(now)

    def on_open(self, channel: str, conn: int, now: float) -> list[Action]:
        sock = self._current(channel, conn)
        if sock is None:
            return []
        sock.last_rx = now
        if channel == SIGNALING:
            return [Send(channel, conn, self.handshake.hello())]
        hello = self.handshake.media_hello(
            channel, int(_MEDIA_KEYS[channel]), self.config.media_params(channel)
        )
        return [Send(channel, conn, hello)]

    def on_open_failed(self, channel: str, conn: int, error: str, now: float) -> list[Action]:
        sock = self._current(channel, conn)
        if sock is None:
            return []
        del self.sockets[channel]
        log.warning(
            "RTMS connect failed",
            extra=self._ctx(channel=channel, url=sock.url, error=error),
        )
        if channel == SIGNALING:
            if self.phase is ClientPhase.SIGNALING and self.url_index + 1 < len(self.urls):
                self.url_index += 1  # comma-separated server_urls: try the next one now
                return self._connect_signaling(now)
            return self._full_retry(now, f"signaling connect failed: {error}")
        return self._media_retry(channel, now, f"connect failed: {error}")

    def on_closed(self, channel: str, conn: int, code: int | None, now: float) -> list[Action]:
        sock = self._current(channel, conn)
        if sock is None:
            return []
        del self.sockets[channel]
        return self._lost(channel, now, f"socket closed ({code})", was_ready=sock.ready)

    def on_message(self, channel: str, conn: int, raw: str | bytes, now: float, wall_ms: int) -> list[Action]:
        sock = self._current(channel, conn)
        if sock is None:
            return []
        sock.last_rx = now
        if channel != SIGNALING:
            fast = self._fast_media(raw)
            if fast is not None:
                return [Deliver(fast)]
        try:
            msg = proto.decode_json(raw)
        except ProtocolError as exc:
            return [self._dead_letter(channel, raw, exc)]
        msg_type = msg["msg_type"]
        if msg_type == MsgType.KEEP_ALIVE_REQ:
            return self._keep_alive(channel, conn, raw, msg)
        if channel == SIGNALING:
            return self._on_signaling(conn, raw, msg, now, wall_ms)
        return self._on_media(channel, conn, raw, msg, now, wall_ms)

    def on_tick(self, now: float) -> list[Action]:
        """Act on every deadline that has passed."""
        actions: list[Action] = []
        if self.phase is ClientPhase.FINISHED:
            return actions
        if self.close_deadline is not None and now >= self.close_deadline:
            self.close_deadline = None
            if self.phase is ClientPhase.DRAINING:
                log.warning("RTMS media not closed in time", extra=self._ctx(media=sorted(self.sockets)))
                return self._close_all() + self._finish_drained(" (media not closed in time)")
            return self._close_all() + self._finish(
                True, proto.StopReason.RECEIVER_REQUEST_CLOSE, "close timed out"
            )
        if self.phase is ClientPhase.DRAINING:
            return actions
        if self.phase is ClientPhase.BACKOFF and self.retry_at is not None and now >= self.retry_at:
            self.retry_at = None
            self.url_index = 0
            return self._connect_signaling(now)
        for channel, sock in list(self.sockets.items()):
            if self.sockets.get(channel) is not sock:
                continue  # replaced by an action taken in this tick
            silent = now - sock.last_rx >= self.config.idle_timeout_s
            late = not sock.ready and now >= sock.deadline
            if silent or late:
                actions.append(Disconnect(channel, sock.conn, 1000))
                del self.sockets[channel]
                reason = "no message within the idle timeout" if silent else "no handshake response in time"
                # a handshake that never came back is a failed attempt, not a lost connection
                actions += self._lost(channel, now, reason, was_ready=sock.ready)
                if self.phase is ClientPhase.FINISHED or channel == SIGNALING:
                    return actions
        for slot in self.media.values():
            if (
                slot.retry_at is not None
                and now >= slot.retry_at
                and self.phase in (ClientPhase.MEDIA, ClientPhase.READY)
            ):
                slot.retry_at = None
                actions += self._connect_media(slot, now)
        return actions

    def request_reconnect(
        self, now: float, server_urls: str | None = None, since_wall_ms: int | None = None
    ) -> list[Action]:
        """`rtms_interrupted` (no URLs) or a failover (new URLs): reconnect everything now.

        An interruption is news only if we have not reconnected since: with a reconnect under way,
        or streaming again since `since_wall_ms` (the webhook's time), it is ignored, so Zoom's
        report of a drop we already healed does not tear the new connection down."""
        if self.phase in (ClientPhase.FINISHED, ClientPhase.CLOSING, ClientPhase.DRAINING):
            return []
        if not server_urls:
            if self.phase in (ClientPhase.SIGNALING, ClientPhase.MEDIA):
                return []
            if (
                self.phase is ClientPhase.READY
                and since_wall_ms is not None
                and self.ready_at_wall_ms >= since_wall_ms
            ):
                return []
        if server_urls:
            self.urls = split_server_urls(server_urls)
        self.url_index = 0
        self.retry_at = None
        scope = "failover" if server_urls else "interrupted"
        metrics.RECONNECTS.labels(scope=scope).inc()
        log.info("RTMS reconnect requested", extra=self._ctx(scope=scope, urls=self.urls))
        return self._close_all() + self._connect_signaling(now)

    def request_stop(self, now: float, close_stream: bool) -> list[Action]:
        """Leave. `close_stream` asks Zoom to end the stream (STREAM_CLOSE_REQ, wait for 22)."""
        if self.phase in (ClientPhase.FINISHED, ClientPhase.CLOSING, ClientPhase.DRAINING):
            return []
        sig = self.sockets.get(SIGNALING)
        if close_stream and sig is not None and sig.ready:
            self.phase = ClientPhase.CLOSING
            self.retry_at = None
            for slot in self.media.values():
                slot.retry_at = None
            self.close_deadline = now + self.config.close_timeout_s
            return [Send(SIGNALING, sig.conn, self.handshake.close())]
        return self._drain(now, close_stream, None, "left")

    # --- signaling ---------------------------------------------------------------------------------

    def _on_signaling(
        self, conn: int, raw: str | bytes, msg: dict[str, Any], now: float, wall_ms: int
    ) -> list[Action]:
        msg_type = msg["msg_type"]
        try:
            if msg_type == MsgType.SIGNALING_HAND_SHAKE_RESP:
                return self._on_handshake(proto.HandshakeResponse.from_dict(msg), now, wall_ms)
            if msg_type == MsgType.EVENT_UPDATE:
                event = proto.EventUpdate.from_dict(msg)
                delivered: list[Action] = [Deliver(self.values.event(event, raw))]
                if self.cameras is None:
                    return delivered
                users = [p.user_id for p in event.participants or ()]
                if event.user_id is not None:
                    users.append(event.user_id)  # the active speaker
                return delivered + self._video_requests(
                    self.cameras.on_event(event.event_type, users), wall_ms
                )
            if msg_type == MsgType.STREAM_STATE_UPDATE:
                update = proto.StreamStateUpdate.from_dict(msg)
                actions: list[Action] = [
                    Deliver(self.values.state_event(msg, raw, update.state, update.reason, update.timestamp))
                ]
                if update.state == StreamState.TERMINATED:
                    log.info("RTMS stream terminated", extra=self._ctx(stop_reason=update.reason))
                    actions += self._drain(now, True, update.reason, "stream terminated")
                return actions
            if msg_type == MsgType.SESSION_STATE_UPDATE:
                s = proto.SessionStateUpdate.from_dict(msg)
                ev = self.values.state_event(msg, raw, s.state, s.stop_reason, s.timestamp, s.rtms_session_id)
                return [Deliver(ev)]
            if msg_type == MsgType.STREAM_CLOSE_RESP:
                proto.StreamCloseResponse.from_dict(msg)
                if self.phase is ClientPhase.CLOSING:
                    return self._drain(now, True, proto.StopReason.RECEIVER_REQUEST_CLOSE, "closed by us")
                return []
            if msg_type == MsgType.VIDEO_SUBSCRIPTION_RESP and self.cameras is not None:
                answer = proto.VideoSubscriptionResponse.from_dict(msg)
                answered = self.values.state_event(msg, raw, None, None, answer.timestamp)
                requests = self.cameras.on_answer(answer.user_id, answer.status_code)
                return [Deliver(answered), *self._video_requests(requests, wall_ms)]
            if msg_type in STATE_MSGS:
                state = msg.get("state")
                ts = msg.get("timestamp")
                return [
                    Deliver(
                        self.values.state_event(
                            msg,
                            raw,
                            state if isinstance(state, int) else None,
                            None,
                            ts if isinstance(ts, int) else 0,
                        )
                    )
                ]
        except ProtocolError as exc:
            return [self._dead_letter(SIGNALING, raw, exc)]
        if msg_type in _KNOWN_MSG_TYPES:
            log.debug("ignored signaling message", extra=self._ctx(msg_type=msg_type))
            return []
        return [
            self._dead_letter(SIGNALING, raw, ProtocolError("unknown_msg_type", "msg_type", str(msg_type)))
        ]

    def _on_handshake(self, resp: proto.HandshakeResponse, now: float, wall_ms: int) -> list[Action]:
        sig = self.sockets.get(SIGNALING)
        if self.phase is not ClientPhase.SIGNALING or sig is None:
            return []
        verdict = self.handshake.on_hello_answer(resp)
        if verdict is Verdict.RETRY:
            # someone (a previous owner, a retried webhook) still holds the stream: close, wait, retry
            return self._full_retry(now, f"duplicate signal request: {resp.reason}")
        if verdict is Verdict.REFUSED:
            log.error(
                "RTMS handshake refused",
                extra=self._ctx(status_code=resp.status_code, reason=resp.reason),
            )
            return self._close_all() + self._finish(
                True, None, f"handshake status {resp.status_code}: {resp.reason}"
            )
        sig.ready = True
        self.phase = ClientPhase.MEDIA
        self.media = {}
        for key in self.config.wanted():
            url = resp.media_urls.get(key)
            if not url:
                log.warning("no media URL for a wanted type", extra=self._ctx(media=key))
                continue
            try:
                check_url(url, self.config.allowed_hosts, self.config.allow_insecure_ws)
            except DisallowedUrl as exc:
                log.error("media URL not allowed", extra=self._ctx(media=key, error=str(exc)))
                continue
            self.media[key] = _MediaSlot(key, url, self.config.backoff(self.rng))
        actions: list[Action] = []
        for slot in self.media.values():
            actions += self._connect_media(slot, now)
        return actions + self._maybe_ready(now, wall_ms)

    # --- media -------------------------------------------------------------------------------------

    def _fast_media(self, raw: str | bytes) -> AudioData | VideoData | None:
        """An audio or video frame's value from orjson's unchecked object (`fast_media_item` takes
        no float where it wants an int, so no float walk); None sends it down the exact path (the
        full parser on `decode_json`'s object: the same value, or the same dead letter as ever)."""
        msg = proto.orjson_object(raw)
        if msg.__class__ is not dict:
            return None
        msg_type = msg.get("msg_type")
        if msg_type.__class__ is not int or msg_type not in FAST_MEDIA:
            return None
        return self.values.fast_media_item(msg_type, msg)

    def _on_media(
        self, channel: str, conn: int, raw: str | bytes, msg: dict[str, Any], now: float, wall_ms: int
    ) -> list[Action]:
        # a frame `_fast_media` refused (or one with a float it could not tell from a big int) goes
        # to the full parser, whose value is the fast path's wherever that accepts
        # (`tests/ingest/test_fast_path.py`), so no second fast try here
        msg_type = msg["msg_type"]
        try:
            if msg_type == MsgType.MEDIA_DATA_CHAT:
                return [Deliver(self.values.chat_item(proto.ChatFrame.from_dict(msg)))]
            if msg_type in proto.MEDIA_MSG_TYPES:
                return [Deliver(self.values.media_item(proto.MediaFrame.from_dict(msg)))]
            if msg_type == MsgType.DATA_HAND_SHAKE_RESP:
                return self._on_data_handshake(
                    channel, proto.DataHandshakeResponse.from_dict(msg), now, wall_ms
                )
            if msg_type == MsgType.META_DATA_AUDIO:
                return [Deliver(self.values.audio_metadata(msg, raw))]
        except ProtocolError as exc:
            return [self._dead_letter(channel, raw, exc)]
        return [self._dead_letter(channel, raw, ProtocolError("unknown_msg_type", "msg_type", str(msg_type)))]

    def _on_data_handshake(
        self, channel: str, resp: proto.DataHandshakeResponse, now: float, wall_ms: int
    ) -> list[Action]:
        sock = self.sockets.get(channel)
        slot = self.media.get(channel)
        if sock is None or slot is None or sock.ready:
            return []
        verdict = self.handshake.on_media_answer(channel, resp)
        if verdict is Verdict.RETRY:
            del self.sockets[channel]
            return [Disconnect(channel, sock.conn)] + self._media_retry(
                channel, now, f"status {resp.status_code}"
            )
        if verdict is Verdict.REFUSED:
            log.error(
                "RTMS media handshake refused; continuing without this type",
                extra=self._ctx(media=channel, status_code=resp.status_code, reason=resp.reason),
            )
            del self.sockets[channel]
            slot.disabled = True
            return [Disconnect(channel, sock.conn)] + self._maybe_ready(now, wall_ms)
        sock.ready = True
        slot.backoff.reset()
        self.values.grant(channel, resp.media_params, self.config.media_params(channel))
        if self.phase is ClientPhase.READY:
            metrics.RECONNECTS.labels(scope="media").inc()
            log.info("RTMS media socket reconnected", extra=self._ctx(media=channel))
            return []
        return self._maybe_ready(now, wall_ms)

    def _maybe_ready(self, now: float, wall_ms: int = 0) -> list[Action]:
        """After the last media handshake: CLIENT_READY_ACK, then the event subscription."""
        if self.phase is not ClientPhase.MEDIA:
            return []
        pending = [
            s
            for s in self.media.values()
            if not s.disabled and not (s.key in self.sockets and self.sockets[s.key].ready)
        ]
        if pending:
            return []
        sig = self.sockets.get(SIGNALING)
        if sig is None:
            return []
        self.phase = ClientPhase.READY
        self.ready_count += 1
        self.ready_at_wall_ms = wall_ms
        if self.ready_count > 1:
            metrics.RECONNECTS.labels(scope="full").inc()
        self.backoff.reset()
        log.info(
            "RTMS stream connected",
            extra=self._ctx(
                media=sorted(k for k, s in self.media.items() if not s.disabled), connects=self.ready_count
            ),
        )
        if not self.config.wanted():
            # a signaling-only connection (a stream close for the SDK backend) has nothing to be
            # ready for: no CLIENT_READY_ACK, no subscription, as before it drove this machine
            return []
        actions: list[Action] = [Send(SIGNALING, sig.conn, text) for text in self.handshake.ready()]
        if self.cameras is not None:
            actions += self._video_requests(self.cameras.on_connected(), wall_ms)
        return actions

    def _video_requests(self, requests: list[VideoRequest], wall_ms: int) -> list[Action]:
        """VIDEO_SUBSCRIPTION_REQs on signaling (individual video; the timestamp is our clock's)."""
        sig = self.sockets.get(SIGNALING)
        if not requests or sig is None or self.phase is not ClientPhase.READY:
            return []
        return [
            Send(
                SIGNALING,
                sig.conn,
                proto.encode(proto.VideoSubscriptionRequest(r.user_id, r.subscribe, wall_ms)),
            )
            for r in requests
        ]

    # --- connection management ---------------------------------------------------------------------

    def _connect_signaling(self, now: float) -> list[Action]:
        if self.cameras is not None:
            self.cameras.on_disconnected()
        self.phase = ClientPhase.SIGNALING
        self.media = {}
        return [self._open(SIGNALING, self.urls[self.url_index], now)]

    def _connect_media(self, slot: _MediaSlot, now: float) -> list[Action]:
        return [self._open(slot.key, slot.url, now)]

    def _open(self, channel: str, url: str, now: float) -> Connect:
        self._conn += 1
        self.sockets[channel] = _Socket(
            self._conn, url, last_rx=now, deadline=now + self.config.handshake_timeout_s
        )
        return Connect(channel, url, self._conn)

    def _lost(self, channel: str, now: float, why: str, was_ready: bool = False) -> list[Action]:
        """A socket is gone (closed, failed, silent): decide what to reconnect. `was_ready`: its
        handshake had succeeded, so this is a drop of a working connection (reconnect at once)."""
        if self.phase is ClientPhase.DRAINING:
            return [] if self.sockets else self._finish_drained()
        if self.phase is ClientPhase.CLOSING:
            if channel == SIGNALING:
                return self._drain(now, True, proto.StopReason.RECEIVER_REQUEST_CLOSE, "closed by us")
            return []
        if self.phase in (ClientPhase.FINISHED, ClientPhase.BACKOFF, ClientPhase.IDLE):
            return []
        if channel == SIGNALING:
            log.warning("RTMS signaling lost", extra=self._ctx(why=why))
            lost = [
                Deliver(MediaLost(c)) for c, sock in self.sockets.items() if c != SIGNALING and sock.ready
            ]
            return lost + self._full_retry(now, f"signaling lost: {why}", drop=was_ready)
        log.warning("RTMS media socket lost", extra=self._ctx(media=channel, why=why))
        lost = [Deliver(MediaLost(channel))] if was_ready else []
        return lost + self._media_retry(channel, now, why, drop=was_ready)

    def _media_retry(self, channel: str, now: float, why: str, drop: bool = False) -> list[Action]:
        slot = self.media.get(channel)
        if slot is None or self.phase not in (ClientPhase.MEDIA, ClientPhase.READY):
            return []
        if slot.backoff.spent:
            return self._full_retry(now, f"media {channel} kept failing: {why}")
        # a zero delay is due at the caller's next tick, which the shell runs before waiting
        slot.retry_at = now + slot.backoff.delay(now, drop)
        return []

    def _full_retry(self, now: float, why: str, drop: bool = False) -> list[Action]:
        actions = self._close_all()
        if self.backoff.spent:
            log.error("RTMS reconnect budget spent", extra=self._ctx(why=why, attempts=self.backoff.attempts))
            return actions + self._finish(
                True, None, f"gave up after {self.backoff.attempts} attempts: {why}"
            )
        self.phase = ClientPhase.BACKOFF
        delay = self.backoff.delay(now, drop)
        self.retry_at = now + delay
        log.info(
            "RTMS reconnect scheduled",
            extra=self._ctx(why=why, delay_s=round(delay, 3), attempt=self.backoff.attempts),
        )
        return actions

    def _close_all(self) -> list[Action]:
        actions: list[Action] = [Disconnect(channel, sock.conn) for channel, sock in self.sockets.items()]
        self.sockets = {}
        for slot in self.media.values():
            slot.retry_at = None
        return actions

    def _drain(self, now: float, ended: bool, stop_reason: int | None, detail: str) -> list[Action]:
        """The stream is over: close signaling (and any socket still handshaking) now; close the
        working media sockets with a closing handshake and finish once each has reported its close,
        so the frames the server wrote before it are delivered (at most `close_timeout_s`)."""
        actions: list[Action] = []
        for channel, sock in list(self.sockets.items()):
            drain = channel != SIGNALING and sock.ready
            actions.append(Disconnect(channel, sock.conn, drain=drain))
            if not drain:
                del self.sockets[channel]
        self.retry_at = None
        for slot in self.media.values():
            slot.retry_at = None
        if not self.sockets:
            return actions + self._finish(ended, stop_reason, detail)
        self.phase = ClientPhase.DRAINING
        self.drained_outcome = SessionOutcome(ended=ended, stop_reason=stop_reason, detail=detail)
        self.close_deadline = now + self.config.close_timeout_s
        return actions

    def _finish_drained(self, note: str = "") -> list[Action]:
        outcome = self.drained_outcome
        assert outcome is not None
        self.drained_outcome = None
        return self._finish(outcome.ended, outcome.stop_reason, outcome.detail + note)

    def _finish(self, ended: bool, stop_reason: int | None, detail: str) -> list[Action]:
        self.phase = ClientPhase.FINISHED
        self.retry_at = None
        self.close_deadline = None
        self.media = {}
        return [Finish(SessionOutcome(ended=ended, stop_reason=stop_reason, detail=detail))]

    def _current(self, channel: str, conn: int) -> _Socket | None:
        sock = self.sockets.get(channel)
        return (
            sock
            if sock is not None and sock.conn == conn and self.phase is not ClientPhase.FINISHED
            else None
        )

    # --- small builders ---------------------------------------------------------------------------

    def _keep_alive(self, channel: str, conn: int, raw: str | bytes, msg: dict[str, Any]) -> list[Action]:
        try:
            return [Send(channel, conn, keep_alive_reply(msg))]
        except ProtocolError as exc:
            return [self._dead_letter(channel, raw, exc)]

    def _dead_letter(self, channel: str, raw: str | bytes, exc: ProtocolError) -> Deliver:
        source = "ws:signaling" if channel == SIGNALING else f"ws:media/{channel}"
        payload = raw.encode() if isinstance(raw, str) else bytes(raw)
        log.warning("malformed RTMS message", extra=self._ctx(source=source, reason=str(exc)))
        return Deliver(DeadLetterData(source, str(exc), f"ProtocolError.{exc.reason}", payload))

    def _ctx(self, **extra: Any) -> dict[str, Any]:
        return {"meeting": self.session.meeting_uuid, "rtms_stream_id": self.session.rtms_stream_id, **extra}
