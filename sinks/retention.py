"""Retention of the sinks' files: `rtmsflow prune --older-than 30d` and `rtmsflow forget --meeting M`.

Pure look-ups (what would be deleted): a stream directory expires when every manifest in it says it
stopped before the cut-off; one without a manifest or with a temporary file is never pruned; symbolic
links are never followed."""

from __future__ import annotations

import datetime as dt
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from sinks.atomic import fsync_dir, is_partial
from sinks.layout import LayoutError, date_dir_start_ms, encode_component, parse_stream_dir
from sinks.manifest import read_manifest
from sinks.media_stream_files import MEDIA_MANIFEST
from sinks.transcript_stream import TRANSCRIPT_MANIFEST

_AGE = re.compile(r"^\s*(\d+)\s*([dhms])\s*$")
_UNIT_MS = {"d": 86_400_000, "h": 3_600_000, "m": 60_000, "s": 1000}
_DAY_MS = 86_400_000


def parse_age(text: str) -> int:
    """`30d`, `12h`, `90m`, `45s` in ms; ValueError for anything else."""
    match = _AGE.match(text)
    if not match:
        raise ValueError(f"not an age: {text!r} (use e.g. 30d, 12h, 90m)")
    return int(match.group(1)) * _UNIT_MS[match.group(2)]


@dataclass(frozen=True)
class StreamFilesOnDisk:
    """One stream directory: its ids, when it stopped (latest of its manifests), its size."""

    path: Path
    meeting_uuid: str
    rtms_stream_id: str
    stop_ms: int
    bytes: int


def _real_dirs(parent: Path) -> list[Path]:
    """The sub-directories of `parent` that are directories themselves, not links to one, sorted."""
    return sorted(p for p in parent.iterdir() if not p.is_symlink() and p.is_dir())


def _finished(data_dir: Path, stream_dir: Path) -> StreamFilesOnDisk | None:
    """The stream's facts when it is finalized (a manifest, no temporary file), else None."""
    try:
        parsed = parse_stream_dir(data_dir, stream_dir)
    except LayoutError:
        return None
    files = [p for p in stream_dir.iterdir() if not p.is_symlink() and p.is_file()]
    if any(is_partial(p) for p in files):
        return None
    manifests = [stream_dir / n for n in (MEDIA_MANIFEST, TRANSCRIPT_MANIFEST) if (stream_dir / n).is_file()]
    if not manifests:
        return None
    stops = [s["stop_ms"] for m in manifests for s in read_manifest(m)["streams"]]
    return StreamFilesOnDisk(
        stream_dir,
        parsed.meeting_uuid,
        parsed.rtms_stream_id,
        max(stops),
        sum(p.stat().st_size for p in files),
    )


def find_expired(data_dir: Path, older_than_ms: int, now_ms: int) -> list[StreamFilesOnDisk]:
    """Finalized streams that stopped before `now_ms - older_than_ms`, oldest date first."""
    cutoff = now_ms - older_than_ms
    out: list[StreamFilesOnDisk] = []
    if not data_dir.is_dir():
        return out
    for date_dir in _real_dirs(data_dir):
        start = date_dir_start_ms(date_dir.name)
        if start is None or start >= cutoff:
            continue
        for meeting_dir in _real_dirs(date_dir):
            for stream_dir in _real_dirs(meeting_dir):
                found = _finished(data_dir, stream_dir)
                if found is not None and found.stop_ms < cutoff:
                    out.append(found)
    return out


def meeting_dirs(data_dir: Path, meeting_uuid: str) -> list[Path]:
    """Every `<date>/<meeting dir>` of a meeting (one per date its streams started on)."""
    name = encode_component(meeting_uuid)
    if not data_dir.is_dir():
        return []
    return [
        p / name
        for p in _real_dirs(data_dir)
        if date_dir_start_ms(p.name) is not None and not (p / name).is_symlink() and (p / name).is_dir()
    ]


class OutsideDataDir(ValueError):
    """A path to delete is a symbolic link, passes through one, or is not under the data directory."""


def remove_tree(path: Path, data_dir: Path) -> None:
    """Delete a stream or meeting directory, then its parents up to `data_dir` if they are empty.
    `OutsideDataDir` (nothing deleted) for a path that is or passes through a link below `data_dir`."""
    try:
        relative = path.relative_to(data_dir)
    except ValueError:
        raise OutsideDataDir(f"{path} is not under {data_dir}") from None
    step = data_dir
    for part in relative.parts:
        step = step / part
        if step.is_symlink():
            raise OutsideDataDir(f"{step} is a symbolic link: not followed")
    if not relative.parts or not path.is_dir():
        raise OutsideDataDir(f"{path} is not a directory under {data_dir}")
    shutil.rmtree(path)  # does not follow links inside the tree: it removes the links themselves
    parent = path.parent
    while parent != data_dir and parent.is_relative_to(data_dir) and not any(parent.iterdir()):
        parent.rmdir()
        parent = parent.parent
    fsync_dir(parent)


def today_ms() -> int:
    """Now, ms since the epoch (UTC): the only clock prune reads, for its cut-off."""
    return int(dt.datetime.now(dt.UTC).timestamp() * 1000)
