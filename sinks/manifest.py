"""`manifest.json`: what a finalized stream directory holds, and the proof that it is complete.

Written last, it lists the stream's times, counts, gaps, participants, how it ended and each file's size
and SHA-256. Deterministic (sorted keys, fixed order, no wall-clock time or host path), so replay writes the
same bytes."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

MANIFEST_FORMAT = "rtmsflow.manifest"
MANIFEST_VERSION = 1
HASH_CHUNK_BYTES = 1 << 20
HASH_THREADS = 4

EndHow = Literal["marker", "idle_timeout"]


@dataclass(frozen=True, order=True)
class Gap:
    """Media missing from a track: `duration_ms` from `start_ms` (RTMS ms) in `kind` of a participant,
    and why, when the gap record said (`LOSS`, `PAUSE`, `SILENT`, `VIDEO_OFF`, `INGEST_DIED`, ...)."""

    start_ms: int
    kind: str
    participant_id: int
    duration_ms: int
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "start_ms": self.start_ms,
            "kind": self.kind,
            "participant_id": self.participant_id,
            "duration_ms": self.duration_ms,
        }
        if self.reason is not None:  # a reader must tell a lost stretch from a dead ingest or a pause
            out["reason"] = self.reason
        return out


@dataclass(frozen=True)
class StreamEnd:
    """How a stream ended: by its in-band marker (with counts), or after an idle timeout."""

    how: EndHow
    marker_counts: Mapping[str, int] | None = None
    received_counts: Mapping[str, int] | None = None
    stop_reason: int | None = None

    @classmethod
    def by_marker(
        cls,
        marker_counts: Mapping[str, int],
        received_counts: Mapping[str, int],
        stop_reason: int | None = None,
    ) -> StreamEnd:
        """Ended by the end-of-stream marker, which says how many records of each kind were written."""
        return cls("marker", dict(marker_counts), dict(received_counts), stop_reason)

    @classmethod
    def by_idle_timeout(cls, received_counts: Mapping[str, int]) -> StreamEnd:
        """No marker came; the sink gave up waiting after its idle timeout."""
        return cls("idle_timeout", None, dict(received_counts), None)

    @property
    def matched(self) -> bool | None:
        """Whether every kind the marker counts was received that many times (None without a marker)."""
        if self.marker_counts is None:
            return None
        received = self.received_counts or {}
        return all(received.get(kind, 0) == count for kind, count in self.marker_counts.items())

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"how": self.how, "received_counts": dict(self.received_counts or {})}
        if self.how == "marker":
            out.update(
                marker_counts=dict(self.marker_counts or {}),
                matched=self.matched,
                stop_reason=self.stop_reason,
            )
        return out


@dataclass(frozen=True)
class StreamSummary:
    """One RTMS stream's facts for the manifest (times are RTMS ms since the epoch)."""

    rtms_stream_id: str
    start_ms: int
    stop_ms: int
    frame_counts: Mapping[str, int]
    gaps: Sequence[Gap]
    late_count: int
    duplicate_count: int
    end: StreamEnd

    @property
    def duration_ms(self) -> int:
        return max(0, self.stop_ms - self.start_ms)

    def to_json(self) -> dict[str, Any]:
        return {
            "rtms_stream_id": self.rtms_stream_id,
            "start_ms": self.start_ms,
            "stop_ms": self.stop_ms,
            "duration_ms": self.duration_ms,
            "frame_counts": dict(self.frame_counts),
            "gaps": [g.to_json() for g in sorted(self.gaps)],
            "late_count": self.late_count,
            "duplicate_count": self.duplicate_count,
            "ended": self.end.to_json(),
        }


@dataclass(frozen=True)
class FileEntry:
    """One published file: its name relative to the stream directory, size and SHA-256 (hex)."""

    name: str
    size: int
    sha256: str

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "size": self.size, "sha256": self.sha256}


def hash_file(path: Path, chunk_bytes: int = HASH_CHUNK_BYTES) -> tuple[int, str]:
    """(size, SHA-256 hex) of a file, read a chunk at a time (memory does not grow with the file)."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def file_entries(files: Mapping[str, Path]) -> list[FileEntry]:
    """Entries for final name -> path where the bytes are now (e.g. `FileGroup.partials()`), by name.

    The files are hashed on threads at once (hashlib and file reads release the GIL): a stream's
    finalize waits for its biggest file, not for the sum, when a second core is free."""
    names = sorted(files)
    if len(names) < 2:
        return [FileEntry(name, *hash_file(files[name])) for name in names]
    with ThreadPoolExecutor(max_workers=min(HASH_THREADS, len(names)), thread_name_prefix="hash") as pool:
        hashed = list(pool.map(hash_file, (files[name] for name in names)))
    return [FileEntry(name, size, sha) for name, (size, sha) in zip(names, hashed, strict=True)]


@dataclass
class StreamTally:
    """Counts one stream's records as a sink consumes them (pure; feeds `StreamSummary`).

    Frame kinds are free strings (`audio`, `video`, `deskshare`, `transcript`, ...); `observe` takes
    each record's RTMS timestamp and media duration so start/stop cover the whole stream.
    """

    rtms_stream_id: str
    start_ms: int | None = None
    stop_ms: int | None = None
    frame_counts: dict[str, int] = field(default_factory=dict)
    gaps: list[Gap] = field(default_factory=list)
    late_count: int = 0
    duplicate_count: int = 0
    participants: dict[int, str | None] = field(default_factory=dict)

    def observe(self, kind: str, timestamp_ms: int, duration_ms: int = 0) -> None:
        """One record of `kind` received in order."""
        self.frame_counts[kind] = self.frame_counts.get(kind, 0) + 1
        end = timestamp_ms + max(0, duration_ms)
        self.start_ms = timestamp_ms if self.start_ms is None else min(self.start_ms, timestamp_ms)
        self.stop_ms = end if self.stop_ms is None else max(self.stop_ms, end)

    def gap(
        self, kind: str, participant_id: int, start_ms: int, duration_ms: int, reason: str | None = None
    ) -> None:
        """A gap the processors marked (or the sink filled) before a record, with its reason if known."""
        if duration_ms > 0:
            self.gaps.append(Gap(start_ms, kind, participant_id, duration_ms, reason))

    def late(self, count: int = 1) -> None:
        self.late_count += count

    def duplicate(self, count: int = 1) -> None:
        self.duplicate_count += count

    def participant(self, participant_id: int, name: str | None) -> None:
        """A participant seen in the stream; a later non-empty name replaces an earlier one."""
        if name or participant_id not in self.participants:
            self.participants[participant_id] = name or None

    def summary(
        self, end: StreamEnd, start_ms: int | None = None, stop_ms: int | None = None
    ) -> StreamSummary:
        """The stream's summary; `start_ms`/`stop_ms` override what the records showed (e.g. origin)."""
        start = start_ms if start_ms is not None else (self.start_ms or 0)
        stop = stop_ms if stop_ms is not None else (self.stop_ms if self.stop_ms is not None else start)
        return StreamSummary(
            self.rtms_stream_id,
            start,
            stop,
            dict(self.frame_counts),
            list(self.gaps),
            self.late_count,
            self.duplicate_count,
            end,
        )


def build_manifest(
    meeting_uuid: str,
    streams: Iterable[StreamSummary],
    participants: Mapping[int, str | None],
    files: Iterable[FileEntry],
) -> dict[str, Any]:
    """The manifest as a JSON-ready dict, every list in a fixed order."""
    file_list = sorted(files, key=lambda f: f.name)
    names = [f.name for f in file_list]
    if len(set(names)) != len(names):
        raise ValueError(f"a file is listed twice: {names}")
    return {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "meeting_uuid": meeting_uuid,
        "streams": [s.to_json() for s in sorted(streams, key=lambda s: (s.start_ms, s.rtms_stream_id))],
        "participants": [{"participant_id": pid, "name": participants[pid]} for pid in sorted(participants)],
        "files": [f.to_json() for f in file_list],
    }


def encode_manifest(manifest: Mapping[str, Any]) -> bytes:
    """The manifest's bytes: sorted keys, indent 2, UTF-8, final newline."""
    return (json.dumps(manifest, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def read_manifest(path: Path) -> dict[str, Any]:
    """Load a manifest and check its format tag and version."""
    manifest = json.loads(path.read_bytes())
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"{path} is not an rtmsflow manifest")
    if manifest.get("version") != MANIFEST_VERSION:
        raise ValueError(f"{path}: manifest version {manifest.get('version')} is not {MANIFEST_VERSION}")
    return manifest


def verify_files(manifest: Mapping[str, Any], directory: Path) -> list[str]:
    """Names of listed files that are missing or whose size or SHA-256 differ (empty: all good)."""
    bad = []
    for entry in manifest["files"]:
        path = directory / entry["name"]
        if not path.is_file() or hash_file(path) != (entry["size"], entry["sha256"]):
            bad.append(entry["name"])
    return bad
