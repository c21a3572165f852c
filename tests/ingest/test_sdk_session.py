"""The SDK backend's reconnect paths (`ingest.sdk_session`) without the SDK: joins, URL failover,
the shared reconnect policy (at once after a drop, then backoff, budget), stops, closes,
interruptions and failovers, stale notices."""

from __future__ import annotations

import random
from typing import Any

import pytest

from ingest.backend import SessionOutcome
from ingest.rtms_client import ClientConfig
from ingest.sdk_session import (
    Action,
    CloseStream,
    Finish,
    HostLost,
    Join,
    JoinConfirmed,
    Leave,
    ReconnectRequested,
    Rejoined,
    SdkError,
    SdkLeft,
    SdkPhase,
    SdkSession,
    SessionFailed,
    StopRequested,
    Wait,
)

URL1, URL2 = "ws://127.0.0.1:1/a", "ws://127.0.0.1:2/b"
CONFIG = ClientConfig(
    "id", "secret", backoff_base_s=1.0, backoff_cap_s=8.0, max_attempts=3, handshake_timeout_s=2.0
)


class Harness:
    """Drives an `SdkSession` as the backend does: each Join gets the next sid at the current time."""

    def __init__(self, urls: str = URL1, config: ClientConfig = CONFIG) -> None:
        self.m = SdkSession(urls, config, random.Random(1))
        self.now = 100.0
        self.wall_ms = 1_000
        self.sid = 0
        self.joined: list[str] = []

    def run(self, actions: list[Action]) -> list[Action]:
        for action in actions:
            if isinstance(action, Join):
                self.sid += 1
                self.joined.append(action.url)
                self.m.on_join_started(self.sid, self.now)
        return actions

    def start(self) -> list[Action]:
        return self.run(self.m.start(self.now))

    def notice(self, notice: Any) -> list[Action]:
        self.wall_ms += 10
        return self.run(self.m.on_notice(notice, self.now, self.wall_ms))

    def tick(self, advance_s: float) -> list[Action]:
        self.now += advance_s
        return self.run(self.m.on_tick(self.now))

    def streaming(self) -> None:
        self.notice(JoinConfirmed(self.sid, 0))
        assert self.m.phase is SdkPhase.STREAMING


def outcome(actions: list[Action]) -> SessionOutcome:
    assert isinstance(actions[-1], Finish), actions
    return actions[-1].outcome


def test_first_join_goes_to_the_first_url_and_a_confirmation_means_streaming() -> None:
    h = Harness(f"{URL1},{URL2}")
    assert h.start() == [Join(URL1)]
    assert h.m.ready_count == 0 and h.m.next_deadline() == h.now + CONFIG.handshake_timeout_s
    h.streaming()
    assert h.m.ready_count == 1 and h.m.next_deadline() is None  # no confirmation timeout any more


def test_no_confirmation_in_time_tries_the_next_url_then_backs_off_and_starts_over() -> None:
    h = Harness(f"{URL1},{URL2}")
    h.start()
    assert h.tick(CONFIG.handshake_timeout_s - 0.1) == []  # not yet
    assert h.tick(0.1) == [Leave(1), Join(URL2)]
    actions = h.tick(CONFIG.handshake_timeout_s)
    assert actions[0] == Leave(2) and isinstance(actions[1], Wait)
    assert (
        CONFIG.backoff_base_s / 2 <= actions[1].delay_s <= CONFIG.backoff_base_s
    )  # never streamed: no free retry
    assert h.tick(actions[1].delay_s) == [Join(URL1)]


def test_a_drop_after_streaming_rejoins_at_once_and_a_second_drop_soon_after_backs_off() -> None:
    h = Harness()
    h.start()
    h.streaming()
    actions = h.notice(SdkLeft(h.sid, 960))  # a socket closed without TERMINATED
    assert actions == [Leave(1), Wait(0.0)]
    assert h.tick(0.0) == [Join(URL1)]
    h.streaming()
    h.now += CONFIG.backoff_base_s / 2  # the link flaps
    actions = h.notice(HostLost(h.sid, "SDK host exited (-11)"))
    assert actions[0] == Leave(2) and isinstance(actions[1], Wait) and actions[1].delay_s > 0
    assert h.m.ready_count == 2


def test_the_old_policy_backs_off_after_a_drop_too() -> None:
    h = Harness(config=ClientConfig("id", "secret", backoff_base_s=1.0, reconnect_at_once=False))
    h.start()
    h.streaming()
    actions = h.notice(SdkLeft(h.sid, 960))
    assert isinstance(actions[1], Wait) and actions[1].delay_s >= 0.5


def test_consecutive_failures_spend_the_budget_and_streaming_resets_it() -> None:
    h = Harness()
    h.start()
    for _ in range(CONFIG.max_attempts):
        actions = h.notice(JoinConfirmed(h.sid, 8))  # the previous owner still holds the stream
        assert isinstance(actions[-1], Wait)
        h.tick(actions[-1].delay_s)
    h.streaming()  # a success: a fresh budget
    for _ in range(CONFIG.max_attempts):
        actions = h.notice(SdkLeft(h.sid, 1001))
        assert isinstance(actions[-1], Wait)
        h.tick(actions[-1].delay_s + CONFIG.backoff_base_s)
    got = outcome(h.notice(JoinConfirmed(h.sid, 8)))
    assert got.ended and got.detail == f"gave up after {CONFIG.max_attempts} attempts: join status 8"
    assert h.m.phase is SdkPhase.FINISHED and h.m.next_deadline() is None


@pytest.mark.parametrize(
    ("notice", "expected"),
    [
        (JoinConfirmed(1, 3), SessionOutcome(ended=True, stop_reason=None, detail="handshake status 3")),
        (SdkLeft(1, 6), SessionOutcome(ended=True, stop_reason=6, detail="stream terminated")),
        (SdkLeft(1, -1), SessionOutcome(ended=True, stop_reason=0, detail="stream terminated")),
        (SessionFailed(1, "boom"), SessionOutcome(ended=False, detail="session failed: boom")),
    ],
)
def test_what_ends_the_session(notice: Any, expected: SessionOutcome) -> None:
    h = Harness()
    h.start()
    actions = h.notice(notice)
    assert actions[0] == Leave(1) and outcome(actions) == expected


def test_stop_leaves_and_a_close_goes_through_close_stream() -> None:
    left = Harness()
    left.start()
    left.streaming()
    assert left.notice(StopRequested(False)) == [Leave(1), Finish(SessionOutcome(ended=False, detail="left"))]
    closing = Harness()
    closing.start()
    closing.streaming()
    assert closing.notice(StopRequested(True)) == [Leave(1), CloseStream()]
    assert closing.notice(SdkLeft(1, 6)) == []  # nothing matters while the close is out
    assert outcome(closing.m.on_stream_closed(True)) == SessionOutcome(True, 20, "closed by us")
    timed_out = Harness()
    timed_out.start()
    timed_out.notice(StopRequested(True))
    assert outcome(timed_out.m.on_stream_closed(False)) == SessionOutcome(True, 20, "close timed out")


def test_stop_while_backing_off_has_no_join_to_leave() -> None:
    h = Harness()
    h.start()
    h.notice(JoinConfirmed(h.sid, 8))
    assert h.m.phase is SdkPhase.WAITING
    assert h.notice(StopRequested(True)) == [CloseStream()]


def test_an_interruption_is_news_only_if_the_sdk_has_not_healed_it_since() -> None:
    h = Harness()
    h.start()
    assert h.notice(ReconnectRequested(None, 0)) == []  # still joining: ignored
    h.streaming()
    healed = h.m.ready_at_wall_ms
    assert h.notice(ReconnectRequested(None, healed)) == []  # streaming again since the webhook's time
    assert h.notice(Rejoined(h.sid)) == [] and h.m.ready_count == 2
    assert h.notice(ReconnectRequested(None, h.wall_ms + 1)) == [Leave(1), Join(URL1)]


def test_a_failover_joins_the_new_url_at_once_even_while_backing_off() -> None:
    h = Harness()
    h.start()
    h.streaming()
    assert h.notice(ReconnectRequested(URL2, None)) == [Leave(1), Join(URL2)]
    h.notice(JoinConfirmed(h.sid, 8))
    assert h.m.phase is SdkPhase.WAITING
    assert h.notice(ReconnectRequested(URL1, None)) == [Join(URL1)]


def test_notices_about_an_earlier_join_are_ignored() -> None:
    h = Harness()
    h.start()
    h.streaming()
    h.notice(SdkLeft(h.sid, 960))
    h.tick(0.0)  # joined again as sid 2
    assert h.notice(SdkLeft(1, 6)) == [] and h.notice(JoinConfirmed(1, 0)) == []
    assert h.m.ready_count == 1 and h.m.phase is SdkPhase.CONFIRMING
    assert h.notice(SdkError(2, "noise")) == []
    assert h.notice(JoinConfirmed(2, 0)) == [] and h.m.ready_count == 2  # the live sid counts


def test_no_allowed_url_ends_before_any_join() -> None:
    h = Harness("wss://evil.example/x", ClientConfig("id", "secret", allowed_hosts=("*.zoom.us",)))
    assert h.start() == [Finish(SessionOutcome(ended=True, detail="no allowed server_urls"))]
    assert h.joined == []
