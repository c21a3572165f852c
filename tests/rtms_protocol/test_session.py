"""The client's handshake machine (`rtms_protocol.session`) without sockets: what it sends, in
which order, what each answer means, keep-alives and the end of a stream."""

from __future__ import annotations

import json
from typing import Any

import pytest

import rtms_protocol as proto
from rtms_protocol.session import (
    SIGNALING,
    Action,
    Answered,
    ClientPhase,
    ClientSession,
    Finish,
    Send,
    Verdict,
    ends_stream,
    keep_alive_reply,
    media_verdict,
    signaling_verdict,
)

MEETING, STREAM = "m==", "s-1"


def session(**options: Any) -> ClientSession:
    return ClientSession.signed("id", "secret", MEETING, STREAM, **options)


def accepted(urls: dict[str, str]) -> dict[str, Any]:
    return json.loads(proto.encode(proto.HandshakeResponse(0, media_urls=urls)))


def media_answer(status: int) -> dict[str, Any]:
    return json.loads(proto.encode(proto.DataHandshakeResponse(status)))


def sent(actions: list[Action]) -> list[tuple[str, int]]:
    return [(a.channel, json.loads(a.text)["msg_type"]) for a in actions if isinstance(a, Send)]


def test_hello_is_signed_and_numbered_and_each_request_takes_the_next_sequence() -> None:
    s = session(client_agent="agent", buffer_data=False)
    hello = json.loads(s.hello())
    assert hello["msg_type"] == proto.MsgType.SIGNALING_HAND_SHAKE_REQ
    assert hello["signature"] == proto.handshake_signature("id", "secret", MEETING, STREAM)
    assert (hello["meeting_uuid"], hello["rtms_stream_id"], hello["sequence"]) == (MEETING, STREAM, 1)
    assert (hello["rtms_client_agent"], hello["buffer_data"]) == ("agent", False)
    media = json.loads(s.media_hello("audio", proto.MediaType.AUDIO))
    assert (media["msg_type"], media["media_type"], media["sequence"]) == (3, 1, 2)
    assert s.phase is ClientPhase.SIGNALING and s.pending == {"audio"}


def test_the_ready_texts_go_on_signaling_once_the_last_media_socket_is_accepted() -> None:
    s = session(subscribe=(2, 3))
    s.hello()
    actions = s.on_message(SIGNALING, accepted({"audio": "ws://a", "video": "ws://v"}))
    assert actions == [Answered(SIGNALING, Verdict.OK)] and s.phase is ClientPhase.MEDIA
    assert s.media_urls == {"audio": "ws://a", "video": "ws://v"}
    s.media_hello("audio", 1)
    s.media_hello("video", 2)
    first = s.on_message("audio", media_answer(0))
    assert first == [Answered("audio", Verdict.OK)] and s.phase is ClientPhase.MEDIA  # video pending
    last = s.on_message("video", media_answer(0))
    assert last[0] == Answered("video", Verdict.OK) and s.phase is ClientPhase.READY
    assert sent(last) == [
        (SIGNALING, proto.MsgType.CLIENT_READY_ACK),
        (SIGNALING, proto.MsgType.EVENT_SUBSCRIPTION),
    ]
    again = s.on_message("audio", media_answer(0))  # a media socket reconnected while streaming
    assert again == [Answered("audio", Verdict.OK)] and s.phase is ClientPhase.READY


def test_no_subscription_without_event_types() -> None:
    s = session()
    s.hello()
    s.on_message(SIGNALING, accepted({"audio": "ws://a"}))
    s.media_hello("audio", 1)
    assert sent(s.on_message("audio", media_answer(0))) == [(SIGNALING, proto.MsgType.CLIENT_READY_ACK)]


@pytest.mark.parametrize(
    ("status", "verdict"),
    [(0, Verdict.OK), (8, Verdict.RETRY), (3, Verdict.REFUSED), (2, Verdict.REFUSED), (15, Verdict.REFUSED)],
)
def test_signaling_statuses(status: int, verdict: Verdict) -> None:
    assert signaling_verdict(status) is verdict


@pytest.mark.parametrize(
    ("status", "verdict"),
    [(0, Verdict.OK), (15, Verdict.RETRY), (16, Verdict.RETRY), (8, Verdict.REFUSED), (11, Verdict.REFUSED)],
)
def test_media_statuses(status: int, verdict: Verdict) -> None:
    assert media_verdict(status) is verdict


def test_a_refused_hello_ends_the_session_and_a_retryable_one_does_not() -> None:
    refused = session()
    refused.hello()
    actions = refused.on_message(
        SIGNALING, json.loads(proto.encode(proto.HandshakeResponse(3, "bad signature")))
    )
    assert actions == [Answered(SIGNALING, Verdict.REFUSED), Finish()]
    assert refused.phase is ClientPhase.FINISHED
    busy = session()
    busy.hello()
    actions = busy.on_message(SIGNALING, json.loads(proto.encode(proto.HandshakeResponse(8))))
    assert actions == [Answered(SIGNALING, Verdict.RETRY)] and busy.phase is ClientPhase.SIGNALING
    assert json.loads(busy.hello())["sequence"] == 2  # the retry is a new attempt


def test_keep_alives_are_answered_on_the_socket_they_came_on() -> None:
    s = session()
    req = {"msg_type": 12, "timestamp": 1234, "sequence": 7}
    actions = s.on_message("video", req)
    assert actions == [Send("video", keep_alive_reply(req))]
    assert json.loads(keep_alive_reply(req)) == {"msg_type": 13, "timestamp": 1234, "sequence": 7}
    with pytest.raises(proto.ProtocolError):
        keep_alive_reply({"msg_type": 12, "timestamp": "soon"})


def test_the_stream_ends_on_close_response_or_terminated_only() -> None:
    s = session()
    s.hello()
    s.on_message(SIGNALING, accepted({"audio": "ws://a"}))
    close = json.loads(s.close())
    assert close == {"msg_type": proto.MsgType.STREAM_CLOSE_REQ, "rtms_stream_id": STREAM}
    assert s.phase is ClientPhase.CLOSING
    paused = {"msg_type": 8, "state": proto.StreamState.PAUSED}
    assert not ends_stream(paused) and s.on_message(SIGNALING, paused) == []
    assert s.phase is ClientPhase.CLOSING
    assert ends_stream({"msg_type": 8, "state": proto.StreamState.TERMINATED, "reason": 6})
    assert s.on_message(SIGNALING, {"msg_type": 22, "rtms_stream_id": STREAM}) == [Finish()]
    assert s.phase is ClientPhase.FINISHED
