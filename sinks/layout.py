"""Where a stream's files live: `<data dir>/<yyyy-mm-dd>/<meeting dir>/<stream dir>/<file>`.

Dated by the stream's start in UTC from its first RTMS timestamp. `encode_component` names meeting and
stream dirs injectively in `[a-z0-9_-]` (upper case as `_x`, other bytes as `-hh`, Windows' reserved
names escaped): base64 UUIDs never collide, even on case-insensitive file systems. Too long: `LayoutError`."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path

# File systems limit a name to 255 bytes; stay well below so a suffix (".partial") always fits.
MAX_COMPONENT_CHARS = 200

_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")
_UPPER = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_HEX = "0123456789abcdef"
_WINDOWS_RESERVED = frozenset(
    ["con", "prn", "aux", "nul"] + [f"com{i}" for i in range(10)] + [f"lpt{i}" for i in range(10)]
)
_DATE_DIR = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class LayoutError(ValueError):
    """An id that cannot be turned into a directory name, or a name that is not one of ours.

    `value` is the offending id or name; `reason` says what is wrong with it.
    """

    def __init__(self, reason: str, value: str) -> None:
        super().__init__(f"{reason}: {value!r}")
        self.reason = reason
        self.value = value


def _escape_byte(byte: int) -> str:
    return "-" + _HEX[byte >> 4] + _HEX[byte & 0x0F]


def encode_component(value: str) -> str:
    """Encode an id (meeting UUID, stream id) as one safe, collision-free, reversible path component."""
    if not value:
        raise LayoutError("empty id", value)
    parts: list[str] = []
    for char in value:
        if char in _PLAIN:
            parts.append(char)
        elif char in _UPPER:
            parts.append("_" + char.lower())
        else:
            parts.extend(_escape_byte(b) for b in char.encode("utf-8"))
    if "".join(parts) in _WINDOWS_RESERVED:
        # Only all-plain names can be reserved words; escaping the first byte keeps decode exact.
        parts[0] = _escape_byte(ord(parts[0]))
    name = "".join(parts)
    if len(name) > MAX_COMPONENT_CHARS:
        raise LayoutError(f"encoded id longer than {MAX_COMPONENT_CHARS} characters", value)
    return name


def decode_component(name: str) -> str:
    """Invert `encode_component`; a name that `encode_component` never produces raises `LayoutError`."""
    if not name:
        raise LayoutError("empty name", name)
    out = bytearray()
    i = 0
    while i < len(name):
        char = name[i]
        if char in _PLAIN:
            out.append(ord(char))
            i += 1
        elif char == "_":
            if i + 1 >= len(name) or name[i + 1] not in _PLAIN or name[i + 1].isdigit():
                raise LayoutError("'_' must be followed by a lower-case letter", name)
            out.append(ord(name[i + 1].upper()))
            i += 2
        elif char == "-":
            pair = name[i + 1 : i + 3]
            if len(pair) != 2 or any(c not in _HEX for c in pair):
                raise LayoutError("'-' must be followed by two lower-case hex digits", name)
            out.append(int(pair, 16))
            i += 3
        else:
            raise LayoutError(f"character {char!r} is not used by the encoding", name)
    try:
        value = out.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LayoutError("escaped bytes are not UTF-8", name) from exc
    # One id, one name: a hand-made spelling such as "-61" for "a" would be a second directory.
    if encode_component(value) != name:
        raise LayoutError("not the canonical encoding of its id", name)
    return value


def date_dir(start_ms: int) -> str:
    """The `yyyy-mm-dd` directory of a stream that started at `start_ms` (ms since the epoch, UTC)."""
    # Integer arithmetic (no float seconds): the last millisecond of a day stays on that day.
    try:
        start = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(milliseconds=start_ms)
    except OverflowError:  # past year 9999 or before year 1: no date (ingest refuses such a start)
        raise LayoutError("stream start time out of range", str(start_ms)) from None
    return f"{start.year:04d}-{start.month:02d}-{start.day:02d}"  # strftime drops the zeros before year 1000


def date_dir_start_ms(name: str) -> int | None:
    """The start (ms since the epoch, UTC) of the day a `yyyy-mm-dd` directory names; None for a
    name that is not a date directory."""
    try:
        day = dt.datetime.strptime(name, "%Y-%m-%d").replace(tzinfo=dt.UTC)
    except ValueError:
        return None
    return int(day.timestamp()) * 1000


def participant_wav_name(participant_id: int) -> str:
    """File name of one participant's audio track: `audio-<participant id>.wav`."""
    if participant_id < 0:
        raise LayoutError("participant id must not be negative", str(participant_id))
    return f"audio-{participant_id}.wav"


def participant_video_name(participant_id: int) -> str:
    """File name of one participant's camera (individual video): `video-<participant id>.mp4`."""
    if participant_id < 0:
        raise LayoutError("participant id must not be negative", str(participant_id))
    return f"video-{participant_id}.mp4"


def channel_wav_name(channel_id: str) -> str:
    """File name of a Contact Center channel's audio track (channels are strings, so encoded)."""
    return f"audio-ch-{encode_component(channel_id)}.wav"


@dataclass(frozen=True)
class StreamLayout:
    """The directory of one RTMS stream of one meeting, under a data directory.

    >>> StreamLayout(Path("/data"), "aB/+=", "s1", 0).stream_dir
    PosixPath('/data/1970-01-01/a_b-2f-2b-3d/s1')
    """

    data_dir: Path
    meeting_uuid: str
    rtms_stream_id: str
    start_ms: int

    @property
    def meeting_dir(self) -> Path:
        """`<data dir>/<yyyy-mm-dd>/<meeting dir>` (the date of this stream's start)."""
        return self.data_dir / date_dir(self.start_ms) / encode_component(self.meeting_uuid)

    @property
    def stream_dir(self) -> Path:
        """`<meeting dir>/<stream dir>`: every file of this stream, and its manifest."""
        return self.meeting_dir / encode_component(self.rtms_stream_id)

    def path(self, name: str) -> Path:
        """The final path of the file `name` of this stream (`recording.mp4`, `audio.wav`, ...)."""
        if not name or "/" in name or name in (".", "..") or name.startswith("."):
            raise LayoutError("not a plain file name", name)
        return self.stream_dir / name


@dataclass(frozen=True)
class ParsedStreamDir:
    """What a stream directory's path says: its date dir, meeting UUID and stream id."""

    date: str
    meeting_uuid: str
    rtms_stream_id: str


def parse_stream_dir(data_dir: Path, stream_dir: Path) -> ParsedStreamDir:
    """Read back a stream directory made by `StreamLayout` (for prune, forget and replay)."""
    try:
        relative = stream_dir.relative_to(data_dir)
    except ValueError as exc:
        raise LayoutError("not under the data directory", str(stream_dir)) from exc
    if len(relative.parts) != 3:
        raise LayoutError("expected <date>/<meeting>/<stream>", str(relative))
    date, meeting, stream = relative.parts
    if not _DATE_DIR.match(date):
        raise LayoutError("not a yyyy-mm-dd directory", date)
    return ParsedStreamDir(date, decode_component(meeting), decode_component(stream))
