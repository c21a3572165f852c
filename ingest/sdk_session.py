"""One SDK session's join / rejoin / give-up decisions, without I/O (the SDK backend is its shell).

`SdkSession` is fed typed notices and the time and answers with actions (`Join`, `Leave`, `Wait`,
`CloseStream`, `Finish`); it uses the WebSocket client's `ingest.reconnect.Backoff` and tries each server URL
in order with its own join timeout."""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import Enum

import rtms_protocol as proto
from ingest import metrics
from ingest.allowlist import DisallowedUrl, check_url, split_server_urls
from ingest.backend import SessionOutcome
from ingest.rtms_client import ClientConfig
from ingest.sdk_plan import join_status_decision, leave_decision
from rtmsflow.logs import get_logger

log = get_logger(__name__)

# --- notices: what the shell tells the machine ------------------------------------------------------


@dataclass(frozen=True)
class StopRequested:
    """The owner leaves; `close_stream` asks Zoom to end the stream."""

    close_stream: bool


@dataclass(frozen=True)
class ReconnectRequested:
    """`rtms_interrupted` (no URLs; `since_ms` = the webhook's time) or a failover (new URLs)."""

    server_urls: str | None
    since_ms: int | None


@dataclass(frozen=True)
class JoinConfirmed:
    """`on_join_confirm(status)` of the SDK client `sid`."""

    sid: int
    status: int


@dataclass(frozen=True)
class SdkLeft:
    """`on_leave(reason)` of the SDK client `sid`."""

    sid: int
    reason: int


@dataclass(frozen=True)
class Rejoined:
    """The SDK rejoined by itself (a second FIRST_PACKET_TIMESTAMP on `sid`)."""

    sid: int


@dataclass(frozen=True)
class HostLost:
    """The SDK host process of `sid` is gone (it crashed, or could not be reached)."""

    sid: int
    why: str


@dataclass(frozen=True)
class SessionFailed:
    """The frame handler failed on a frame of `sid`: the session ends."""

    sid: int
    why: str


@dataclass(frozen=True)
class SdkError:
    """The host reported an error for `sid` (logged; the join goes on)."""

    sid: int
    text: str


Notice = (
    StopRequested
    | ReconnectRequested
    | JoinConfirmed
    | SdkLeft
    | Rejoined
    | HostLost
    | SessionFailed
    | SdkError
)

# --- actions: what the machine asks the shell to do -----------------------------------------------


@dataclass(frozen=True)
class Join:
    """Start a new SDK client on `url`; report its sid with `SdkSession.on_join_started(sid, now)`."""

    url: str


@dataclass(frozen=True)
class Leave:
    """Release the SDK client `sid` and wait until the host confirms (its frames are all in)."""

    sid: int


@dataclass(frozen=True)
class Wait:
    """Nothing to do until `SdkSession.next_deadline()` unless a notice comes (the backoff)."""

    delay_s: float


@dataclass(frozen=True)
class CloseStream:
    """Ask Zoom to end the stream (the SDK cannot); report with `SdkSession.on_stream_closed(confirmed)`."""


@dataclass(frozen=True)
class Finish:
    """The session is over; nothing more will be asked."""

    outcome: SessionOutcome


Action = Join | Leave | Wait | CloseStream | Finish


class SdkPhase(Enum):
    """Where an `SdkSession` stands."""

    IDLE = "idle"
    JOINING = "joining"  # a Join is out, its sid not reported yet
    CONFIRMING = "confirming"  # waiting for on_join_confirm (bounded by handshake_timeout_s)
    STREAMING = "streaming"  # confirmed: waiting for the end of this join
    WAITING = "waiting"  # backing off before the next join
    CLOSING = "closing"  # CloseStream is out
    FINISHED = "finished"


class SdkSession:
    """The decisions of one SDK-held stream. Methods take `now` (monotonic seconds) and return actions."""

    def __init__(
        self,
        server_urls: str,
        config: ClientConfig,
        rng: random.Random | None = None,
        *,
        ctx: dict[str, object] | None = None,
    ) -> None:
        self.config = config
        self.ctx = ctx or {}
        self.urls = self.allowed(server_urls)
        self.index = 0
        self.backoff = config.backoff(rng or random.Random())
        self.phase = SdkPhase.IDLE
        self.sid: int | None = None  # the live join
        self.ready_count = 0  # confirmed joins plus the SDK's own silent rejoins
        self.ready_at_wall_ms = 0
        self._ready_before = 0  # ready_count when the live join started
        self._deadline: float | None = None

    # --- inputs ----------------------------------------------------------------------------------

    def start(self, now: float) -> list[Action]:
        """Join for the first time."""
        if self.phase is not SdkPhase.IDLE:
            raise RuntimeError(f"start() in phase {self.phase.value}")
        if not self.urls:
            return self._finish(SessionOutcome(ended=True, detail="no allowed server_urls"))
        return self._join()

    def on_join_started(self, sid: int, now: float) -> None:
        """The shell started the SDK client `sid` for the last `Join`."""
        self.sid = sid
        self.phase = SdkPhase.CONFIRMING
        self._deadline = now + self.config.handshake_timeout_s

    def next_deadline(self) -> float | None:
        """When `on_tick` has something to do (None: only notices matter)."""
        return self._deadline

    def on_tick(self, now: float) -> list[Action]:
        """A deadline passed: no join confirmation in time, or the backoff is over."""
        if self._deadline is None or now < self._deadline:
            return []
        self._deadline = None
        if self.phase is SdkPhase.CONFIRMING:
            return self._attempt_over(now, "next", "no join confirmation in time")
        if self.phase is SdkPhase.WAITING:
            return self._join()
        return []

    def on_notice(self, notice: Notice, now: float, wall_ms: int) -> list[Action]:
        """One notice from the shell (stale ones, about an earlier join, are ignored)."""
        if self.phase in (SdkPhase.FINISHED, SdkPhase.CLOSING):
            return []
        if isinstance(notice, StopRequested):
            return self._stop(notice.close_stream)
        if isinstance(notice, ReconnectRequested):
            return self._reconnect(notice, now)
        if self.phase not in (SdkPhase.CONFIRMING, SdkPhase.STREAMING) or notice.sid != self.sid:
            return []  # about an earlier attempt
        if isinstance(notice, JoinConfirmed):
            decision = join_status_decision(notice.status)
            if decision == "ok":
                self.phase = SdkPhase.STREAMING
                self._deadline = None
                self._on_ready(wall_ms)
                return []
            if decision == "fatal":
                log.error("RTMS handshake refused", extra=self._ctx(status_code=notice.status))
                return self._attempt_over(now, "ended", f"handshake status {notice.status}", None)
            return self._attempt_over(now, decision, f"join status {notice.status}")
        if isinstance(notice, SdkLeft):
            action, reason = leave_decision(notice.reason)
            if action == "ended":
                log.info("RTMS stream terminated", extra=self._ctx(stop_reason=reason))
                return self._attempt_over(now, "ended", "stream terminated", reason)
            log.warning("RTMS connection lost", extra=self._ctx(sdk_reason=notice.reason))
            return self._attempt_over(now, "retry", f"connection lost (SDK reason {notice.reason})")
        if isinstance(notice, Rejoined):
            self._on_ready(wall_ms)
            return []
        if isinstance(notice, HostLost):
            return self._attempt_over(now, "retry", notice.why)
        if isinstance(notice, SessionFailed):
            return self._attempt_over(now, "failed", notice.why)
        log.warning("SDK error", extra=self._ctx(error=notice.text))
        return []

    def on_stream_closed(self, confirmed: bool) -> list[Action]:
        """The outcome of a `CloseStream`: Zoom confirmed the close within the timeout, or not."""
        return self._finish(
            SessionOutcome(
                ended=True,
                stop_reason=proto.StopReason.RECEIVER_REQUEST_CLOSE,
                detail="closed by us" if confirmed else "close timed out",
            )
        )

    def allowed(self, server_urls: str) -> list[str]:
        """The URLs of `server_urls` the allowlist permits, in order."""
        urls = []
        for url in split_server_urls(server_urls):
            try:
                check_url(url, self.config.allowed_hosts, self.config.allow_insecure_ws)
            except DisallowedUrl as exc:
                log.error("server URL not allowed", extra=self._ctx(error=str(exc)))
                continue
            urls.append(url)
        return urls

    # --- decisions -------------------------------------------------------------------------------

    def _join(self) -> list[Action]:
        self.phase = SdkPhase.JOINING
        self._ready_before = self.ready_count
        return [Join(self.urls[self.index])]

    def _leave_live(self) -> list[Action]:
        sid, self.sid = self.sid, None
        self._deadline = None
        return [Leave(sid)] if sid is not None else []

    def _stop(self, close_stream: bool) -> list[Action]:
        actions = self._leave_live()
        if not close_stream:
            return actions + self._finish(SessionOutcome(ended=False, detail="left"))
        self.phase = SdkPhase.CLOSING
        return actions + [CloseStream()]

    def _reconnect(self, notice: ReconnectRequested, now: float) -> list[Action]:
        if self.phase is SdkPhase.WAITING:
            # the wait is over: join now (to the new URLs, if any)
            if notice.server_urls:
                self.urls = self.allowed(notice.server_urls) or self.urls
            self._deadline = None
            return self._join()
        if not notice.server_urls and (
            self.phase is not SdkPhase.STREAMING
            or (notice.since_ms is not None and self.ready_at_wall_ms >= notice.since_ms)
        ):
            return []  # a drop the SDK already healed, or a join still under way
        return self._attempt_over(now, "reconnect", "", urls=notice.server_urls)

    def _attempt_over(
        self, now: float, kind: str, why: str, stop_reason: int | None = None, urls: str | None = None
    ) -> list[Action]:
        """The live join ended (`kind`: ended, failed, reconnect, next, retry): leave it, then decide."""
        actions = self._leave_live()
        streamed = self.ready_count > self._ready_before
        if streamed:
            self.backoff.reset()  # the budget counts consecutive failures since we last streamed
        if kind == "ended":
            return actions + self._finish(SessionOutcome(ended=True, stop_reason=stop_reason, detail=why))
        if kind == "failed":
            return actions + self._finish(SessionOutcome(ended=False, detail=f"session failed: {why}"))
        if kind == "reconnect":
            if urls:
                self.urls = self.allowed(urls) or self.urls
            self.index = 0
            metrics.RECONNECTS.labels(scope="failover" if urls else "interrupted").inc()
            return actions + self._join()
        # "next" / "retry": this URL did not work (now) -> the next URL, else back off
        if kind == "next" and self.index + 1 < len(self.urls):
            self.index += 1
            return actions + self._join()
        self.index = 0
        if self.backoff.spent:
            attempts = self.backoff.attempts
            log.error("RTMS reconnect budget spent", extra=self._ctx(why=why, attempts=attempts))
            return actions + self._finish(
                SessionOutcome(ended=True, detail=f"gave up after {attempts} attempts: {why}")
            )
        # a session that had streamed rejoins at once (Zoom does not buffer video through the wait)
        delay = self.backoff.delay(now, drop=streamed)
        log.info("RTMS reconnect scheduled", extra=self._ctx(why=why, delay_s=round(delay, 3)))
        self.phase = SdkPhase.WAITING
        self._deadline = now + delay
        return actions + [Wait(delay)]

    def _on_ready(self, wall_ms: int) -> None:
        self.ready_count += 1
        self.ready_at_wall_ms = wall_ms
        if self.ready_count > 1:
            metrics.RECONNECTS.labels(scope="full").inc()
        log.info("RTMS stream connected (SDK)", extra=self._ctx(connects=self.ready_count))

    def _finish(self, outcome: SessionOutcome) -> list[Action]:
        self.phase = SdkPhase.FINISHED
        self._deadline = None
        return [Finish(outcome)]

    def _ctx(self, **extra: object) -> dict[str, object]:
        return {**self.ctx, "backend": "sdk", **extra}
