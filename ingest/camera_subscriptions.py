"""Whose cameras an individual-video stream (video `data_opt` 4) subscribes to, as a pure planner.

Participants become candidates as they join, turn their camera on or speak, first come first served;
up to `max_count` are subscribed (VIDEO_SUBSCRIPTION_REQ), a leaver's place goes to the next
candidate, every (re)connect subscribes afresh. The caller sends what each method returns."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from rtms_protocol import EventType, StatusCode

# Events that show a participant is in the meeting.
_PRESENT = (EventType.PARTICIPANT_JOIN, EventType.PARTICIPANT_VIDEO_ON, EventType.ACTIVE_SPEAKER_CHANGE)
# Participants remembered per stream (a hostile or huge meeting cannot grow this without bound).
MAX_CANDIDATES = 10_000


@dataclass(frozen=True, slots=True)
class VideoRequest:
    """One VIDEO_SUBSCRIPTION_REQ to send: subscribe (or unsubscribe) `user_id`'s camera."""

    user_id: int
    subscribe: bool


class CameraSubscriptions:
    """The subscription plan of one stream; see the module docstring."""

    def __init__(self, max_count: int) -> None:
        if max_count < 1:
            raise ValueError(f"max_count must be at least 1, got {max_count}")
        self.max_count = max_count
        self.candidates: dict[int, None] = {}  # present participants, in order of arrival
        self.subscribed: set[int] = set()  # asked for (and not refused) on this connection
        self.refused: set[int] = set()  # refused on this connection: not asked again until a reconnect
        self.connected = False

    def on_connected(self) -> list[VideoRequest]:
        """The stream is (again) ready: a new connection holds no subscriptions; ask for the
        first `max_count` candidates."""
        self.connected = True
        self.subscribed.clear()
        self.refused.clear()
        return self._fill()

    def on_disconnected(self) -> None:
        """The signaling connection is gone: ask for nothing until `on_connected`."""
        self.connected = False

    def on_event(self, event_type: int, user_ids: Iterable[int]) -> list[VideoRequest]:
        """An EVENT_UPDATE's type and the participants it names: a join, camera-on or active-speaker
        change makes candidates, a leave frees their places."""
        if event_type in _PRESENT:
            for uid in user_ids:
                if uid > 0 and uid not in self.candidates and len(self.candidates) < MAX_CANDIDATES:
                    self.candidates[uid] = None
            return self._fill()
        if event_type == EventType.PARTICIPANT_LEAVE:
            out = []
            for uid in user_ids:
                self.candidates.pop(uid, None)
                self.refused.discard(uid)
                if uid in self.subscribed:
                    self.subscribed.discard(uid)
                    if self.connected:
                        out.append(VideoRequest(uid, False))
            return out + self._fill()
        return []

    def on_answer(self, user_id: int, status_code: int) -> list[VideoRequest]:
        """A VIDEO_SUBSCRIPTION_RESP: a refusal (other than "already subscribed") frees the place
        for the next candidate."""
        if status_code in (StatusCode.OK, StatusCode.DUPLICATE_VIDEO_SUBSCRIPTION):
            return []
        if user_id in self.subscribed:
            self.subscribed.discard(user_id)
            self.refused.add(user_id)
        return self._fill()

    def _fill(self) -> list[VideoRequest]:
        if not self.connected:
            return []
        out = []
        for uid in self.candidates:
            if len(self.subscribed) >= self.max_count:
                break
            if uid not in self.subscribed and uid not in self.refused:
                self.subscribed.add(uid)
                out.append(VideoRequest(uid, True))
        return out
