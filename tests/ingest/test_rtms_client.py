"""The RTMS client state machine, driven without sockets: handshakes, keep-alives, frames,
dead letters, failover, backoff and stop."""

from __future__ import annotations

import base64
import dataclasses
import json
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rtms_protocol as proto
from ingest.backend import (
    AudioData,
    DeadLetterData,
    EventData,
    MediaLost,
    StreamSession,
    TranscriptData,
    VideoData,
)
from ingest.rtms_client import (
    SIGNALING,
    Action,
    Backoff,
    ClientConfig,
    ClientPhase,
    Connect,
    Deliver,
    Disconnect,
    Finish,
    RtmsClient,
    Send,
)

MEDIA_URLS = {k: f"ws://127.0.0.1:9/media/{k}" for k in ("audio", "video", "transcript", "deskshare")}
SESSION = StreamSession("meet==", "stream-1", "ws://127.0.0.1:9/signaling")
CONFIG = ClientConfig("cid", "csecret", backoff_base_s=1.0, backoff_cap_s=8.0, max_attempts=3)


def sent(actions: list[Action]) -> list[tuple[str, dict[str, Any]]]:
    return [(a.channel, json.loads(a.text)) for a in actions if isinstance(a, Send)]


def of(actions: list[Action], kind: type) -> list[Any]:
    return [a for a in actions if isinstance(a, kind)]


class Harness:
    """Plays the server side: opens what the client connects, answers handshakes."""

    def __init__(self, machine: RtmsClient) -> None:
        self.machine = machine
        self.now = 100.0
        self.conns: dict[str, int] = {}

    def run(self, actions: list[Action]) -> list[Action]:
        for a in actions:
            if isinstance(a, Connect):
                self.conns[a.channel] = a.conn
        return actions

    def open(self, channel: str) -> list[Action]:
        return self.run(self.machine.on_open(channel, self.conns[channel], self.now))

    def recv(self, channel: str, msg: dict[str, Any] | str | bytes, wall_ms: int = 1_000) -> list[Action]:
        raw = json.dumps(msg) if isinstance(msg, dict) else msg
        return self.run(self.machine.on_message(channel, self.conns[channel], raw, self.now, wall_ms))

    def close(self, channel: str, code: int | None = 1006) -> list[Action]:
        return self.run(self.machine.on_closed(channel, self.conns[channel], code, self.now))

    def tick(self, advance: float) -> list[Action]:
        self.now += advance
        return self.run(self.machine.on_tick(self.now))

    def connect_all(self, media_params: dict[str, Any] | None = None, wall_ms: int = 1_000) -> list[Action]:
        """Drive a full connect from start (or from a pending signaling Connect) to READY."""
        if self.machine.phase is ClientPhase.IDLE:
            self.run(self.machine.start(self.now))
        self.open(SIGNALING)
        actions = self.recv(
            SIGNALING,
            {
                "msg_type": 2,
                "status_code": 0,
                "media_server": {"server_urls": {**MEDIA_URLS, "all": "ws://x/all"}},
            },
        )
        out: list[Action] = []
        for c in of(actions, Connect):
            self.open(c.channel)
            resp: dict[str, Any] = {"msg_type": 4, "status_code": 0, "payload_encrypted": False}
            if media_params and c.channel in media_params:
                resp["media_params"] = {c.channel: media_params[c.channel]}
            out += self.recv(c.channel, resp, wall_ms)
        return out


def ready_client(config: ClientConfig = CONFIG, **kw: Any) -> Harness:
    h = Harness(RtmsClient(SESSION, config, random.Random(7)))
    h.connect_all(**kw)
    assert h.machine.phase is ClientPhase.READY
    return h


def test_happy_path_handshakes_then_ready_ack_then_subscription() -> None:
    client = RtmsClient(SESSION, CONFIG, random.Random(1))
    h = Harness(client)
    start = h.run(client.start(h.now))
    assert start == [Connect(SIGNALING, SESSION.server_urls, 1)]
    ((chan, hello),) = sent(h.open(SIGNALING))
    assert chan == SIGNALING and hello["msg_type"] == 1 and hello["meeting_uuid"] == "meet=="
    assert hello["signature"] == proto.handshake_signature("cid", "csecret", "meet==", "stream-1")
    resp = {"msg_type": 2, "status_code": 0, "media_server": {"server_urls": MEDIA_URLS}}
    connects = of(h.recv(SIGNALING, resp), Connect)
    assert [c.channel for c in connects] == ["audio", "video", "transcript"]  # deskshare off by default
    last: list[Action] = []
    for c in connects:
        ((_, req),) = sent(h.open(c.channel))
        assert (
            req["msg_type"] == 3 and req["media_type"] == {"audio": 1, "video": 2, "transcript": 8}[c.channel]
        )
        assert req["signature"] == hello["signature"]
        if c.channel == "audio":
            assert (
                req["media_params"]["audio"]["data_opt"] == 1 and req["media_params"]["audio"]["codec"] == 1
            )
        if c.channel == "transcript":
            assert req["media_params"]["transcript"]["src_language"] == -1
        assert sent(last) == []  # no ready-ack before every media handshake is answered
        last = h.recv(c.channel, {"msg_type": 4, "status_code": 0, "payload_encrypted": False})
    (c1, ack), (c2, sub) = sent(last)
    assert (c1, ack) == (SIGNALING, {"msg_type": 7, "rtms_stream_id": "stream-1"})
    assert c2 == SIGNALING and sub["msg_type"] == 5
    assert {e["event_type"] for e in sub["events"]} == {2, 3, 4, 5, 6, 8, 9}
    assert client.phase is ClientPhase.READY


def test_options_multi_stream_audio_deskshare_and_language_hint() -> None:
    config = ClientConfig("c", "s", audio_multi=True, deskshare=True, transcript_language=9)
    h = Harness(RtmsClient(SESSION, config))
    h.run(h.machine.start(h.now))
    h.open(SIGNALING)
    connects = of(
        h.recv(SIGNALING, {"msg_type": 2, "status_code": 0, "media_server": {"server_urls": MEDIA_URLS}}),
        Connect,
    )
    assert [c.channel for c in connects] == ["audio", "video", "deskshare", "transcript"]
    reqs = {c.channel: sent(h.open(c.channel))[0][1] for c in connects}
    assert reqs["audio"]["media_params"]["audio"]["data_opt"] == 2
    assert reqs["deskshare"]["media_type"] == 4
    assert reqs["transcript"]["media_params"]["transcript"]["src_language"] == 9


def test_frames_decoded_with_the_granted_params_in_receive_order() -> None:
    granted = {"audio": {"codec": 1, "sample_rate": 3, "channel": 2, "data_opt": 2, "send_rate": 40},
               "video": {"codec": 7, "resolution": 1, "fps": 10}}  # fmt: skip
    h = ready_client(media_params=granted)
    pcm, h264 = b"\x01\x02" * 10, b"\x00\x00\x00\x01\x67xyz"
    a = h.recv("audio", {"msg_type": 14, "content": {"user_id": 7, "user_name": "Ann", "timestamp": 5,
                                                     "data": base64.b64encode(pcm).decode()}})  # fmt: skip
    v = h.recv(
        "video",
        {"msg_type": 15, "content": {"user_id": 7, "timestamp": 6, "data": base64.b64encode(h264).decode()}},
    )
    t = h.recv("transcript", {"msg_type": 17, "content": {"user_id": 7, "timestamp": 7, "data": "héllo"}})
    (audio,), (video,), (text,) = (
        (x.item for x in of(a, Deliver)),
        (x.item for x in of(v, Deliver)),
        (x.item for x in of(t, Deliver)),
    )
    assert isinstance(audio, AudioData) and audio.payload == pcm and audio.participant_name == "Ann"
    assert (
        audio.params.sample_rate,
        audio.params.channels,
        audio.params.send_rate_ms,
        audio.params.mixed,
    ) == (48000, 2, 40, False)
    assert isinstance(video, VideoData) and video.payload == h264 and video.kind == "VIDEO"
    assert (video.params.codec, video.params.width, video.params.height, video.params.fps) == (
        "H264",
        640,
        360,
        10,
    )
    assert video.participant_name is None  # missing user_name is defaulted, not fatal
    assert (
        isinstance(text, TranscriptData)
        and text.text == "héllo"
        and text.language is None
        and text.start_time_ms == 0
    )


def test_keep_alive_answered_on_the_socket_it_came_on() -> None:
    h = ready_client()
    for chan in (SIGNALING, "video"):
        actions = h.recv(chan, {"msg_type": 12, "timestamp": 1795480540077, "sequence": 3})
        assert sent(actions) == [(chan, {"msg_type": 13, "sequence": 3, "timestamp": 1795480540077})]
        assert of(actions, Send)[0].conn == h.conns[chan]
    assert sent(h.recv("audio", {"msg_type": 12, "timestamp": 9})) == [
        ("audio", {"msg_type": 13, "timestamp": 9})
    ]


@pytest.mark.parametrize(
    ("channel", "raw", "error"),
    [
        ("audio", "{not json", "ProtocolError.bad_json"),
        (
            "audio",
            json.dumps({"msg_type": 14, "content": {"timestamp": 1, "data": "@@not base64@@"}}),
            "ProtocolError.bad_base64",
        ),
        ("video", json.dumps({"msg_type": 15, "content": {"data": "AAAA"}}), "ProtocolError.missing_field"),
        ("audio", json.dumps({"msg_type": 99, "content": {}}), "ProtocolError.unknown_msg_type"),
        (SIGNALING, json.dumps({"msg_type": 77}), "ProtocolError.unknown_msg_type"),
        (SIGNALING, json.dumps({"msg_type": 6}), "ProtocolError.missing_field"),
        (
            "transcript",
            b'{"msg_type": 17, "content": {"timestamp": "x", "data": "a"}}',
            "ProtocolError.bad_field",
        ),
    ],
)
def test_malformed_message_becomes_a_dead_letter_and_the_meeting_goes_on(
    channel: str, raw: str | bytes, error: str
) -> None:
    h = ready_client()
    (deliver,) = h.recv(channel, raw)
    assert isinstance(deliver, Deliver) and isinstance(deliver.item, DeadLetterData)
    letter = deliver.item
    assert letter.error == error
    assert letter.payload == (raw.encode() if isinstance(raw, str) else raw)
    assert letter.source == ("ws:signaling" if channel == SIGNALING else f"ws:media/{channel}")
    assert h.machine.phase is ClientPhase.READY
    ok = h.recv("audio", {"msg_type": 14, "content": {"timestamp": 2, "data": "AAA="}})
    assert isinstance(of(ok, Deliver)[0].item, AudioData)


def test_events_and_state_updates_are_delivered_with_their_body() -> None:
    h = ready_client()
    join = {
        "msg_type": 6,
        "event": {"event_type": 3, "timestamp": 11, "participants": [{"user_id": 1, "user_name": "A"}]},
    }
    (d,) = h.recv(SIGNALING, join)
    assert (
        isinstance(d.item, EventData)
        and d.item.name == "participant_join"
        and d.item.participants[0].user_name == "A"
    )
    assert json.loads(d.item.body) == join
    (d,) = h.recv(SIGNALING, {"msg_type": 9, "state": 2, "timestamp": 12, "rtms_session_id": "sess"})
    assert d.item.name == "session_state" and d.item.rtms_session_id == "sess" and d.item.state == 2


def test_comma_separated_server_urls_are_tried_in_order() -> None:
    session = StreamSession("m", "s", "ws://127.0.0.1:1/a, ws://127.0.0.1:2/b")
    h = Harness(RtmsClient(session, CONFIG))
    (c,) = h.run(h.machine.start(h.now))
    assert c.url == "ws://127.0.0.1:1/a"
    (c2,) = h.run(h.machine.on_open_failed(SIGNALING, c.conn, "refused", h.now))
    assert isinstance(c2, Connect) and c2.url == "ws://127.0.0.1:2/b"
    assert h.run(h.machine.on_open_failed(SIGNALING, c2.conn, "refused", h.now)) == []
    assert h.machine.phase is ClientPhase.BACKOFF
    (c3,) = h.tick(CONFIG.backoff_cap_s)
    assert isinstance(c3, Connect) and c3.url == "ws://127.0.0.1:1/a"


def test_duplicate_signal_request_is_retried_after_backoff() -> None:
    h = Harness(RtmsClient(SESSION, CONFIG, random.Random(3)))
    h.run(h.machine.start(h.now))
    h.open(SIGNALING)
    actions = h.recv(SIGNALING, {"msg_type": 2, "status_code": 8, "reason": "duplicate signal request"})
    assert of(actions, Disconnect) == [Disconnect(SIGNALING, 1)]
    assert h.machine.phase is ClientPhase.BACKOFF
    deadline = h.machine.next_deadline()
    assert deadline is not None and h.now + 0.5 <= deadline <= h.now + 1.0
    assert h.tick(0.4) == []
    assert of(h.tick(0.7), Connect) == [Connect(SIGNALING, SESSION.server_urls, 2)]
    h.connect_all()
    assert h.machine.phase is ClientPhase.READY and h.machine.backoff.attempts == 0


@pytest.mark.parametrize("status", [2, 3, 45])
def test_other_handshake_statuses_are_fatal(status: int) -> None:
    h = Harness(RtmsClient(SESSION, CONFIG))
    h.run(h.machine.start(h.now))
    h.open(SIGNALING)
    actions = h.recv(SIGNALING, {"msg_type": 2, "status_code": status, "reason": "no"})
    (finish,) = of(actions, Finish)
    assert finish.outcome.ended and f"status {status}" in finish.outcome.detail
    assert of(actions, Disconnect) == [Disconnect(SIGNALING, 1)]


def test_dropped_media_socket_reconnects_only_that_socket() -> None:
    h = ready_client()
    assert h.close("video") == [Deliver(MediaLost("video"))]  # the producer lists the loss in band
    (c,) = h.tick(1.0)
    assert c == Connect("video", MEDIA_URLS["video"], c.conn) and c.conn > 4
    assert sent(h.open("video"))[0][1]["msg_type"] == 3
    again = h.recv("video", {"msg_type": 4, "status_code": 0, "payload_encrypted": False})
    assert again == []  # no second ready-ack, signaling and the other media untouched
    assert h.machine.phase is ClientPhase.READY


def test_dropped_signaling_reconnects_signaling_and_media() -> None:
    h = ready_client()
    old = dict(h.conns)
    actions = h.close(SIGNALING)
    assert {(d.channel, d.conn) for d in of(actions, Disconnect)} == {
        (k, old[k]) for k in ("audio", "video", "transcript")
    }
    assert {d.item for d in of(actions, Deliver)} == {MediaLost(k) for k in ("audio", "video", "transcript")}
    assert h.machine.phase is ClientPhase.BACKOFF
    (c,) = h.tick(1.0)
    assert c.channel == SIGNALING
    final = h.connect_all()
    assert [m["msg_type"] for _, m in sent(final)] == [7, 5]
    # a late close of an old socket is stale and changes nothing
    assert h.machine.on_closed("audio", old["audio"], 1006, h.now) == []
    assert h.machine.phase is ClientPhase.READY


def test_silent_media_socket_is_treated_as_lost() -> None:
    h = ready_client()
    h.recv(SIGNALING, {"msg_type": 12, "timestamp": 1})
    h.now += CONFIG.idle_timeout_s - 1
    for chan in (SIGNALING, "audio", "transcript"):
        h.recv(chan, {"msg_type": 12, "timestamp": 2})
    old_video = h.conns["video"]
    actions = h.tick(1.5)
    assert of(actions, Disconnect) == [Disconnect("video", old_video)]
    # a socket that was working is reconnected at once, in the same tick
    assert [c.channel for c in of(actions, Connect)] == ["video"]


AUDIO_FRAME = {"msg_type": 14, "content": {"user_id": 0, "data": "AAAA", "timestamp": 60}}


def close_media(h: Harness, actions: list[Action]) -> list[Action]:
    """The server answers each draining socket's close: the client's last actions."""
    out: list[Action] = []
    for d in of(actions, Disconnect):
        if d.drain:
            out += h.close(d.channel, 1000)
    return out


def test_stream_terminated_closes_signaling_and_drains_media_before_finishing() -> None:
    """TERMINATED on signaling can overtake frames still on their way on a media socket: the media
    sockets close with a handshake and what they deliver meanwhile still counts; the session ends
    with the stream's reason once every one of them has closed."""
    h = ready_client()
    actions = h.recv(SIGNALING, {"msg_type": 8, "state": 4, "reason": 6, "timestamp": 50})
    assert isinstance(actions[0], Deliver) and actions[0].item.name == "stream_state"
    closes = of(actions, Disconnect)
    assert {d.code for d in closes} == {1000} and len(closes) == 4
    assert {d.channel for d in closes if d.drain} == {"audio", "video", "transcript"}  # media drains
    assert [d.drain for d in closes if d.channel == SIGNALING] == [False]
    assert of(actions, Finish) == [] and h.machine.phase is ClientPhase.DRAINING
    (late,) = of(h.recv("audio", AUDIO_FRAME), Deliver)  # a frame that was behind the TERMINATED
    assert late.item.timestamp_ms == 60 and late.item.payload == b"\0\0\0"
    assert h.run(h.machine.request_stop(h.now, close_stream=False)) == []  # already leaving
    assert h.close("audio", 1000) == [] and h.close("video", 1000) == []
    (finish,) = of(h.close("transcript", 1000), Finish)
    assert finish.outcome.ended and finish.outcome.stop_reason == 6 and h.machine.finished
    assert finish.outcome.detail == "stream terminated"


def test_a_media_socket_that_never_closes_is_given_up_after_the_close_timeout() -> None:
    h = ready_client()
    h.recv(SIGNALING, {"msg_type": 8, "state": 4, "reason": 6, "timestamp": 50})
    assert h.machine.next_deadline() == h.now + CONFIG.close_timeout_s  # not the idle timeouts
    assert h.tick(CONFIG.close_timeout_s - 0.1) == []
    actions = h.tick(0.2)
    assert len(of(actions, Disconnect)) == 3 and not any(d.drain for d in of(actions, Disconnect))
    (finish,) = of(actions, Finish)
    assert finish.outcome.ended and finish.outcome.stop_reason == 6
    assert finish.outcome.detail == "stream terminated (media not closed in time)"


def test_stop_with_close_stream_sends_21_and_waits_for_22() -> None:
    h = ready_client()
    actions = h.run(h.machine.request_stop(h.now, close_stream=True))
    assert sent(actions) == [(SIGNALING, {"msg_type": 21, "rtms_stream_id": "stream-1"})]
    done = h.recv(SIGNALING, {"msg_type": 22, "rtms_stream_id": "stream-1", "status_code": 0})
    assert len(of(done, Disconnect)) == 4 and of(done, Finish) == []
    assert of(close_media(h, done), Finish)[0].outcome.stop_reason == 20


def test_stop_with_close_stream_gives_up_waiting_after_the_timeout() -> None:
    h = ready_client()
    h.run(h.machine.request_stop(h.now, close_stream=True))
    assert h.tick(CONFIG.close_timeout_s - 0.1) == []
    assert of(h.tick(0.2), Finish)[0].outcome.ended


def test_leave_without_closing_the_stream() -> None:
    h = ready_client()
    actions = h.run(h.machine.request_stop(h.now, close_stream=False))
    assert len(of(actions, Disconnect)) == 4 and of(actions, Finish) == []
    assert h.run(h.machine.request_stop(h.now, close_stream=False)) == []  # idempotent
    assert not of(close_media(h, actions), Finish)[0].outcome.ended


def test_leave_before_media_is_up_finishes_at_once() -> None:
    h = Harness(RtmsClient(SESSION, CONFIG, random.Random(7)))
    h.run(h.machine.start(h.now))
    h.open(SIGNALING)
    actions = h.run(h.machine.request_stop(h.now, close_stream=False))
    assert [d.drain for d in of(actions, Disconnect)] == [False]
    assert not of(actions, Finish)[0].outcome.ended


def test_failover_reconnects_everything_to_the_new_url_at_once() -> None:
    h = ready_client()
    actions = h.run(h.machine.request_reconnect(h.now, "ws://127.0.0.1:10/new"))
    assert len(of(actions, Disconnect)) == 4
    assert of(actions, Connect) == [Connect(SIGNALING, "ws://127.0.0.1:10/new", h.conns[SIGNALING])]


def test_interrupted_webhook_older_than_our_reconnect_is_ignored() -> None:
    h = Harness(RtmsClient(SESSION, CONFIG))
    h.connect_all(wall_ms=5_000)
    assert h.machine.request_reconnect(h.now, None, since_wall_ms=4_000) == []
    actions = h.machine.request_reconnect(h.now, None, since_wall_ms=6_000)
    assert of(actions, Connect) and of(actions, Disconnect)


def test_reconnect_budget_ends_the_session() -> None:
    h = Harness(RtmsClient(SESSION, CONFIG, random.Random(5)))
    (c,) = h.run(h.machine.start(h.now))
    finish: list[Finish] = []
    for _ in range(CONFIG.max_attempts + 1):
        actions = h.run(h.machine.on_open_failed(SIGNALING, h.conns[SIGNALING], "refused", h.now))
        finish = of(actions, Finish)
        if finish:
            break
        h.tick(CONFIG.backoff_cap_s)
    assert finish and finish[0].outcome.ended and "gave up" in finish[0].outcome.detail


def test_backoff_is_jittered_exponential_capped_and_resets() -> None:
    b = Backoff(3.0, 30.0, random.Random(0))
    delays = [b.next_delay() for _ in range(6)]
    for n, d in enumerate(delays):
        full = min(30.0, 3.0 * 2**n)
        assert full / 2 <= d <= full
    b.reset()
    assert b.next_delay() <= 3.0


# --- reconnect policy: a dropped working socket comes back at once -----------------------------


def only_connect(actions: list[Action]) -> Connect:
    """The single action, which must be a Connect."""
    (action,) = actions
    assert isinstance(action, Connect)
    return action


def test_first_reconnect_after_a_media_drop_is_immediate() -> None:
    h = ready_client()
    assert h.close("video") == [Deliver(MediaLost("video"))]
    assert h.machine.next_deadline() == h.now  # due now: the shell ticks before it waits again
    c = only_connect(h.tick(0.0))
    assert c == Connect("video", MEDIA_URLS["video"], c.conn) and c.conn > 4
    h.open("video")
    assert h.recv("video", {"msg_type": 4, "status_code": 0, "payload_encrypted": False}) == []
    assert h.machine.phase is ClientPhase.READY and h.machine.media["video"].backoff.attempts == 0


def test_old_policy_waits_out_the_first_backoff_after_a_drop() -> None:
    """Control for the test above: the same drop under `reconnect_at_once=False`."""
    h = ready_client(dataclasses.replace(CONFIG, reconnect_at_once=False))
    h.close("video")
    deadline = h.machine.next_deadline()
    assert deadline is not None and h.now + 0.5 <= deadline <= h.now + 1.0
    assert h.tick(0.49) == []
    assert of(h.tick(0.51), Connect)[0].channel == "video"


def test_consecutive_failures_after_the_immediate_retry_back_off_exponentially() -> None:
    h = ready_client()
    h.close("video")
    c = only_connect(h.tick(0.0))
    delays = []
    for _ in range(CONFIG.max_attempts - 1):
        assert h.run(h.machine.on_open_failed("video", c.conn, "refused", h.now)) == []
        retry_at = h.machine.media["video"].retry_at
        assert retry_at is not None
        delays.append(retry_at - h.now)
        assert h.tick(delays[-1] - 0.01) == []
        c = only_connect(h.tick(0.01))
        assert c.channel == "video"
    # base 1 s: the 2nd attempt waits 0.5-1 s, the 3rd 1-2 s (jittered to 50-100 %)
    assert 0.5 <= delays[0] <= 1.0 and 1.0 <= delays[1] <= 2.0
    # the budget counts the immediate retry: the next failure is the max_attempts-th
    actions = h.run(h.machine.on_open_failed("video", c.conn, "refused", h.now))
    assert h.machine.phase is ClientPhase.BACKOFF and len(of(actions, Disconnect)) == 3
    deadline = h.machine.next_deadline()
    assert deadline is not None and deadline >= h.now + 0.5  # escalation to a full reconnect backs off


def test_backoff_resets_after_a_successful_reconnect() -> None:
    h = ready_client()
    h.close("video")
    c = only_connect(h.tick(0.0))
    h.run(h.machine.on_open_failed("video", c.conn, "refused", h.now))
    c = only_connect(h.tick(1.0))
    h.open("video")
    h.recv("video", {"msg_type": 4, "status_code": 0, "payload_encrypted": False})
    assert h.machine.media["video"].backoff.attempts == 0
    h.now += CONFIG.backoff_base_s  # a later drop, not a flapping link
    h.close("video")
    assert h.machine.next_deadline() == h.now
    assert of(h.tick(0.0), Connect)[0].channel == "video"


def test_a_link_that_drops_again_within_the_base_delay_backs_off() -> None:
    h = ready_client()
    h.close("video")
    h.tick(0.0)
    h.open("video")
    h.recv("video", {"msg_type": 4, "status_code": 0, "payload_encrypted": False})
    h.now += CONFIG.backoff_base_s / 2
    h.close("video")
    deadline = h.machine.next_deadline()
    assert deadline is not None and h.now + 0.5 <= deadline <= h.now + 1.0


def test_signaling_drop_reconnects_at_once_and_a_status_8_then_backs_off() -> None:
    h = ready_client()
    h.close(SIGNALING)
    assert h.machine.phase is ClientPhase.BACKOFF and h.machine.next_deadline() == h.now
    c = only_connect(h.tick(0.0))
    assert c == Connect(SIGNALING, SESSION.server_urls, c.conn)
    h.open(SIGNALING)
    # Zoom has not noticed the old socket yet: duplicate signal request -> wait, do not hammer
    actions = h.recv(SIGNALING, {"msg_type": 2, "status_code": 8, "reason": "duplicate signal request"})
    assert of(actions, Disconnect) == [Disconnect(SIGNALING, c.conn)]
    deadline = h.machine.next_deadline()
    assert h.machine.phase is ClientPhase.BACKOFF and deadline is not None
    assert h.now + 0.5 <= deadline <= h.now + 1.0
    assert h.tick(0.49) == []
    assert of(h.tick(0.51), Connect)[0].channel == SIGNALING
    h.connect_all()
    assert (
        h.machine.phase is ClientPhase.READY
        and h.machine.backoff.attempts == 0
        and h.machine.ready_count == 2
    )


def test_a_duplicate_media_connection_after_the_immediate_retry_backs_off() -> None:
    h = ready_client()
    h.close("video")
    c = only_connect(h.tick(0.0))
    h.open("video")
    refused = h.recv("video", {"msg_type": 4, "status_code": 16, "reason": "duplicate media connection"})
    assert refused == [Disconnect("video", c.conn)]
    retry_at = h.machine.media["video"].retry_at
    assert retry_at is not None and h.now + 0.5 <= retry_at <= h.now + 1.0


def test_an_unanswered_media_handshake_is_a_failure_not_a_drop() -> None:
    h = Harness(RtmsClient(SESSION, CONFIG, random.Random(7)))
    h.run(h.machine.start(h.now))
    h.open(SIGNALING)
    connects = of(
        h.recv(SIGNALING, {"msg_type": 2, "status_code": 0, "media_server": {"server_urls": MEDIA_URLS}}),
        Connect,
    )
    for c in connects:
        h.open(c.channel)
        if c.channel != "video":  # video's handshake is never answered
            h.recv(c.channel, {"msg_type": 4, "status_code": 0, "payload_encrypted": False})
    actions = h.tick(CONFIG.handshake_timeout_s)
    assert of(actions, Disconnect) == [Disconnect("video", h.conns["video"])] and not of(actions, Connect)
    retry_at = h.machine.media["video"].retry_at
    assert retry_at is not None and h.now + 0.5 <= retry_at <= h.now + 1.0


def test_backoff_after_drop_is_immediate_once_then_exponential() -> None:
    b = Backoff(3.0, 30.0, random.Random(0))
    assert b.after_drop(100.0) == 0.0 and b.attempts == 1
    later = [b.after_drop(100.0) for _ in range(4)]  # consecutive failures of that retry
    for n, d in enumerate(later):
        assert 3.0 * 2**n / 2 <= d <= 3.0 * 2**n
    assert b.attempts == 5
    b.reset()
    assert 1.5 <= b.after_drop(102.0) <= 3.0  # within base_s of the last immediate retry: flapping
    b.reset()
    assert b.after_drop(103.0) == 0.0
    b.reset()
    assert 1.5 <= b.next_delay() <= 3.0  # a plain failure (no drop) never skips the wait


# --- individual video -------------------------------------------------------------------------------

INDIVIDUAL = dataclasses.replace(CONFIG, video_individual=True, video_participants_max=2)


def subscriptions(actions: list[Action]) -> list[tuple[int, bool]]:
    return [
        (m["user_id"], m["subscribe"]) for ch, m in sent(actions) if ch == SIGNALING and m["msg_type"] == 28
    ]


def join(h: Harness, *uids: int, event_type: int = 3) -> list[Action]:
    people = [{"user_id": u, "user_name": f"u{u}"} for u in uids]
    return h.recv(
        SIGNALING,
        {"msg_type": 6, "event": {"event_type": event_type, "timestamp": 5, "participants": people}},
    )


def test_individual_video_asks_data_opt_4_and_subscribes_each_joining_camera_up_to_the_limit() -> None:
    client = RtmsClient(SESSION, INDIVIDUAL, random.Random(1))
    h = Harness(client)
    h.run(client.start(h.now))
    h.open(SIGNALING)
    resp = {"msg_type": 2, "status_code": 0, "media_server": {"server_urls": MEDIA_URLS}}
    for c in of(h.recv(SIGNALING, resp), Connect):
        ((_, hello),) = sent(h.open(c.channel))
        if c.channel == "video":
            assert hello["media_params"]["video"]["data_opt"] == 4
        ready = h.recv(c.channel, {"msg_type": 4, "status_code": 0})
    assert [m["msg_type"] for _, m in sent(ready)] == [7, 5]  # nobody to subscribe yet
    assert client.phase is ClientPhase.READY
    actions = join(h, 11, 12, 13)
    assert [type(a) for a in actions][0] is Deliver  # the event is recorded as ever
    assert subscriptions(actions) == [(11, True), (12, True)]
    assert subscriptions(join(h, 11, event_type=4)) == [(11, False), (13, True)]
    refused = {"msg_type": 29, "user_id": 13, "status_code": 25, "reason": "too many", "timestamp": 6}
    actions = h.recv(SIGNALING, refused)
    assert [a.item.name for a in of(actions, Deliver)] == ["video_subscription"]
    assert subscriptions(actions) == []  # nobody else is waiting


def test_individual_video_subscribes_again_after_a_signaling_reconnect() -> None:
    h = ready_client(INDIVIDUAL)
    join(h, 11, 12)
    h.close(SIGNALING)
    h.tick(1.0)
    final = h.connect_all()
    assert [m["msg_type"] for _, m in sent(final)] == [7, 5, 28, 28]
    assert subscriptions(final) == [(11, True), (12, True)]


def test_active_speaker_video_never_subscribes_a_camera() -> None:
    h = ready_client()
    assert subscriptions(join(h, 11, 12)) == []
    assert sent(join(h, 13, event_type=8)) == []


def test_individual_video_subscribes_the_active_speaker_named_by_an_event() -> None:
    h = ready_client(INDIVIDUAL)
    speaker = {"msg_type": 6, "event": {"event_type": 2, "timestamp": 5, "user_id": 21, "user_name": "S"}}
    assert subscriptions(h.recv(SIGNALING, speaker)) == [(21, True)]


# --- next_deadline against a plain reference over the states a random session reaches --------------


def reference_deadline(m: RtmsClient) -> tuple[float | None, str]:
    """next_deadline written plainly (a list and min), and which kind of deadline it is."""
    if m.phase is ClientPhase.DRAINING:
        return m.close_deadline, "draining"
    times: list[tuple[float, str]] = []
    if m.retry_at is not None:
        times.append((m.retry_at, "retry"))
    if m.close_deadline is not None:
        times.append((m.close_deadline, "close"))
    times += [(s.retry_at, "media retry") for s in m.media.values() if s.retry_at is not None]
    for sock in m.sockets.values():
        times.append((sock.last_rx + m.config.idle_timeout_s, "idle"))
        if not sock.ready:
            times.append((sock.deadline, "handshake"))
    return min(times, key=lambda t: t[0]) if times else (None, "none")


_CHANNELS = (SIGNALING, "audio", "video", "transcript")
_STEPS = st.one_of(
    st.tuples(st.just("tick"), st.sampled_from([0.0, 0.3, 1.0, 4.0, 9.0, 30.0, 66.0])),
    st.tuples(
        st.sampled_from(["open", "fail", "ok", "retry", "refuse", "frame", "close"]),
        st.sampled_from(_CHANNELS),
    ),
    st.tuples(st.sampled_from(["stop", "leave", "reconnect", "terminate", "closed"]), st.just("")),
    st.just(("settle", "")),
)
_ANSWERS = {"ok": 0, "retry": 8, "refuse": 1}  # handshake status codes: signaling, then media
_MEDIA_ANSWERS = {"ok": 0, "retry": 15, "refuse": 1}


def play(h: Harness, step: tuple[str, Any]) -> None:
    """One thing a server, the clock or the caller does to the client (stale conns included)."""
    kind, arg = step
    m, conn = h.machine, h.conns.get(arg, 0)
    if kind == "tick":
        h.tick(arg)
    elif kind == "settle":  # open and answer every socket waiting for that (signaling, then media)
        for _ in range(2):
            for channel, sock in list(m.sockets.items()):
                if not sock.ready:
                    play(h, ("open", channel))
                    play(h, ("ok", channel))
    elif kind == "open":
        h.run(m.on_open(arg, conn, h.now))
    elif kind == "fail":
        h.run(m.on_open_failed(arg, conn, "refused", h.now))
    elif kind in _ANSWERS and arg == SIGNALING:
        urls = {"server_urls": MEDIA_URLS}
        answer = {"msg_type": 2, "status_code": _ANSWERS[kind], "media_server": urls}
        h.run(m.on_message(arg, conn, json.dumps(answer), h.now, 1_000))
    elif kind in _ANSWERS:
        answer = {"msg_type": 4, "status_code": _MEDIA_ANSWERS[kind], "payload_encrypted": False}
        h.run(m.on_message(arg, conn, json.dumps(answer), h.now, 1_000))
    elif kind == "frame":
        h.run(m.on_message(arg, conn, json.dumps(AUDIO_FRAME), h.now, 1_000))
    elif kind == "close":
        h.run(m.on_closed(arg, conn, 1006, h.now))
    elif kind in ("stop", "leave"):
        h.run(m.request_stop(h.now, close_stream=kind == "stop"))
    elif kind == "reconnect":
        h.run(m.request_reconnect(h.now))
    elif kind == "terminate":
        state = {"msg_type": 8, "state": 4, "reason": 6, "timestamp": 50}
        h.run(m.on_message(SIGNALING, h.conns.get(SIGNALING, 0), json.dumps(state), h.now, 1_000))
    else:
        h.run(m.on_message(SIGNALING, h.conns.get(SIGNALING, 0), '{"msg_type": 22}', h.now, 1_000))


def session_walk(steps: list[tuple[str, Any]], kinds: set[str]) -> None:
    """Start a client, play `steps`, and compare next_deadline to the reference after each."""
    h = Harness(RtmsClient(SESSION, CONFIG, random.Random(3)))
    h.run(h.machine.start(h.now))
    for step in steps:
        play(h, step)
        due, kind = reference_deadline(h.machine)
        assert h.machine.next_deadline() == due, (step, kind)
        kinds.add(kind)


@settings(max_examples=300, deadline=None, database=None)
@given(steps=st.lists(_STEPS, min_size=10, max_size=40))
def test_next_deadline_is_the_plain_minimum_in_every_state_a_session_reaches(steps: list[Any]) -> None:
    session_walk(steps, set())


def test_the_session_walks_reach_every_kind_of_deadline() -> None:
    """Positive control for the property above: each kind of deadline is the earliest in some state
    the walks reach. Derandomized, so it cannot flake."""
    kinds: set[str] = set()

    @settings(max_examples=300, deadline=None, database=None, derandomize=True)
    @given(steps=st.lists(_STEPS, min_size=10, max_size=40))
    def walk(steps: list[Any]) -> None:
        session_walk(steps, kinds)

    walk()
    assert kinds == {"draining", "retry", "close", "media retry", "idle", "handshake", "none"}, kinds
