"""`rtmsflow prune` and `rtmsflow forget` on a bucket: the rules of `sinks.retention`, over objects.

A stream prefix is expired when its manifests say it stopped before the cut-off and no multipart upload is
in progress under it; deletes remove the manifests first, so none vouches for files that are gone."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from sinks.bucket import Bucket
from sinks.layout import LayoutError, date_dir_start_ms, encode_component, parse_stream_dir
from sinks.manifest import MANIFEST_FORMAT, MANIFEST_VERSION
from sinks.media_stream_files import MEDIA_MANIFEST
from sinks.transcript_stream import TRANSCRIPT_MANIFEST

MANIFESTS = (MEDIA_MANIFEST, TRANSCRIPT_MANIFEST)


@dataclass(frozen=True)
class StreamObjects:
    """One stream's objects: its prefix (relative to the target's), ids, stop (ms), total size."""

    prefix: str
    meeting_uuid: str
    rtms_stream_id: str
    stop_ms: int
    bytes: int


def _root(bucket: Bucket) -> str:
    prefix = bucket.target.prefix
    return f"{prefix}/" if prefix else ""


def stop_ms_of(manifest: bytes, where: str) -> int:
    """The latest stop of a manifest's streams (ValueError if it is not an rtmsflow manifest)."""
    parsed = json.loads(manifest)
    if not isinstance(parsed, dict) or parsed.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"{where} is not an rtmsflow manifest")
    if parsed.get("version") != MANIFEST_VERSION:
        raise ValueError(f"{where}: manifest version {parsed.get('version')} is not {MANIFEST_VERSION}")
    return max(int(s["stop_ms"]) for s in parsed["streams"])


def find_expired(bucket: Bucket, older_than_ms: int, now_ms: int) -> list[StreamObjects]:
    """Finalized streams that stopped before `now_ms - older_than_ms`, oldest date first."""
    cutoff = now_ms - older_than_ms
    root = _root(bucket)
    out: list[StreamObjects] = []
    for date in bucket.children(root):
        start = date_dir_start_ms(date)
        if start is None or start >= cutoff:
            continue
        streams: dict[str, dict[str, int]] = {}
        for key, size in bucket.list_objects(f"{root}{date}/"):
            parts = key[len(root) :].split("/")
            if len(parts) == 4:
                streams.setdefault("/".join(parts[:3]), {})[parts[3]] = size
        busy = {key[len(root) :].rsplit("/", 1)[0] for key, _ in bucket.uploads(f"{root}{date}/")}
        for prefix, names in sorted(streams.items()):
            try:
                parsed = parse_stream_dir(Path("/"), Path("/", prefix))
            except LayoutError:
                continue
            manifests = [n for n in MANIFESTS if n in names]
            if not manifests or prefix in busy:
                continue
            stop = max(stop_ms_of(bucket.get(f"{root}{prefix}/{n}"), f"{prefix}/{n}") for n in manifests)
            if stop < cutoff:
                out.append(
                    StreamObjects(
                        prefix, parsed.meeting_uuid, parsed.rtms_stream_id, stop, sum(names.values())
                    )
                )
    return out


def meeting_prefixes(bucket: Bucket, meeting_uuid: str) -> list[str]:
    """Every `<date>/<meeting>` prefix of a meeting that has objects (one per start date)."""
    name = encode_component(meeting_uuid)
    root = _root(bucket)
    return [
        f"{date}/{name}"
        for date in bucket.children(root)
        if date_dir_start_ms(date) is not None and bucket.children(f"{root}{date}/{name}/")
    ]


def remove_prefix(bucket: Bucket, prefix: str) -> int:
    """Delete every object under a stream's or meeting's prefix, manifests first; return the count."""
    keys = [key for key, _ in bucket.list_objects(f"{_root(bucket)}{prefix.strip('/')}/")]
    manifests = [k for k in keys if k.rsplit("/", 1)[-1] in MANIFESTS]
    bucket.delete(manifests)
    bucket.delete([k for k in keys if k not in manifests])
    return len(keys)
