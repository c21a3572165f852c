"""Fault knobs and protocol timers of one emulated stream.

Faults that are a property of the whole stream live in `Faults` (given to `add_stream`); faults
that happen at a moment (drop a socket, fail over, pause, stop, inject a malformed message) are
`StreamHandle` methods. The protocol's timers are here too so a test can shrink them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Malformed(StrEnum):
    """Kinds of malformed media message the server can send (each on the audio channel, or the
    first media socket that exists)."""

    BAD_JSON = "bad_json"  # truncated JSON text
    BAD_BASE64 = "bad_base64"  # content.data is not base64
    MISSING_FIELDS = "missing_fields"  # no timestamp, user_id or user_name
    UNKNOWN_MSG_TYPE = "unknown_msg_type"  # msg_type 99


MALFORMED_TEXT: dict[Malformed, str] = {
    Malformed.BAD_JSON: '{"msg_type":14,"content":{"user_id":1,"user_name":"x","data":"AAAA","timest',
    Malformed.BAD_BASE64: (
        '{"msg_type":14,"content":{"user_id":0,"user_name":"","data":"!!not*base64!!","length":9,"timestamp":%d}}'
    ),
    Malformed.MISSING_FIELDS: '{"msg_type":14,"content":{"data":"AAAAAA==","length":4}}',
    Malformed.UNKNOWN_MSG_TYPE: '{"msg_type":99,"content":{"timestamp":%d}}',
}


def malformed_text(kind: Malformed, timestamp: int) -> str:
    """The text of a malformed message of `kind` (with `timestamp` where it has one)."""
    text = MALFORMED_TEXT[kind]
    return text % timestamp if "%d" in text else text


@dataclass(frozen=True)
class Faults:
    """Stream-wide faults and timers.

    * `reorder`: this many media frames are sent after the frame that follows them on the same
      channel (timestamps unchanged), spaced through the stream; `duplicate`: this many frames are
      sent twice. Which ones is deterministic and reported in `StreamHandle.stats`.
    * `malformed`: messages sent once each on the first media socket right after media starts.
    * `send_keepalives` False: the server never sends KEEP_ALIVE_REQ (a silent server; clients
      should re-handshake after ~65 s). `answer_keepalives` False: client KEEP_ALIVE_REQs and
      WebSocket pings go unanswered.
    * timers: keep-alive every `keepalive_s` on every socket; `keepalive_misses` unanswered in a
      row interrupt that socket; a stream without signaling waits `signaling_reconnect_s`, a
      missing media socket `media_reconnect_s`, before it is terminated (19, or 24 after a
      keep-alive timeout). Audio and transcripts due while their socket is down are buffered (at
      most `buffer_ms` of media time) and sent on reconnect; video and deskshare are not.
    * `individual_videos`: cameras served at once with individual video (video `data_opt` 4): 1 is
      Zoom's V1 (a new subscription replaces the last), more is Zoom's multiple individual streams
      (up to 4 at 720p), served here on the one video connection (our assumption: Zoom has not said
      how a V2 data connection is bound to its participant); a subscription past it is refused.
    """

    reorder: int = 0
    duplicate: int = 0
    malformed: tuple[Malformed, ...] = ()
    send_keepalives: bool = True
    answer_keepalives: bool = True
    keepalive_s: float = 10.0
    keepalive_misses: int = 3
    signaling_reconnect_s: float = 60.0
    media_reconnect_s: float = 65.0
    buffer_ms: int = 60_000
    close_grace_s: float = 2.0
    individual_videos: int = 1

    def reorder_indices(self) -> frozenset[int]:
        """Media-frame counters whose frame is held back behind the next one of its channel."""
        return frozenset(25 + 50 * i for i in range(self.reorder))

    def duplicate_indices(self) -> frozenset[int]:
        """Media-frame counters whose frame is sent twice."""
        return frozenset(40 + 50 * i for i in range(self.duplicate))
