"""One emulated RTMS stream: the shell of its `ServerSession` (`emulator.server_session`) and its media clock.

`Stream` is driven by its sockets, the pacer (`pump`) and the test (`StreamHandle`). The media clock
starts at the first CLIENT_READY_ACK; while a socket is down, audio and transcripts are buffered and
video is lost, as in a real meeting."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import rtms_protocol as rp
from emulator.faults import Faults, Malformed, malformed_text
from emulator.negotiate import ChannelParams
from emulator.peer import Peer
from emulator.server_session import (
    Abort,
    Action,
    Close,
    Finish,
    Notify,
    ResumeMedia,
    Send,
    ServerPhase,
    ServerSession,
    StartCamera,
    StartMedia,
)
from emulator.source import MeetingSource
from emulator.timeline import EVENT, Entry, SharedTimeline, TimelineCache
from emulator.wire import (
    AUDIO,
    CHANNEL_NAMES,
    CHANNEL_OF,
    CHAT,
    TRANSCRIPT,
    VIDEO,
    FrameEncoder,
    MediaItemLike,
    render,
    ws_text_frame,
)
from rtmsflow.logs import get_logger

if TYPE_CHECKING:
    from emulator.pacer import Pacer

log = get_logger(__name__)

LATE_MS = 20.0  # a frame sent more than this after its due time is counted late
_ACTIVE, _TERMINATED, _WAITING = ServerPhase.ACTIVE, ServerPhase.TERMINATED, ServerPhase.WAITING


@dataclass(frozen=True)
class Lifecycle:
    """A change a webhook sender reports: "interrupted" (signaling lost), "failover" (a new
    `server_urls` for the same stream) or "stopped" (with `stop_reason`)."""

    kind: str
    meeting_uuid: str
    rtms_stream_id: str
    server_urls: str
    stop_reason: int | None = None


@dataclass(frozen=True, slots=True)
class SentFrame:
    """A media frame as sent (kept only with `record=True`)."""

    channel: str
    user_id: int
    user_name: str
    timestamp: int
    data: bytes | str
    start_time: int | None = None
    end_time: int | None = None


@dataclass
class StreamStats:
    """Counters of one stream. `late` counts frames sent more than 20 ms after their due time."""

    sent: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CHANNEL_NAMES, 0))
    bytes_sent: int = 0
    events_sent: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CHANNEL_NAMES, 0))
    buffered: int = 0
    late: int = 0
    max_late_ms: float = 0.0
    keepalives_sent: int = 0
    keepalives_answered: int = 0
    bad_client_messages: int = 0
    signaling_handshakes: int = 0
    media_handshakes: int = 0
    reordered: list[tuple[str, int, int]] = field(default_factory=list)  # (channel, user_id, timestamp)
    duplicated: list[tuple[str, int, int]] = field(default_factory=list)


class Stream:
    """The engine of one stream (the public face is `StreamHandle`)."""

    def __init__(
        self,
        *,
        meeting_uuid: str,
        stream_id: str,
        signature: str,
        source: MeetingSource,
        faults: Faults,
        speed: float,
        base_ms: int | None,
        start_delay_s: float,
        record: bool,
        start_after_subscribing: frozenset[int] = frozenset(),
        preroll_ms: int = 0,
        first_packet_event: bool = True,
        encoder: FrameEncoder,
        timelines: TimelineCache,
        pacer: Pacer,
        urls: Callable[[Stream], str],
    ) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.meeting_uuid = meeting_uuid
        self.stream_id = stream_id
        self.session_id = hashlib.sha256(f"session:{meeting_uuid}:{stream_id}".encode()).hexdigest()[:32]
        self.source = source
        self.faults = faults
        self.speed = speed
        self.base_ms = base_ms
        self.start_delay_s = start_delay_s
        self.start_after_subscribing = start_after_subscribing
        self.preroll_ms = preroll_ms
        self._subscribed_enough = asyncio.Event()  # the client subscribed to start_after_subscribing
        self.encoder = encoder
        self.timelines = timelines
        self.pacer = pacer
        self._urls = urls
        self.route = ""  # URL token; a failover changes it
        self.stats = StreamStats()
        self.machine: ServerSession[Peer] = ServerSession(
            meeting_uuid=meeting_uuid,
            rtms_stream_id=stream_id,
            session_id=self.session_id,
            signature=signature,
            faults=faults,
            stats=self.stats,
            adjust=source.adjust,
            first_packet_event=first_packet_event,
        )
        self._camera_starting: set[int] = set()  # subscribed cameras waiting for their next keyframe
        self.t0: float | None = None  # loop time of media offset 0
        self._timeline: SharedTimeline | None = None
        self._cursor = 0
        self._pos = 0
        self._next: Entry | None = None
        self._activating = False
        self._buffers: tuple[deque[Entry], ...] = tuple(deque() for _ in CHANNEL_NAMES)
        self._held: list[Entry | None] = [None] * len(CHANNEL_NAMES)
        self._media_counter = 0
        self._reorder = faults.reorder_indices()
        self._duplicate = faults.duplicate_indices()
        self._frame_faults = bool(self._reorder or self._duplicate)
        self._pending_malformed = list(faults.malformed)
        self.wake_at: float | None = None
        self.sent_log: list[SentFrame] | None = [] if record else None
        self.listeners: list[Callable[[Lifecycle], None]] = []
        self.done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.active_event = asyncio.Event()
        self._offset_waiters: list[tuple[int, asyncio.Future[None]]] = []

    # --- the session's state, as the media and the handle read it ------------------------------------

    @property
    def phase(self) -> ServerPhase:
        return self.machine.phase

    @property
    def paused(self) -> bool:
        return self.machine.paused

    @property
    def signaling(self) -> Peer | None:
        return self.machine.signaling

    @property
    def media(self) -> list[Peer | None]:
        """The socket of each media channel (emulator.wire), None while it is down."""
        return self.machine.media

    @property
    def grants(self) -> dict[int, ChannelParams]:
        return self.machine.grants

    @property
    def subscribed(self) -> set[int]:
        return self.machine.subscribed

    @property
    def roster(self) -> dict[int, str]:
        return self.machine.roster

    @property
    def video_subscriptions(self) -> set[int]:
        """Individual video: whose cameras are sent."""
        return self.machine.video_subscriptions

    # --- time -----------------------------------------------------------------------------------

    def _loop_time(self) -> float:
        return asyncio.get_running_loop().time()

    def media_ms(self, now: float) -> float:
        """Media time (ms from offset 0) at loop time `now`."""
        return (now - self.t0) * 1000.0 * self.speed if self.t0 is not None else 0.0

    def now_ms(self, now: float | None = None) -> int:
        """The stream's epoch-ms clock: base + media time once started, wall clock before."""
        if self.t0 is None or self.base_ms is None:
            return int(time.time() * 1000)
        return self.base_ms + int(self.media_ms(self._loop_time() if now is None else now))

    @property
    def server_urls(self) -> str:
        return self._urls(self)

    # --- lifecycle notifications -------------------------------------------------------------------

    def _notify(self, kind: str, stop_reason: int | None = None) -> None:
        event = Lifecycle(kind, self.meeting_uuid, self.stream_id, self.server_urls, stop_reason)
        for listener in list(self.listeners):
            try:
                listener(event)
            except Exception:
                log.exception("lifecycle listener failed", extra={"meeting": self.meeting_uuid})

    # --- the session's actions, carried out ------------------------------------------------------------

    def _carry_out(self, actions: list[Action[Peer]]) -> None:
        stats = self.stats
        for action in actions:
            if isinstance(action, Send):
                if action.socket.send(action.message):
                    if isinstance(action.message, rp.EventUpdate):
                        stats.events_sent += 1
                    elif isinstance(action.message, rp.KeepAliveRequest):
                        stats.keepalives_sent += 1
            elif isinstance(action, Close):
                action.socket.close(action.code, action.reason)
            elif isinstance(action, Abort):
                action.socket.abort()
            elif isinstance(action, StartMedia):
                self._start_media()
            elif isinstance(action, StartCamera):
                self._camera_starting.add(action.user_id)
            elif isinstance(action, ResumeMedia):
                self._media_restored(action.channels)
            elif isinstance(action, Notify):
                self._notify(action.kind)
            elif isinstance(action, Finish):
                self._finish(action.stop_reason)
        deadline = self.machine.next_deadline()
        if deadline is not None and self.phase is not ServerPhase.TERMINATED:
            self.pacer.wake(self, deadline)

    # --- sockets ------------------------------------------------------------------------------------

    def handshake(self, peer: Peer, raw: str | bytes) -> bool:
        """Answer a socket's first message (its signaling or data handshake request, by the socket's
        role); True = accepted."""
        machine = self.machine
        actions: list[Action[Peer]] = []
        for held in machine.sockets():
            if not held.open:  # polled here, the one moment it matters
                actions += machine.on_closing(held)
        actions += machine.on_handshake(peer, peer.role, raw, self._loop_time(), self.media_urls())
        self._carry_out(actions)
        if not machine.connected(peer):
            return False
        if not self.faults.answer_keepalives:
            peer.ignore_pings()
        return True

    def media_urls(self) -> dict[str, str]:
        base = self.server_urls.rsplit("/", 1)[0] + "/media/"
        return {key: base + key for key in ("audio", "video", "transcript", "deskshare", "chat", "all")}

    def _media_restored(self, channels: tuple[int, ...]) -> None:
        if self.phase is not ServerPhase.ACTIVE:
            return
        self._flush_buffers(channels)
        self.pacer.wake(self)

    def detach(self, peer: Peer) -> None:
        """A socket of this stream is gone (closed by either side, or lost)."""
        now = self._loop_time()
        self._carry_out(self.machine.on_closed(peer, now, self.now_ms(now)))

    def failover(self) -> None:
        """The server "died": abort every socket and wait for the client at the new URL."""
        self._carry_out(self.machine.request_failover(self._loop_time()))

    # --- client messages -----------------------------------------------------------------------------

    def on_message(self, peer: Peer, raw: str | bytes) -> None:
        """A message from the client after the handshake (either socket)."""
        self._carry_out(self.machine.on_message(peer, raw, self.now_ms()))
        if self.start_after_subscribing <= self.subscribed:
            self._subscribed_enough.set()

    def _camera_sent(self, item: MediaItemLike) -> bool:
        """Individual video: is this camera frame sent (subscribed, and from an IDR on)?"""
        uid = item.user_id
        if uid not in self.video_subscriptions:
            return False
        if uid in self._camera_starting:
            if not getattr(item, "keyframe", True):  # a hand-made item without the flag: any frame
                return False
            self._camera_starting.discard(uid)
        return True

    def _start_media(self) -> None:
        """CLIENT_READY_ACK: start (or resume after a reconnection) the media."""
        if self._activating:
            return
        if self._timeline is None:
            self._activating = True
            task = asyncio.ensure_future(self._open_media())
            task.add_done_callback(self._activation_done)
        else:
            self._go_active()

    async def _open_media(self) -> None:
        audio = self.grants.get(AUDIO)
        audio_mode = "mixed"
        send_rate = 20
        if isinstance(audio, rp.AudioParams):
            audio_mode = "multi" if audio.data_opt == rp.DataOption.AUDIO_MULTI_STREAMS else "mixed"
            send_rate = audio.send_rate
        if self.source.synthetic:
            await asyncio.to_thread(self.source.prepare, send_rate)
        channels = set(self.grants)
        language = self.machine.language
        cameras = self.machine.individual
        key = (self.source.key, frozenset(channels), audio_mode, send_rate, language, cameras)
        self._timeline = self.timelines.open(
            key,
            lambda: self.source.items(channels, audio_mode, send_rate, cameras=cameras),
            self.encoder,
            language,
        )
        self._cursor = self._timeline.attach()
        self._pos = 0
        self._next = self._timeline.get(0)
        if not self.start_after_subscribing <= self.subscribed:
            await self._subscribed_enough.wait()  # a test's condition (add_stream's docstring)
        preroll_s = self.preroll_ms / 1000 / self.speed  # media due before the client connected
        self.t0 = self._loop_time() + self.start_delay_s - preroll_s
        if self.base_ms is None:
            self.base_ms = int(time.time() * 1000 + self.start_delay_s * 1000) - self.preroll_ms

    def _activation_done(self, task: asyncio.Future[None]) -> None:
        self._activating = False
        if task.cancelled() or task.exception() is not None:
            log.error(
                "could not open the meeting's media",
                exc_info=task.exception(),
                extra={"meeting": self.meeting_uuid},
            )
            self.terminate(rp.StopReason.INTERNAL_EXCEPTION)
            return
        if self.phase is ServerPhase.CONNECTED:
            self._go_active()

    def _go_active(self) -> None:
        assert self.base_ms is not None
        self._carry_out(self.machine.on_media_started(self.now_ms(), self.base_ms))
        self._flush_buffers(tuple(range(len(CHANNEL_NAMES))))
        self.active_event.set()
        self.pacer.wake(self)

    # --- events and states ---------------------------------------------------------------------------

    def _play_event(self, item: MediaItemLike) -> None:
        event = dict(item.event or {})
        event_type = int(event.pop("event_type"))
        people = event.get("participants")
        if event_type == rp.EventType.PARTICIPANT_JOIN and people:
            self.roster.update({int(p["user_id"]): str(p.get("user_name", "")) for p in people})
        elif event_type == rp.EventType.PARTICIPANT_LEAVE and people:
            for p in people:
                self.roster.pop(int(p["user_id"]), None)
        if (
            self.signaling is None
            or self.phase is not ServerPhase.ACTIVE
            or event_type not in self.subscribed
        ):
            return
        assert self.base_ms is not None
        body = {"event_type": event_type, "timestamp": self.base_ms + item.offset_ms, **event}
        if self.signaling.send(rp.EventUpdate.from_dict({"event": body})):
            self.stats.events_sent += 1

    def pause(self) -> None:
        self._carry_out(self.machine.request_pause(self.now_ms()))

    def resume(self) -> None:
        self._carry_out(self.machine.request_resume(self.now_ms()))

    def terminate(self, reason: int) -> None:
        """End the stream: SESSION_STATE STOPPED and STREAM_STATE TERMINATED with `reason`; the
        client closes its sockets, the server closes what is left after `close_grace_s`."""
        self._carry_out(self.machine.request_stop(reason, self.now_ms()))

    def shutdown(self) -> None:
        """The server is stopping: end without messages or notifications; `done` fails."""
        self._carry_out(self.machine.request_shutdown())

    def _finish(self, stop_reason: int | None) -> None:
        if stop_reason is None:
            self._end("emulator stopped")
            self.listeners.clear()
            self.done.set_exception(RuntimeError("emulator stopped"))
            self.done.exception()  # retrieved: nobody has to await it
            return
        self._end(f"stream terminated (reason {stop_reason})")
        self.done.set_result(int(stop_reason))
        log.info(
            "stream terminated",
            extra={"meeting": self.meeting_uuid, "stream": self.stream_id, "reason": int(stop_reason)},
        )
        self._notify("stopped", int(stop_reason))
        asyncio.get_running_loop().call_later(self.faults.close_grace_s, self._close_leftovers)

    def _end(self, why: str) -> None:
        if self._timeline is not None:
            self._timeline.detach(self._cursor)
            self._timeline = None
            self._next = None
        for _, fut in self._offset_waiters:
            if not fut.done():
                fut.set_exception(RuntimeError(why))
        self._offset_waiters.clear()

    def _close_leftovers(self) -> None:
        for peer in self.machine.sockets():
            if peer.open:
                peer.close(1000, "stream terminated")

    def pump_failed(self, exc: BaseException) -> None:
        self.terminate(rp.StopReason.INTERNAL_EXCEPTION)

    # --- the pacer's work ------------------------------------------------------------------------------

    def pump(self, now: float) -> float | None:
        """Send everything due at loop time `now`; return the next time something is due."""
        machine = self.machine
        if machine.phase is _TERMINATED:
            return None
        due = machine.next_deadline()
        if due is not None and now >= due:  # the reconnection deadline, keep-alives
            self._carry_out(machine.on_tick(now, self.now_ms(now)))
            if machine.phase is _TERMINATED:
                return None
            due = machine.next_deadline()
        t0 = self.t0
        if t0 is None or machine.phase is _WAITING:
            return due
        speed = self.speed
        media_ms = (now - t0) * 1000.0 * speed
        entry = self._next
        if entry is not None and entry.offset_ms <= media_ms + speed:  # up to 1 ms early
            self._play_due(media_ms)
            if machine.phase is _TERMINATED:
                return None
            entry = self._next
        if entry is None:
            self.terminate(rp.StopReason.MEETING_ENDED)
            return None
        if self._offset_waiters:
            self._release_waiters(media_ms)
        wake = t0 + entry.offset_ms / (1000.0 * speed)
        return wake if due is None or wake < due else due

    def _play_due(self, media_ms: float) -> None:
        limit = media_ms + 1.0 * self.speed  # up to 1 ms early
        entry = self._next
        if entry is None or entry.offset_ms > limit:
            return
        timeline = self._timeline
        assert timeline is not None
        out: dict[Peer, list[bytes]] = {}
        machine = self.machine
        active = machine.phase is _ACTIVE
        pos = self._pos
        if active and not machine.paused and not self._frame_faults and self.sent_log is None:
            entry, pos = self._play_plain(entry, pos, limit, media_ms, out)
        while entry is not None and entry.offset_ms <= limit:
            if entry.channel == EVENT:
                self._play_event(entry.item)
            else:
                self._play_media(entry, media_ms, active, out)
            pos += 1
            entry = timeline.get(pos)
        self._next, self._pos = entry, pos
        timeline.release(self._cursor, pos)
        if self._pending_malformed and active and out:
            self._send_malformed(out)
        for peer, chunks in out.items():
            if chunks:
                peer.write(b"".join(chunks))

    def _play_plain(
        self, entry: Entry | None, pos: int, limit: float, media_ms: float, out: dict[Peer, list[bytes]]
    ) -> tuple[Entry | None, int]:
        """The hot loop (no faults, no recording, not paused): `_play_media` + `_emit` inlined.
        Returns the first entry it did not play and its position."""
        machine = self.machine
        media, speed, base = machine.media, self.speed, self.base_ms
        assert base is not None and self._timeline is not None
        get = self._timeline.get
        stats = self.stats
        sent = stats.sent
        individual = machine.individual
        late, max_late, nbytes = 0, stats.max_late_ms, 0
        while entry is not None and entry.offset_ms <= limit:
            ch = entry.channel
            if ch == EVENT:
                self._play_event(entry.item)
            else:
                peer = media[ch]
                if peer is None or (individual and ch == VIDEO):
                    self._play_media(entry, media_ms, True, out)
                else:
                    lag = (media_ms - entry.offset_ms) / speed
                    if lag > LATE_MS:
                        late += 1
                    if lag > max_late:
                        max_late = lag
                    chunks = out.get(peer)
                    if chunks is None:
                        chunks = out[peer] = []
                    nbytes += render(entry.pieces, base, chunks)  # type: ignore[arg-type]
                    sent[CHANNEL_NAMES[ch]] += 1
            pos += 1
            entry = get(pos)
        stats.late += late
        stats.max_late_ms = max_late
        stats.bytes_sent += nbytes
        return entry, pos

    def _play_media(self, entry: Entry, media_ms: float, active: bool, out: dict[Peer, list[bytes]]) -> None:
        stats = self.stats
        ch = entry.channel
        if self.paused:
            stats.dropped[CHANNEL_NAMES[ch]] += 1
            return
        if ch == VIDEO and self.machine.individual and not self._camera_sent(entry.item):
            return  # individual-stream video: only the subscribed participants' cameras
        peer = self.media[ch]
        if peer is None or not active:
            if ch == AUDIO or ch == TRANSCRIPT or ch == CHAT:  # held while the socket is down
                buf = self._buffers[ch]
                buf.append(entry)
                stats.buffered += 1
                while buf and buf[0].offset_ms < entry.offset_ms - self.faults.buffer_ms:
                    buf.popleft()
                    stats.dropped[CHANNEL_NAMES[ch]] += 1
            else:
                stats.dropped[CHANNEL_NAMES[ch]] += 1
            return
        late = (media_ms - entry.offset_ms) / self.speed
        if late > LATE_MS:
            stats.late += 1
        if late > stats.max_late_ms:
            stats.max_late_ms = late
        self._emit(entry, peer, out)

    def _emit(self, entry: Entry, peer: Peer, out: dict[Peer, list[bytes]]) -> None:
        """Render one media frame (applying the reorder/duplicate faults) into `out`."""
        base = self.base_ms
        assert base is not None and entry.pieces is not None
        ch, item = entry.channel, entry.item
        chunks = out.get(peer)
        if chunks is None:
            chunks = out[peer] = []
        stats = self.stats
        name = CHANNEL_NAMES[ch]
        copies = 1
        if self._frame_faults:
            counter = self._media_counter
            self._media_counter = counter + 1
            if counter in self._reorder and self._held[ch] is None:
                self._held[ch] = entry
                stats.reordered.append((name, item.user_id, base + item.offset_ms))
                return
            if counter in self._duplicate:
                stats.duplicated.append((name, item.user_id, base + item.offset_ms))
                copies = 2
        held = self._held[ch]
        self._held[ch] = None
        for e in (entry,) * copies + ((held,) if held is not None else ()):
            assert e.pieces is not None
            stats.bytes_sent += render(e.pieces, base, chunks)
            stats.sent[name] += 1
            if self.sent_log is not None:
                self._record(name, e.item)

    def _record(self, channel: str, item: MediaItemLike) -> None:
        assert self.sent_log is not None
        base = self.base_ms or 0
        start = item.start_ms if channel == "transcript" else None
        end = item.end_ms if channel == "transcript" else None
        self.sent_log.append(
            SentFrame(
                channel,
                item.user_id,
                item.user_name,
                base + item.offset_ms,
                item.data,
                None if start is None else base + start,
                None if end is None else base + end,
            )
        )

    def _flush_buffers(self, channels: tuple[int, ...]) -> None:
        """Send what was buffered for `channels` while their sockets were down."""
        out: dict[Peer, list[bytes]] = {}
        for ch in channels:
            peer = self.media[ch]
            buf = self._buffers[ch]
            if peer is None or not buf:
                continue
            while buf:
                self._emit(buf.popleft(), peer, out)
        for peer, chunks in out.items():
            peer.write(b"".join(chunks))

    def _send_malformed(self, out: dict[Peer, list[bytes]]) -> None:
        peer = next(iter(out))
        ts = self.now_ms()
        chunks = out[peer]
        while self._pending_malformed:
            chunks.append(ws_text_frame(malformed_text(self._pending_malformed.pop(0), ts)))

    def inject(self, kind: Malformed, channel: str = "audio") -> bool:
        """Send one malformed message of `kind` now on `channel`'s socket."""
        peer = self.media[CHANNEL_OF[channel]]
        return peer is not None and peer.write(ws_text_frame(malformed_text(kind, self.now_ms())))

    async def wait_media(self, offset_ms: int) -> None:
        """Until the media clock has passed `offset_ms` (and what was due then was sent)."""
        fut = asyncio.get_running_loop().create_future()
        self._offset_waiters.append((offset_ms, fut))
        await fut

    def _release_waiters(self, media_ms: float) -> None:
        keep = []
        for offset, fut in self._offset_waiters:
            if offset <= media_ms:
                if not fut.done():
                    fut.set_result(None)
            else:
                keep.append((offset, fut))
        self._offset_waiters = keep
