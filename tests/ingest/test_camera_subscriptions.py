"""Whose cameras an individual-video stream subscribes to: the pure planner, without sockets."""

from __future__ import annotations

import pytest

from ingest.camera_subscriptions import MAX_CANDIDATES, CameraSubscriptions, VideoRequest
from rtms_protocol import EventType, StatusCode

JOIN, LEAVE = EventType.PARTICIPANT_JOIN, EventType.PARTICIPANT_LEAVE
ON, OFF, SPEAKER = (
    EventType.PARTICIPANT_VIDEO_ON,
    EventType.PARTICIPANT_VIDEO_OFF,
    EventType.ACTIVE_SPEAKER_CHANGE,
)


def on(*uids: int) -> list[VideoRequest]:
    return [VideoRequest(u, True) for u in uids]


def test_joined_participants_are_subscribed_up_to_the_limit_in_order_of_arrival() -> None:
    plan = CameraSubscriptions(2)
    assert plan.on_connected() == []
    assert plan.on_event(JOIN, [11, 12, 13]) == on(11, 12)
    assert plan.on_event(ON, [13, 14]) == []  # full: 13 and 14 wait
    assert plan.subscribed == {11, 12}


def test_a_leaver_is_unsubscribed_and_the_next_candidate_takes_the_place() -> None:
    plan = CameraSubscriptions(2)
    plan.on_connected()
    plan.on_event(JOIN, [11, 12, 13])
    assert plan.on_event(LEAVE, [11]) == [VideoRequest(11, False), VideoRequest(13, True)]
    assert plan.on_event(LEAVE, [99]) == []  # never subscribed: nothing to send
    assert plan.subscribed == {12, 13}


def test_nothing_is_asked_before_the_connection_is_ready_and_all_is_asked_again_after_a_reconnect() -> None:
    plan = CameraSubscriptions(4)
    assert plan.on_event(JOIN, [11, 12]) == []  # not connected yet: remembered
    assert plan.on_connected() == on(11, 12)
    plan.on_disconnected()
    assert plan.on_event(ON, [13]) == []
    assert plan.on_connected() == on(11, 12, 13)  # a new connection holds no subscription


def test_camera_off_and_other_events_change_nothing() -> None:
    plan = CameraSubscriptions(4)
    plan.on_connected()
    assert plan.on_event(JOIN, [11]) == on(11)
    assert plan.on_event(OFF, [11]) == []
    assert plan.on_event(EventType.SHARING_START, [12]) == []
    assert plan.subscribed == {11}  # the camera comes back on the same subscription


def test_a_speaker_is_a_candidate_so_a_worker_taking_over_learns_who_is_there() -> None:
    plan = CameraSubscriptions(2)
    plan.on_connected()  # joined after everyone: no join or camera-on events will come
    assert plan.on_event(SPEAKER, [12]) == on(12)
    assert plan.on_event(SPEAKER, [12]) == []  # already subscribed


def test_a_refusal_frees_the_place_for_the_next_candidate_and_is_not_asked_again() -> None:
    plan = CameraSubscriptions(1)
    plan.on_connected()
    plan.on_event(JOIN, [11, 12])
    assert plan.on_answer(11, StatusCode.OK) == []
    assert plan.on_answer(11, StatusCode.DUPLICATE_VIDEO_SUBSCRIPTION) == []  # still subscribed
    assert plan.on_answer(11, StatusCode.INVALID_MEDIA_VIDEO_PARAMS) == on(12)
    assert plan.on_event(ON, [11]) == []  # refused on this connection
    assert plan.on_connected() == on(11)  # asked again on the next


def test_hostile_ids_and_floods_are_bounded() -> None:
    plan = CameraSubscriptions(4)
    plan.on_connected()
    assert plan.on_event(JOIN, [0, -5]) == []  # no such participant
    plan.on_event(JOIN, range(1, MAX_CANDIDATES + 500))
    assert len(plan.candidates) == MAX_CANDIDATES
    assert len(plan.subscribed) == 4
    with pytest.raises(ValueError):
        CameraSubscriptions(0)
