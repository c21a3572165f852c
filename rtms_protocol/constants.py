"""Zoom RTMS numbers: every enum the protocol puts on the wire, with Zoom's names and values.

Field names and values follow Zoom's SDK and docs/PROTOCOL.md (§3-§4). Nothing here does I/O.
"""

from __future__ import annotations

from enum import IntEnum, IntFlag, StrEnum

PROTOCOL_VERSION = 1


class MsgType(IntEnum):
    """RTMS_MESSAGE_TYPE: the `msg_type` of every message."""

    UNDEFINED = 0
    SIGNALING_HAND_SHAKE_REQ = 1
    SIGNALING_HAND_SHAKE_RESP = 2
    DATA_HAND_SHAKE_REQ = 3
    DATA_HAND_SHAKE_RESP = 4
    EVENT_SUBSCRIPTION = 5
    EVENT_UPDATE = 6
    CLIENT_READY_ACK = 7
    STREAM_STATE_UPDATE = 8
    SESSION_STATE_UPDATE = 9
    SESSION_STATE_REQ = 10
    SESSION_STATE_RESP = 11
    KEEP_ALIVE_REQ = 12
    KEEP_ALIVE_RESP = 13
    MEDIA_DATA_AUDIO = 14
    MEDIA_DATA_VIDEO = 15
    MEDIA_DATA_SHARE = 16
    MEDIA_DATA_TRANSCRIPT = 17
    MEDIA_DATA_CHAT = 18
    STREAM_STATE_REQ = 19
    STREAM_STATE_RESP = 20
    STREAM_CLOSE_REQ = 21
    STREAM_CLOSE_RESP = 22
    META_DATA_AUDIO = 23
    META_DATA_VIDEO = 24
    META_DATA_SHARE = 25
    META_DATA_TRANSCRIPT = 26
    META_DATA_CHAT = 27
    VIDEO_SUBSCRIPTION_REQ = 28
    VIDEO_SUBSCRIPTION_RESP = 29


class StreamState(IntEnum):
    """RTMS_STREAM_STATE (STREAM_STATE_UPDATE `state`)."""

    INACTIVE = 0
    ACTIVE = 1
    INTERRUPTED = 2
    TERMINATING = 3
    TERMINATED = 4
    PAUSED = 5
    RESUMED = 6


class SessionState(IntEnum):
    """RTMS_SESSION_STATE (SESSION_STATE_UPDATE `state`)."""

    INACTIVE = 0
    INITIALIZE = 1
    STARTED = 2
    PAUSED = 3
    RESUMED = 4
    STOPPED = 5


class StopReason(IntEnum):
    """RTMS_STOP_REASON (docs prefix the names with STOP_BC_)."""

    UNDEFINED = 0
    HOST_TRIGGERED = 1
    USER_TRIGGERED = 2
    USER_LEFT = 3
    USER_EJECTED = 4
    HOST_DISABLED_APP = 5
    MEETING_ENDED = 6
    STREAM_CANCELED = 7
    STREAM_REVOKED = 8
    ALL_APPS_DISABLED = 9
    INTERNAL_EXCEPTION = 10
    CONNECTION_TIMEOUT = 11
    INSTANCE_CONNECTION_INTERRUPTED = 12
    SIGNAL_CONNECTION_INTERRUPTED = 13
    DATA_CONNECTION_INTERRUPTED = 14
    SIGNAL_CONNECTION_CLOSED_ABNORMALLY = 15
    DATA_CONNECTION_CLOSED_ABNORMALLY = 16
    EXIT_SIGNAL = 17
    AUTHENTICATION_FAILURE = 18
    AWAIT_RECONNECTION_TIMEOUT = 19
    RECEIVER_REQUEST_CLOSE = 20
    CUSTOMER_DISCONNECTED = 21
    AGENT_DISCONNECTED = 22
    ADMIN_DISABLED_APP = 23
    KEEP_ALIVE_TIMEOUT = 24
    MANUAL_API_TRIGGERED = 25
    STREAMING_NOT_SUPPORTED = 26


class StatusCode(IntEnum):
    """RTMS_STATUS_CODE: `status_code` of handshake and request responses."""

    OK = 0
    INVALID_MESSAGE_TYPE = 1
    INVALID_RTMS_STREAM_ID = 2
    INVALID_SIGNATURE = 3
    INVALID_PAYLOAD = 4
    INVALID_EVENTS = 5
    INVALID_EVENT_TYPE = 6
    INVALID_MEDIA_TYPE = 7
    DUPLICATE_SIGNAL_REQUEST = 8
    MEDIA_TYPE_AUDIO_NOT_SUPPORT = 9
    MEDIA_TYPE_VIDEO_NOT_SUPPORT = 10
    MEDIA_TYPE_DESKSHARE_NOT_SUPPORT = 11
    MEDIA_TYPE_TRANSCRIPT_NOT_SUPPORT = 12
    MEDIA_TYPE_CHAT_NOT_SUPPORT = 13
    MEDIA_TYPE_INVALID_VALUE = 14
    MEDIA_DATA_ALL_CONNECTION_EXIST = 15
    DUPLICATE_MEDIA_DATA_CONNECTION = 16
    INVALID_MEDIA_PARAMS = 17
    INVALID_MEDIA_AUDIO_PARAMS = 18
    INVALID_MEDIA_AUDIO_CONTENT_TYPE = 19
    INVALID_MEDIA_AUDIO_SAMPLE_RATE = 20
    INVALID_MEDIA_AUDIO_CHANNEL = 21
    INVALID_MEDIA_AUDIO_CODEC = 22
    INVALID_MEDIA_AUDIO_DATA_OPT = 23
    INVALID_MEDIA_AUDIO_SEND_RATE = 24
    INVALID_MEDIA_VIDEO_PARAMS = 25
    INVALID_MEDIA_VIDEO_CONTENT_TYPE = 26
    INVALID_MEDIA_VIDEO_CODEC = 27
    INVALID_MEDIA_VIDEO_RESOLUTION = 28
    INVALID_MEDIA_VIDEO_DATA_OPT = 29
    INVALID_MEDIA_VIDEO_FPS = 30
    INVALID_MEDIA_DESKSHARE_PARAMS = 31
    INVALID_MEDIA_DESKSHARE_CONTENT_TYPE = 32
    INVALID_MEDIA_DESKSHARE_CODEC = 33
    INVALID_MEDIA_DESKSHARE_RESOLUTION = 34
    INVALID_MEDIA_DESKSHARE_FPS = 35
    INVALID_MEDIA_TRANSCRIPT_PARAMS = 36
    INVALID_MEDIA_TRANSCRIPT_CONTENT_TYPE = 37
    INVALID_MEDIA_CHAT_PARAMS = 38
    INVALID_MEDIA_CHAT_CONTENT_TYPE = 39
    INVALID_RTMS_SESSION_ID = 40
    INVALID_CLIENT_READY_ACK = 41
    INVALID_EVENT_SUBSCRIBE = 42
    INVALID_MEDIA_TRANSCRIPT_SOURCE_LANGUAGE = 43
    DUPLICATE_VIDEO_SUBSCRIPTION = 44
    INTERNAL_EXCEPTION = 45


class MediaType(IntFlag):
    """MEDIA_DATA_TYPE bits of a data handshake's `media_type`; ALL asks for every permitted type."""

    AUDIO = 1
    VIDEO = 2
    DESKSHARE = 4
    TRANSCRIPT = 8
    CHAT = 16
    ALL = 32


class EventType(IntEnum):
    """EVENT_UPDATE `event_type` for meetings (Contact Center reuses 8-29 with other meanings)."""

    UNDEFINED = 0
    FIRST_PACKET_TIMESTAMP = 1
    ACTIVE_SPEAKER_CHANGE = 2
    PARTICIPANT_JOIN = 3
    PARTICIPANT_LEAVE = 4
    SHARING_START = 5
    SHARING_STOP = 6
    MEDIA_CONNECTION_INTERRUPTED = 7
    PARTICIPANT_VIDEO_ON = 8
    PARTICIPANT_VIDEO_OFF = 9


class ContentType(IntEnum):
    """MEDIA_CONTENT_TYPE."""

    UNDEFINED = 0
    RTP = 1
    RAW_AUDIO = 2
    RAW_VIDEO = 3
    FILE_STREAM = 4
    TEXT = 5


class PayloadType(IntEnum):
    """MEDIA_PAYLOAD_TYPE: the codec of a media payload (audio 1-4, image/video 5-7)."""

    UNDEFINED = 0
    L16 = 1
    G711 = 2
    G722 = 3
    OPUS = 4
    JPG = 5
    PNG = 6
    H264 = 7


class AudioSampleRate(IntEnum):
    """AUDIO_SAMPLE_RATE; `.hz` is the rate in Hz."""

    SR_8K = 0
    SR_16K = 1
    SR_32K = 2
    SR_48K = 3

    @property
    def hz(self) -> int:
        return (8000, 16000, 32000, 48000)[self.value]


class AudioChannel(IntEnum):
    """Audio channel count."""

    MONO = 1
    STEREO = 2


class DataOption(IntEnum):
    """MEDIA_DATA_OPTION: mixed or per-speaker audio; active-speaker, individual or gallery video."""

    UNDEFINED = 0
    AUDIO_MIXED_STREAM = 1
    AUDIO_MULTI_STREAMS = 2
    VIDEO_SINGLE_ACTIVE_STREAM = 3
    VIDEO_SINGLE_INDIVIDUAL_STREAM = 4
    VIDEO_MIXED_GALLERY_VIEW = 5


class Resolution(IntEnum):
    """MEDIA_RESOLUTION; `.size` is (width, height) (SD is 640x360 here; Zoom also uses 854x480) and
    `.label` its common name ("720p"). The project's one table of video sizes: settings, the
    emulator's clips and ingest's granted sizes all read it from here."""

    SD = 1
    HD = 2
    FHD = 3
    QHD = 4

    @property
    def size(self) -> tuple[int, int]:
        return {1: (640, 360), 2: (1280, 720), 3: (1920, 1080), 4: (2560, 1440)}[self.value]

    @property
    def label(self) -> str:
        """The label: "360p", "720p", "1080p" or "1440p"."""
        return f"{self.size[1]}p"

    @classmethod
    def from_label(cls, label: str) -> Resolution:
        """The resolution named `label` ("720p"); ValueError for any other name."""
        for r in cls:
            if r.label == label:
                return r
        raise ValueError(f"unknown video resolution {label!r}; use one of {[r.label for r in cls]}")


class Product(StrEnum):
    """Which Zoom product an RTMS stream belongs to. The value is the Avro `Product` symbol (what
    records carry); `webhook_name` is Zoom's spelling in webhook event names, `event_prefix` the
    prefix of the product's lifecycle events (`meeting.rtms_started`, ...). Contact Center reuses
    EVENT_UPDATE types 8-29 with other meanings."""

    MEETING = "MEETING"
    WEBINAR = "WEBINAR"
    VIDEO_SDK = "VIDEO_SDK"
    CONTACT_CENTER = "CONTACT_CENTER"
    UNKNOWN = "UNKNOWN"

    @property
    def webhook_name(self) -> str:
        """The product's name in webhook events: "meeting", "webinar", "session" (Video SDK) or
        "contact_center" (UNKNOWN has none)."""
        return _WEBHOOK_NAMES[self]

    @property
    def event_prefix(self) -> str:
        """`meeting.rtms_`, `webinar.rtms_`, `session.rtms_`, `contact_center.voice_rtms_`."""
        return self.webhook_name + (".voice_rtms_" if self is Product.CONTACT_CENTER else ".rtms_")

    @classmethod
    def from_webhook_name(cls, name: str) -> Product:
        """The product Zoom's webhooks call `name`; ValueError for any other name."""
        for product, webhook_name in _WEBHOOK_NAMES.items():
            if webhook_name == name:
                return product
        raise ValueError(f"product must be one of {sorted(_WEBHOOK_NAMES.values())}, got {name!r}")

    @classmethod
    def of_event(cls, event: str) -> Product | None:
        """The product of a webhook event name (`session.rtms_stopped`: VIDEO_SDK), None if none."""
        return next((p for p in _WEBHOOK_NAMES if event.startswith(p.event_prefix)), None)


_WEBHOOK_NAMES = {
    Product.MEETING: "meeting",
    Product.WEBINAR: "webinar",
    Product.VIDEO_SDK: "session",
    Product.CONTACT_CENTER: "contact_center",
}


class TranscriptLanguage(IntEnum):
    """RTMS_TRANSCRIPT_LANGUAGE (-1 = none: automatic language identification)."""

    NONE = -1
    ARABIC = 0
    BENGALI = 1
    CANTONESE = 2
    CATALAN = 3
    CHINESE_SIMPLIFIED = 4
    CHINESE_TRADITIONAL = 5
    CZECH = 6
    DANISH = 7
    DUTCH = 8
    ENGLISH = 9
    ESTONIAN = 10
    FINNISH = 11
    FRENCH_CANADA = 12
    FRENCH_FRANCE = 13
    GERMAN = 14
    HEBREW = 15
    HINDI = 16
    HUNGARIAN = 17
    INDONESIAN = 18
    ITALIAN = 19
    JAPANESE = 20
    KOREAN = 21
    MALAY = 22
    PERSIAN = 23
    POLISH = 24
    PORTUGUESE = 25
    ROMANIAN = 26
    RUSSIAN = 27
    SPANISH = 28
    SWEDISH = 29
    TAGALOG = 30
    TAMIL = 31
    TELUGU = 32
    THAI = 33
    TURKISH = 34
    UKRAINIAN = 35
    VIETNAMESE = 36


MEDIA_MSG_TYPES = frozenset(
    {
        MsgType.MEDIA_DATA_AUDIO,
        MsgType.MEDIA_DATA_VIDEO,
        MsgType.MEDIA_DATA_SHARE,
        MsgType.MEDIA_DATA_TRANSCRIPT,
        MsgType.MEDIA_DATA_CHAT,
    }
)
TEXT_MSG_TYPES = frozenset({MsgType.MEDIA_DATA_TRANSCRIPT, MsgType.MEDIA_DATA_CHAT})
