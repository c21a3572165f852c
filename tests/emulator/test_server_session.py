"""The emulator's server session (`emulator.server_session`) without sockets: handshakes and their
refusals, media grants, the start of media, losses and reconnection deadlines, keep-alives, requests,
the stop. The client's side is `ClientSession`, so both pure machines talk to each other here."""

from __future__ import annotations

import pytest

import rtms_protocol as rp
from emulator.faults import Faults
from emulator.server_session import (
    SIGNALING,
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
from emulator.streams import StreamStats
from emulator.wire import AUDIO, CHAT, DESKSHARE, TRANSCRIPT, VIDEO
from rtms_protocol.session import ClientSession

MEETING, STREAM, SESSION_ID = "m==", "s-1", "0123456789abcdef0123456789abcdef"
URLS = {"audio": "ws://x/media/audio", "all": "ws://x/media/all"}
FAULTS = Faults(keepalive_s=10.0, keepalive_misses=2, signaling_reconnect_s=60.0, media_reconnect_s=65.0)
T0 = 100.0  # loop time of the first input
TS = 1_700_000_000_000  # the stream's epoch-ms clock


def server(faults: Faults = FAULTS) -> ServerSession[str]:
    return ServerSession(
        meeting_uuid=MEETING,
        rtms_stream_id=STREAM,
        session_id=SESSION_ID,
        signature=rp.handshake_signature("id", "secret", MEETING, STREAM),
        faults=faults,
        stats=StreamStats(),
    )


def client(secret: str = "secret") -> ClientSession:
    return ClientSession.signed("id", secret, MEETING, STREAM)


def answer(actions: list[Action[str]]) -> tuple[str, int, str]:
    """(socket, status, reason) of the handshake answer (the first action)."""
    first = actions[0]
    assert isinstance(first, Send)
    msg = first.message
    assert isinstance(msg, rp.HandshakeResponse | rp.DataHandshakeResponse)
    return first.socket, msg.status_code, msg.reason


def sent(actions: list[Action[str]]) -> list[tuple[str, rp.Message]]:
    return [(a.socket, a.message) for a in actions if isinstance(a, Send)]


def connected(s: ServerSession[str], media: tuple[str, ...] = ("audio",)) -> ClientSession:
    """Signaling on socket "sig", then one media socket per URL key in `media` (named after it)."""
    c = client()
    assert answer(s.on_handshake("sig", SIGNALING, c.hello(), T0, URLS))[1:] == (0, "")
    for key in media:
        bit = rp.MediaType.ALL if key == "all" else rp.MediaType[key.upper()]
        assert answer(s.on_handshake(key, key, c.media_hello(key, int(bit)), T0, URLS))[1] == 0
    return c


def active(s: ServerSession[str], media: tuple[str, ...] = ("audio",)) -> ClientSession:
    c = connected(s, media)
    assert s.on_message("sig", rp.encode(rp.ClientReadyAck(STREAM)), TS) == [StartMedia()]
    s.on_media_started(TS, TS - 20)
    assert s.phase is ServerPhase.ACTIVE
    return c


def test_an_accepted_signaling_handshake_offers_the_media_urls_and_arms_keep_alives() -> None:
    s = server()
    actions = s.on_handshake("sig", SIGNALING, client().hello(), T0, URLS)
    assert len(actions) == 1 and answer(actions) == ("sig", 0, "")
    msg = sent(actions)[0][1]
    assert isinstance(msg, rp.HandshakeResponse) and msg.media_urls == URLS
    assert s.phase is ServerPhase.CONNECTED and s.connected("sig") and s.signaling == "sig"
    assert s.stats.signaling_handshakes == 1
    deadline = s.next_deadline()  # the first keep-alive, at 50-100 % of the interval
    assert deadline is not None and T0 + 5.0 <= deadline <= T0 + 10.0


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (client("wrong").hello(), rp.StatusCode.INVALID_SIGNATURE),
        (
            ClientSession.signed("id", "secret", MEETING, "other").hello(),
            rp.StatusCode.INVALID_RTMS_STREAM_ID,
        ),
        ("{not json", rp.StatusCode.INVALID_PAYLOAD),
        (client().media_hello("audio", 1), rp.StatusCode.INVALID_MESSAGE_TYPE),
    ],
)
def test_a_refused_signaling_handshake_leaves_the_stream_waiting(raw: str, status: int) -> None:
    s = server()
    assert answer(s.on_handshake("sig", SIGNALING, raw, T0, URLS))[:2] == ("sig", status)
    assert s.phase is ServerPhase.WAITING and not s.connected("sig") and s.signaling is None
    assert s.stats.signaling_handshakes == 0


def test_a_second_signaling_socket_is_a_duplicate_until_the_first_is_closing() -> None:
    s = server()
    connected(s, media=())
    assert answer(s.on_handshake("sig2", SIGNALING, client().hello(), T0, URLS))[1] == 8
    assert not s.connected("sig2") and s.signaling == "sig"
    s.on_closing("sig")
    assert answer(s.on_handshake("sig3", SIGNALING, client().hello(), T0, URLS))[1] == 0
    assert s.signaling == "sig3" and s.stats.signaling_handshakes == 2


def test_media_needs_signaling_and_the_media_type_of_its_url() -> None:
    s = server()
    c = client()
    refused = s.on_handshake("audio", "audio", c.media_hello("audio", 1), T0, URLS)
    assert answer(refused)[1:] == (rp.StatusCode.INVALID_RTMS_STREAM_ID, "no signaling connection")
    s.on_handshake("sig", SIGNALING, c.hello(), T0, URLS)
    wrong = s.on_handshake("a2", "audio", c.media_hello("audio", int(rp.MediaType.VIDEO)), T0, URLS)
    assert answer(wrong)[1] == rp.StatusCode.INVALID_MEDIA_TYPE
    ok = s.on_handshake("a3", "audio", c.media_hello("audio", 1), T0, URLS)
    assert answer(ok)[1] == 0 and s.media[AUDIO] == "a3" and set(s.grants) == {AUDIO}
    assert s.stats.media_handshakes == 1


def test_a_taken_channel_is_refused_16_or_15_with_the_all_socket_until_it_is_closing() -> None:
    s = server()
    c = connected(s, media=("audio",))
    again = s.on_handshake("audio2", "audio", c.media_hello("audio", 1), T0, URLS)
    assert answer(again)[1] == rp.StatusCode.DUPLICATE_MEDIA_DATA_CONNECTION
    everything = s.on_handshake("all", "all", c.media_hello("all", int(rp.MediaType.ALL)), T0, URLS)
    assert answer(everything)[1] == rp.StatusCode.MEDIA_DATA_ALL_CONNECTION_EXIST
    s.on_closing("audio")
    everything = s.on_handshake("all2", "all", c.media_hello("all", int(rp.MediaType.ALL)), T0, URLS)
    assert answer(everything)[1] == 0
    assert s.media == ["all2"] * 5 and set(s.grants) == {AUDIO, VIDEO, DESKSHARE, TRANSCRIPT, CHAT}


def test_the_transcript_language_and_individual_video_come_from_the_grants() -> None:
    s = server()
    c = connected(s, media=())
    assert not s.individual and s.language == rp.TranscriptLanguage.ENGLISH
    params = rp.MediaParams(
        video=rp.VideoParams(data_opt=rp.DataOption.VIDEO_SINGLE_INDIVIDUAL_STREAM),
        transcript=rp.TranscriptParams(src_language=rp.TranscriptLanguage.GERMAN),
    )
    s.on_handshake("all", "all", c.media_hello("all", int(rp.MediaType.ALL), params), T0, URLS)
    assert s.individual and s.language == rp.TranscriptLanguage.GERMAN


def test_ready_ack_starts_media_once_and_media_start_announces_the_stream() -> None:
    s = server()
    connected(s)
    ready = rp.encode(rp.ClientReadyAck(STREAM))
    assert s.on_message("audio", ready, TS) == []  # only on signaling
    assert s.stats.bad_client_messages == 1
    assert s.on_message("sig", ready, TS) == [StartMedia()]
    actions = s.on_media_started(TS, TS - 20)
    assert s.phase is ServerPhase.ACTIVE
    assert sent(actions) == [
        ("sig", rp.EventUpdate(rp.EventType.FIRST_PACKET_TIMESTAMP, TS - 20)),
        ("sig", rp.StreamStateUpdate(rp.StreamState.ACTIVE, rp.StopReason.UNDEFINED, TS)),
        ("sig", rp.SessionStateUpdate(rp.SessionState.STARTED, TS, SESSION_ID)),
    ]
    assert s.on_message("sig", ready, TS) == []  # media already flows


def test_a_lost_media_socket_is_reported_and_ends_the_stream_unless_it_comes_back() -> None:
    s = server(Faults(send_keepalives=False))  # only the reconnection deadline is due
    c = active(s)
    lost = s.on_closed("audio", T0 + 1, TS)
    assert sent(lost) == [
        ("sig", rp.EventUpdate(rp.EventType.MEDIA_CONNECTION_INTERRUPTED, TS)),
        (
            "sig",
            rp.StreamStateUpdate(rp.StreamState.INTERRUPTED, rp.StopReason.DATA_CONNECTION_INTERRUPTED, TS),
        ),
    ]
    assert s.media[AUDIO] is None and s.next_deadline() == T0 + 1 + Faults().media_reconnect_s
    back = s.on_handshake("audio2", "audio", c.media_hello("audio", 1), T0 + 2, URLS)
    assert answer(back)[1] == 0 and back[1:] == [ResumeMedia((AUDIO,))] and s.next_deadline() is None
    s.on_closed("audio2", T0 + 3, TS)
    deadline = s.next_deadline()
    assert deadline is not None
    assert s.on_tick(deadline - 0.001, TS) == [] and s.phase is ServerPhase.ACTIVE
    ended = s.on_tick(deadline, TS)
    assert ended[-1] == Finish(rp.StopReason.AWAIT_RECONNECTION_TIMEOUT) and s.phase is ServerPhase.TERMINATED
    assert [type(m) for _, m in sent(ended)] == [rp.SessionStateUpdate, rp.StreamStateUpdate]


def test_a_lost_signaling_socket_takes_media_down_and_waits_for_a_reconnection() -> None:
    s = server()
    active(s, media=("audio", "video"))
    actions = s.on_closed("sig", T0 + 1, TS)
    assert actions == [
        Close("audio", 1001, "signaling interrupted"),
        Close("video", 1001, "signaling interrupted"),
        Notify("interrupted"),
    ]
    assert s.phase is ServerPhase.INTERRUPTED and s.media == [None] * 5
    assert s.deadline == T0 + 1 + FAULTS.signaling_reconnect_s
    assert answer(s.on_handshake("sig2", SIGNALING, client().hello(), T0 + 2, URLS))[1] == 0
    assert s.phase is ServerPhase.CONNECTED


def test_keep_alives_go_to_every_socket_and_silence_interrupts_signaling() -> None:
    s = server()
    connected(s)
    first = s.next_deadline()
    assert first is not None
    assert s.on_tick(first - 0.001, TS) == []
    actions = s.on_tick(first, TS)
    assert sent(actions) == [("sig", rp.KeepAliveRequest(TS, 1)), ("audio", rp.KeepAliveRequest(TS, 1))]
    assert s.next_deadline() == first + FAULTS.keepalive_s
    # the audio socket answers (the positive control); signaling stays silent
    assert s.on_message("audio", rp.encode(rp.KeepAliveResponse(TS, 1)), TS) == []
    assert s.stats.keepalives_answered == 1
    second = s.on_tick(first + 10, TS)
    assert sent(second) == [("sig", rp.KeepAliveRequest(TS, 2)), ("audio", rp.KeepAliveRequest(TS, 2))]
    third = s.on_tick(first + 20, TS)  # signaling missed 2 in a row: closed, media goes down with it
    assert third[:3] == [
        Close("sig", 1000, "keep-alive timeout"),
        Close("audio", 1001, "signaling interrupted"),
        Notify("interrupted"),
    ]
    assert sent(third) == [("audio", rp.KeepAliveRequest(TS, 3))]  # it was still open this round
    assert s.phase is ServerPhase.INTERRUPTED and s.signaling is None


def test_client_keep_alives_are_answered_unless_the_fault_says_not() -> None:
    req = rp.encode(rp.KeepAliveRequest(TS, 4))
    s = server()
    connected(s)
    assert s.on_message("audio", req, TS) == [Send("audio", rp.KeepAliveResponse(TS, 4))]
    mute = server(Faults(answer_keepalives=False))
    connected(mute)
    assert mute.on_message("audio", req, TS) == []


def test_a_close_request_is_answered_then_the_stream_ends() -> None:
    s = server()
    active(s)
    actions = s.on_message("sig", rp.encode(rp.StreamCloseRequest(STREAM)), TS)
    reason = rp.StopReason.RECEIVER_REQUEST_CLOSE
    assert sent(actions) == [
        ("sig", rp.StreamCloseResponse(STREAM, rp.StatusCode.OK, "OK", TS)),
        ("sig", rp.SessionStateUpdate(rp.SessionState.STOPPED, TS, SESSION_ID, stop_reason=reason)),
        ("sig", rp.StreamStateUpdate(rp.StreamState.TERMINATED, reason, TS)),
    ]
    assert actions[-1] == Finish(reason) and s.phase is ServerPhase.TERMINATED
    assert s.request_stop(rp.StopReason.MEETING_ENDED, TS) == []  # the end comes once
    assert answer(s.on_handshake("sig2", SIGNALING, client().hello(), T0, URLS))[1:] == (2, "stream is over")


def test_a_late_participant_join_subscriber_learns_who_is_there() -> None:
    s = server()
    active(s)
    s.roster[7] = "Ann"
    subscribe = rp.encode(rp.EventSubscription.subscribe(rp.EventType.PARTICIPANT_JOIN))
    actions = s.on_message("sig", subscribe, TS)
    people = (rp.Participant(7, "Ann"),)
    assert sent(actions) == [("sig", rp.EventUpdate(rp.EventType.PARTICIPANT_JOIN, TS, participants=people))]
    assert s.subscribed == {rp.EventType.PARTICIPANT_JOIN}
    assert s.on_message("sig", subscribe, TS) == []  # already subscribed


def test_state_requests_pause_and_resume() -> None:
    s = server()
    active(s)
    state = s.on_message("sig", rp.encode(rp.StreamStateRequest(STREAM)), TS)
    assert sent(state) == [("sig", rp.StreamStateResponse(STREAM, rp.StreamState.ACTIVE, TS))]
    paused = s.request_pause(TS)
    assert [type(m) for _, m in sent(paused)] == [rp.StreamStateUpdate, rp.SessionStateUpdate] and s.paused
    assert s.request_pause(TS) == []
    session = s.on_message("sig", rp.encode(rp.SessionStateRequest(SESSION_ID)), TS)
    assert sent(session) == [("sig", rp.SessionStateResponse(SESSION_ID, rp.SessionState.PAUSED, TS))]
    resumed = s.request_resume(TS)
    assert sent(resumed)[0] == (
        "sig",
        rp.StreamStateUpdate(rp.StreamState.RESUMED, rp.StopReason.UNDEFINED, TS),
    )
    assert not s.paused


def individual(faults: Faults = FAULTS) -> ServerSession[str]:
    """A session whose video was granted as individual streams (data_opt 4)."""
    params = rp.MediaParams(video=rp.VideoParams(data_opt=rp.DataOption.VIDEO_SINGLE_INDIVIDUAL_STREAM))
    s = server(faults)
    c = connected(s, media=())
    s.on_handshake("video", "video", c.media_hello("video", int(rp.MediaType.VIDEO), params), T0, URLS)
    assert s.individual
    return s


def video(s: ServerSession[str], user_id: int, subscribe: bool = True) -> tuple[int, list[Action[str]]]:
    """(status of the VIDEO_SUBSCRIPTION_RESP, the other actions) for one request."""
    actions = s.on_message("sig", rp.encode(rp.VideoSubscriptionRequest(user_id, subscribe)), TS)
    ((_, answer),) = sent(actions)
    assert isinstance(answer, rp.VideoSubscriptionResponse) and answer.user_id == user_id
    return answer.status_code, [a for a in actions if not isinstance(a, Send)]


def test_video_subscription_needs_individual_video() -> None:
    s = server()
    active(s)
    assert not s.individual
    assert video(s, 7) == (rp.StatusCode.INVALID_MEDIA_VIDEO_DATA_OPT, [])
    assert s.video_subscriptions == set()
    t = individual()
    assert video(t, 7) == (0, [StartCamera(7)]) and t.video_subscriptions == {7}
    assert video(t, 7) == (rp.StatusCode.DUPLICATE_VIDEO_SUBSCRIPTION, [])


def test_one_camera_at_a_time_by_default_more_up_to_the_faults_capacity() -> None:
    one = individual()
    video(one, 7)
    assert video(one, 8) == (0, [StartCamera(8)]) and one.video_subscriptions == {8}  # replaces 7
    two = individual(Faults(individual_videos=2))
    video(two, 7)
    video(two, 8)
    assert video(two, 9) == (rp.StatusCode.INVALID_MEDIA_VIDEO_PARAMS, []) and two.video_subscriptions == {
        7,
        8,
    }
    assert video(two, 7, subscribe=False) == (0, []) and two.video_subscriptions == {8}
    assert video(two, 9) == (0, [StartCamera(9)]) and two.video_subscriptions == {8, 9}


def test_failover_aborts_every_socket_and_shutdown_ends_quietly() -> None:
    s = server()
    active(s, media=("audio", "video"))
    actions = s.request_failover(T0 + 1)
    assert actions == [Abort("sig"), Abort("audio"), Abort("video"), Notify("failover")]
    assert s.phase is ServerPhase.INTERRUPTED and s.signaling is None
    assert s.on_closed("sig", T0 + 2, TS) == []  # the aborted sockets' closes change nothing
    assert s.request_shutdown() == [Finish(None)] and s.phase is ServerPhase.TERMINATED
