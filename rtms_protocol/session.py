"""The client side of one RTMS stream's handshakes, without I/O: what to send, and what an answer means.

`ClientSession` is fed decoded messages and answers with actions (texts to send: handshakes, CLIENT_READY_ACK,
event subscription, keep-alives, STREAM_CLOSE_REQ); ingest, the emulator's tests and the benchmarks drive it.
`signaling_verdict` / `media_verdict` judge status codes (0 ok; 8, 15, 16 retry)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from rtms_protocol.codec import encode
from rtms_protocol.constants import MsgType, StatusCode, StreamState
from rtms_protocol.messages import (
    ClientReadyAck,
    DataHandshakeRequest,
    DataHandshakeResponse,
    EventSubscription,
    HandshakeRequest,
    HandshakeResponse,
    KeepAliveRequest,
    StreamCloseRequest,
)
from rtms_protocol.params import MediaParams
from rtms_protocol.signing import handshake_signature

SIGNALING = "signaling"  # the channel name of the signaling socket; media sockets use their own keys

_RETRYABLE_MEDIA = frozenset(
    {StatusCode.MEDIA_DATA_ALL_CONNECTION_EXIST, StatusCode.DUPLICATE_MEDIA_DATA_CONNECTION}
)


class Verdict(Enum):
    """What a handshake answer means for the socket that asked."""

    OK = "ok"
    RETRY = "retry"  # refused for now: close, wait, try again
    REFUSED = "refused"  # refused for good


def signaling_verdict(status_code: int) -> Verdict:
    """A SIGNALING_HAND_SHAKE_RESP status: 8 (the stream is still held elsewhere) is worth a retry."""
    if status_code == StatusCode.OK:
        return Verdict.OK
    if status_code == StatusCode.DUPLICATE_SIGNAL_REQUEST:
        return Verdict.RETRY
    return Verdict.REFUSED


def media_verdict(status_code: int) -> Verdict:
    """A DATA_HAND_SHAKE_RESP status: 15/16 (that media connection still exists) are worth a retry."""
    if status_code == StatusCode.OK:
        return Verdict.OK
    if status_code in _RETRYABLE_MEDIA:
        return Verdict.RETRY
    return Verdict.REFUSED


def keep_alive_reply(msg: dict[str, Any]) -> str:
    """The KEEP_ALIVE_RESP text for a decoded KEEP_ALIVE_REQ (raises `ProtocolError` if malformed)."""
    return encode(KeepAliveRequest.from_dict(msg).response())


def ends_stream(msg: dict[str, Any]) -> bool:
    """True for the signaling messages after which a stream is over: STREAM_CLOSE_RESP, or a
    STREAM_STATE_UPDATE with state TERMINATED."""
    msg_type = msg.get("msg_type")
    if msg_type == MsgType.STREAM_CLOSE_RESP:
        return True
    return msg_type == MsgType.STREAM_STATE_UPDATE and msg.get("state") == StreamState.TERMINATED


class ClientPhase(Enum):
    """Where a client of one RTMS stream stands: a `ClientSession`, and `ingest.rtms_client.RtmsClient`
    (which alone backs off and drains)."""

    IDLE = "idle"
    SIGNALING = "signaling"  # connecting / hello sent, waiting for its answer
    MEDIA = "media"  # signaling accepted, data handshakes under way
    READY = "ready"  # CLIENT_READY_ACK sent: streaming
    BACKOFF = "backoff"  # waiting to reconnect everything
    CLOSING = "closing"  # STREAM_CLOSE_REQ sent, waiting for the response
    # The stream is over (terminated, closed, left): signaling is closed, the media sockets are
    # closing and their last frames still delivered. Zoom writes media and signaling on separate
    # TCP connections, so the TERMINATED on signaling can overtake frames still on their way on a
    # media socket; closing media with the stop would drop them.
    DRAINING = "draining"
    FINISHED = "finished"  # the stream is over, or the handshake was refused


# --- actions: what `ClientSession.on_message` asks of its shell ------------------------------------


@dataclass(frozen=True)
class Send:
    """Send `text` on `channel` (`SIGNALING` or a media key)."""

    channel: str
    text: str


@dataclass(frozen=True)
class Answered:
    """The message answered `channel`'s handshake: `verdict` (see `Verdict`)."""

    channel: str
    verdict: Verdict


@dataclass(frozen=True)
class Finish:
    """The stream is over (or the signaling handshake was refused): close the sockets."""


Action = Send | Answered | Finish


@dataclass
class ClientSession:
    """One stream's handshakes from the client's side (see the module docstring).

    Lower level, for a client with its own connection logic: `hello()` (a new signaling attempt),
    `on_hello_answer`, `media_hello(key, ...)`, `on_media_answer`, `ready()`, `close()`. Higher
    level, for a client that only reads sockets: `on_message(channel, msg)` does the bookkeeping and
    returns actions. Every request carries the next `sequence` number.
    """

    meeting_uuid: str
    rtms_stream_id: str
    signature: str
    client_agent: str | None = None
    buffer_data: bool | None = None
    subscribe: tuple[int, ...] = ()  # event types to subscribe to once ready (none: no subscription)
    phase: ClientPhase = ClientPhase.IDLE
    media_urls: dict[str, str] = field(default_factory=dict)  # from the accepted signaling answer
    pending: set[str] = field(default_factory=set)  # media keys whose data handshake is unanswered
    sequence: int = 0

    @classmethod
    def signed(
        cls, client_id: str, client_secret: str, meeting_uuid: str, rtms_stream_id: str, **options: Any
    ) -> ClientSession:
        """A session whose handshakes carry the signature of these app credentials."""
        signature = handshake_signature(client_id, client_secret, meeting_uuid, rtms_stream_id)
        return cls(meeting_uuid, rtms_stream_id, signature, **options)

    # --- lower level -------------------------------------------------------------------------------

    def hello(self) -> str:
        """Start a signaling attempt (a first connect or a reconnect): the handshake request text."""
        self.phase = ClientPhase.SIGNALING
        self.media_urls = {}
        self.pending = set()
        self.sequence += 1
        return encode(
            HandshakeRequest(
                meeting_uuid=self.meeting_uuid,
                rtms_stream_id=self.rtms_stream_id,
                signature=self.signature,
                sequence=self.sequence,
                buffer_data=self.buffer_data,
                rtms_client_agent=self.client_agent,
            )
        )

    def on_hello_answer(self, resp: HandshakeResponse) -> Verdict:
        """The signaling handshake's answer: accepted (media URLs kept), retry later, or refused."""
        verdict = signaling_verdict(resp.status_code)
        if verdict is Verdict.OK:
            self.phase = ClientPhase.MEDIA
            self.media_urls = dict(resp.media_urls)
        elif verdict is Verdict.REFUSED:
            self.phase = ClientPhase.FINISHED
        return verdict

    def media_hello(self, key: str, media_type: int, params: MediaParams | None = None) -> str:
        """The data handshake request text for the media socket `key` (`media_urls[key]`)."""
        self.pending.add(key)
        self.sequence += 1
        return encode(
            DataHandshakeRequest(
                meeting_uuid=self.meeting_uuid,
                rtms_stream_id=self.rtms_stream_id,
                signature=self.signature,
                media_type=media_type,
                media_params=params,
                sequence=self.sequence,
            )
        )

    def on_media_answer(self, key: str, resp: DataHandshakeResponse) -> Verdict:
        """A data handshake's answer for the media socket `key`."""
        self.pending.discard(key)
        return media_verdict(resp.status_code)

    def ready(self) -> list[str]:
        """Every media socket is up (or given up): CLIENT_READY_ACK, then the event subscription."""
        self.phase = ClientPhase.READY
        texts = [encode(ClientReadyAck(self.rtms_stream_id))]
        if self.subscribe:
            texts.append(encode(EventSubscription.subscribe(*self.subscribe)))
        return texts

    def close(self) -> str:
        """Ask Zoom to end the stream: the STREAM_CLOSE_REQ text (send it on signaling)."""
        self.phase = ClientPhase.CLOSING
        return encode(StreamCloseRequest(self.rtms_stream_id))

    # --- higher level ------------------------------------------------------------------------------

    def on_message(self, channel: str, msg: dict[str, Any]) -> list[Action]:
        """One decoded message from `channel` (`SIGNALING` or a media key). Answers keep-alives,
        judges handshake answers, sends the ready texts once the last media socket is accepted,
        and notices the end of the stream. Raises `ProtocolError` for a malformed message."""
        msg_type = msg.get("msg_type")
        if msg_type == MsgType.KEEP_ALIVE_REQ:
            return [Send(channel, keep_alive_reply(msg))]
        if channel == SIGNALING:
            if msg_type == MsgType.SIGNALING_HAND_SHAKE_RESP:
                verdict = self.on_hello_answer(HandshakeResponse.from_dict(msg))
                answered: list[Action] = [Answered(SIGNALING, verdict)]
                return answered + [Finish()] if verdict is Verdict.REFUSED else answered
            if ends_stream(msg):
                self.phase = ClientPhase.FINISHED
                return [Finish()]
            return []
        if msg_type == MsgType.DATA_HAND_SHAKE_RESP:
            verdict = self.on_media_answer(channel, DataHandshakeResponse.from_dict(msg))
            actions: list[Action] = [Answered(channel, verdict)]
            if self.phase is ClientPhase.MEDIA and not self.pending:
                actions += [Send(SIGNALING, text) for text in self.ready()]
            return actions
        return []
