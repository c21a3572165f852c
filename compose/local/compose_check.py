"""The checks `scripts/compose-check` runs from the project's venv against the compose stack.

Each subcommand (`--help` lists them) prints one JSON object and exits 0 when its check holds, 1
otherwise (the reason in its `problems`). They reach the stack only as a user would: Kafka and HTTP
on 127.0.0.1, the sinks' data volume and the bucket."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import wave
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from schemas.topics import RAW_TOPICS as _RAW_SPECS
from schemas.topics import STREAM_END_HEADER

RAW_TOPICS = tuple(spec.name for spec in _RAW_SPECS)  # every raw topic, chat included
# Files a finalized stream must hold, with the least size that means "has content" (bytes).
MEDIA_FILES = {"recording.mp4": 50_000, "audio.wav": 10_000, "manifest.json": 100}
TRANSCRIPT_FILES = {"transcript.txt": 20, "transcript.vtt": 20, "transcript.srt": 20, "transcript.jsonl": 20}
# Dashboard panels whose first query must return data after a played meeting (the rest may be
# legitimately empty, e.g. dead letters when nothing was bad).
MUST_HAVE_DATA = (
    "Consumer lag",
    "Frames in / out",
    "Active meetings",
    "Finalize time",
    "Stages up",
)


# Settings docker-compose.yml deliberately does not pass on to the stages (every other one is passed,
# so a value in compose/.env reaches them); `settings` fails on a setting in neither place.
NOT_PASSED = {
    "RTMSFLOW_CACHE": "the image sets it (its own cache directory)",
    "RTMSFLOW_SDK_HOME": "under the image's cache directory",
    "RTMSFLOW_SDK_PYTHON": "the image's interpreter",
    "RTMSFLOW_KAFKA_STATE": "the local broker's (`rtmsflow kafka up`), not used with the kafka service",
    "RTMSFLOW_DEMO_KEEP_BROKER": "`rtmsflow demo` only",
    "RTMSFLOW_INGEST_GROUP": "one stack, one set of consumer groups (the defaults)",
    "RTMSFLOW_PROCESS_GROUP": "one stack, one set of consumer groups (the defaults)",
    "RTMSFLOW_SINK_MEDIA_GROUP": "one stack, one set of consumer groups (the defaults)",
    "RTMSFLOW_SINK_TRANSCRIPTS_GROUP": "one stack, one set of consumer groups (the defaults)",
}  # RTMSFLOW_DATA_DIR, RTMSFLOW_S3_* and RTMSFLOW_SPOOL_DIR are passed (the minio service by default)


def settings_passed(compose_file: Path) -> dict[str, Any]:
    """Which settings COMPOSE_FILE gives the stages: an environment key of that name anywhere in
    the file (the shared x-stage-env block or a service's own), e.g. `  RTMSFLOW_LOG_LEVEL:`."""
    from rtmsflow.settings import Settings

    keys = set(re.findall(r"^\s+([A-Z][A-Z0-9_]*):", compose_file.read_text(), flags=re.MULTILINE))
    wanted = {names[0] for names in Settings.env_names().values()}
    problems = [
        f"{name} is neither passed by {compose_file.name} nor listed in NOT_PASSED"
        for name in sorted(wanted - keys - set(NOT_PASSED))
    ]
    problems += [
        f"{name} is in NOT_PASSED but {compose_file.name} passes it"
        for name in sorted(keys & set(NOT_PASSED))
    ]
    problems += [f"{name} is in NOT_PASSED but is no setting" for name in sorted(set(NOT_PASSED) - wanted)]
    return {"passed": sorted(wanted & keys), "not_passed": NOT_PASSED, "problems": problems}


def _emit(report: dict[str, Any]) -> int:
    print(json.dumps(report, sort_keys=True))
    return 1 if report.get("problems") else 0


def free_ports(count: int) -> list[int]:
    """`count` distinct ports that were free on 127.0.0.1 (all held open together while chosen)."""
    held: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            held.append(s)
        return [s.getsockname()[1] for s in held]
    finally:
        for s in held:
            s.close()


def wait_http(url: str, timeout_s: float) -> dict[str, Any]:
    """Poll GET `url` until it answers 200 or `timeout_s` passes; report how long it took."""
    started = time.monotonic()
    last = "no answer"
    while time.monotonic() - started < timeout_s:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return {"url": url, "seconds": round(time.monotonic() - started, 1), "problems": []}
                last = f"HTTP {resp.status}"
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        time.sleep(0.5)
    return {"url": url, "problems": [f"not healthy after {timeout_s:.0f}s: {last}"]}


def wait_kafka(bootstrap: str, timeout_s: float) -> dict[str, Any]:
    """Poll the broker until it answers ApiVersions (rtmsflow.broker.probe)."""
    from rtmsflow.broker import probe

    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if probe(bootstrap):
            return {"bootstrap": bootstrap, "seconds": round(time.monotonic() - started, 1), "problems": []}
        time.sleep(0.5)
    return {"bootstrap": bootstrap, "problems": [f"Kafka at {bootstrap} did not answer in {timeout_s:.0f}s"]}


def _s3_client(endpoint: str, user: str, password: str) -> Any:
    from rtmsflow.s3_client import S3Options, make_client

    return make_client(S3Options(endpoint, "us-east-1", user, password, "path"))


def wait_s3(endpoint: str, user: str, password: str, timeout_s: float) -> dict[str, Any]:
    """Poll the S3 endpoint until it lists its buckets with these credentials."""
    client = _s3_client(endpoint, user, password)
    started = time.monotonic()
    last = "no answer"
    while time.monotonic() - started < timeout_s:
        try:
            buckets = [b["Name"] for b in client.list_buckets().get("Buckets", [])]
            return {
                "endpoint": endpoint,
                "buckets": buckets,
                "seconds": round(time.monotonic() - started, 1),
                "problems": [],
            }
        except Exception as exc:
            last = repr(exc)
        time.sleep(0.5)
    return {
        "endpoint": endpoint,
        "problems": [f"S3 at {endpoint} did not answer in {timeout_s:.0f}s: {last}"],
    }


def download_bucket(endpoint: str, user: str, password: str, uri: str, out: Path) -> dict[str, Any]:
    """Every object under `s3://bucket/prefix` into `out` (same relative names), with the
    multipart uploads still open there; the files are then checked as on disk."""
    from rtmsflow.s3_client import parse_target

    target = parse_target(uri)
    assert target is not None, uri
    client = _s3_client(endpoint, user, password)
    prefix = f"{target.prefix}/" if target.prefix else ""
    keys = [
        o["Key"]
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=target.bucket, Prefix=prefix)
        for o in page.get("Contents", [])
        if not o["Key"].endswith("/")
    ]
    for key in keys:
        path = out / key[len(prefix) :]
        path.parent.mkdir(parents=True, exist_ok=True)
        client.download_file(target.bucket, key, str(path))
    uploads = client.list_multipart_uploads(Bucket=target.bucket, Prefix=prefix).get("Uploads", [])
    return {"objects": len(keys), "uploads_open": [u["Key"] for u in uploads], "problems": []}


async def _raw_counts(bootstrap: str, meeting: str) -> tuple[dict[str, dict[str, int]], dict[str, int]]:
    """Per raw topic: the data records and end-of-stream markers keyed by `meeting` in the meeting's
    partition (murmur2 of the key, as the contract says), from its start to its end as of now: a
    snapshot with no consumer group, so nothing is committed. Also each topic's partition count."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from rtmsflow.admin import admin_client, partition_counts
    from rtmsflow.settings import Settings
    from schemas.topics import partition_for

    async with admin_client(Settings(kafka_bootstrap=bootstrap)) as admin:
        partitions = await partition_counts(admin, RAW_TOPICS)
    counts = {topic: {"records": 0, "markers": 0, "bytes": 0} for topic in RAW_TOPICS}
    tps = [TopicPartition(topic, partition_for(meeting, n)) for topic, n in partitions.items()]
    if not tps:
        return counts, partitions
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        pending = {tp for tp in tps if ends[tp] > 0}
        deadline = time.monotonic() + 120
        while pending and time.monotonic() < deadline:
            batch = await consumer.getmany(*pending, timeout_ms=1000, max_records=5000)
            for tp, records in batch.items():
                c = counts[tp.topic]
                for rec in records:
                    if rec.key is None or rec.key.decode("utf-8", "replace") != meeting:
                        continue
                    if rec.value is None and any(h[0] == STREAM_END_HEADER for h in rec.headers):
                        c["markers"] += 1
                    elif rec.value is not None:
                        c["records"] += 1
                        c["bytes"] += len(rec.value)
            for tp in list(pending):
                if await consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)
    finally:
        await consumer.stop()
    return counts, partitions


def raw(bootstrap: str, meeting: str, partitions: int | None = None) -> dict[str, Any]:
    """What ingest produced for `meeting`: records of every kind and one end marker per raw topic;
    with `partitions`, every raw topic has that many (the stack's RTMSFLOW_PARTITIONS reached
    the `topics` service)."""
    counts, found = asyncio.run(_raw_counts(bootstrap, meeting))
    problems = []
    if partitions is not None:
        for topic in RAW_TOPICS:
            if found.get(topic) != partitions:
                problems.append(
                    f"{topic} has {found.get(topic)} partitions, RTMSFLOW_PARTITIONS={partitions}"
                )
    for topic in ("rtms.raw.audio", "rtms.raw.video", "rtms.raw.transcript"):
        if counts.get(topic, {}).get("records", 0) == 0:
            problems.append(f"no records of the meeting in {topic}")
    for topic, c in counts.items():
        if c["markers"] == 0:
            problems.append(f"no end-of-stream marker of the meeting in {topic}")
    return {"meeting": meeting, "topics": counts, "partitions": found, "problems": problems}


async def _group_members(bootstrap: str, groups: list[str]) -> dict[str, dict[str, Any]]:
    """Per consumer group: its state and, per member (client id + member id), the partitions it owns
    of each topic (from the broker's DescribeGroups: what the group's leader assigned)."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="compose-check")
    await admin.start()
    try:
        # One group a request: aiokafka 0.14 fails to decode a DescribeGroups answer holding several
        # groups ("Buffer underrun decoding Bytes", then the connection is closed).
        responses = [await admin.describe_consumer_groups([group]) for group in groups]
    finally:
        await admin.close()
    found: dict[str, dict[str, Any]] = {}
    for response in (r for answer in responses for r in answer):
        for _error, group_id, state, _ptype, _protocol, members, *_ in response.groups:
            owned: dict[str, dict[str, list[int]]] = {}
            for member_id, client_id, _host, _metadata, assignment, *_ in members:
                decoded = ConsumerProtocolMemberAssignment.decode(assignment) if assignment else None
                owned[f"{client_id}/{member_id[-8:]}"] = {
                    topic: sorted(parts) for topic, parts in (decoded.assignment if decoded else [])
                }
            found[group_id] = {"state": state, "members": owned}
    return found


def groups(bootstrap: str, wanted: dict[str, int]) -> dict[str, Any]:
    """Each group of `wanted` has exactly that many members and every member owns at least one
    partition: replicas of a stage (`--scale`) share its work through their consumer group."""
    found = asyncio.run(_group_members(bootstrap, list(wanted)))
    problems = []
    for group, count in wanted.items():
        members = found.get(group, {}).get("members", {})
        if len(members) != count:
            problems.append(f"group {group} has {len(members)} members, expected {count}")
        for member, owned in members.items():
            if not any(owned.values()):
                problems.append(f"group {group}: member {member} owns no partition")
    return {"groups": found, "problems": problems}


def _decode_mp4(path: Path) -> dict[str, Any]:
    """Decode every packet of `path` with PyAV: stream kinds, decoded frame counts, duration."""
    import av

    frames: dict[str, int] = {}
    with av.open(str(path)) as container:
        kinds = {s.index: s.type for s in container.streams}
        video = container.streams.video[0] if container.streams.video else None
        size = f"{video.codec_context.width}x{video.codec_context.height}" if video else None
        duration_s = (container.duration or 0) / 1_000_000
        for packet in container.demux():
            for _ in packet.decode():
                kind = kinds[packet.stream.index]
                frames[kind] = frames.get(kind, 0) + 1
    return {"frames": frames, "video_size": size, "duration_s": round(duration_s, 2)}


def _wav_seconds(path: Path) -> float:
    with wave.open(str(path), "rb") as w:
        return w.getnframes() / w.getframerate()


def _manifests(data_dir: Path, meeting: str) -> list[tuple[Path, dict[str, Any]]]:
    found = []
    for path in sorted(data_dir.glob("*/*/*/*manifest.json")):
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if doc.get("meeting_uuid") == meeting:
            found.append((path, doc))
    return found


def stream_problems(stream_dir: Path, expected: dict[str, int]) -> list[str]:
    """Files of `expected` missing from `stream_dir` or smaller than their least size."""
    problems = []
    for name, least in expected.items():
        path = stream_dir / name
        if not path.is_file():
            problems.append(f"{stream_dir.name}: {name} is missing")
        elif path.stat().st_size < least:
            problems.append(f"{stream_dir.name}: {name} has {path.stat().st_size} bytes (< {least})")
    return problems


def files(data_dir: Path, meeting: str, duration_s: float) -> dict[str, Any]:
    """The sinks' output of `meeting`: every expected file, the MP4 decoded, the WAV's length near
    the meeting's, the transcript non-empty, manifests parsed."""
    manifests = _manifests(data_dir, meeting)
    names = {p.name for p, _ in manifests}
    problems: list[str] = []
    for wanted in ("manifest.json", "transcript.manifest.json"):
        if wanted not in names:
            problems.append(f"no {wanted} for meeting {meeting} under {data_dir}")
    report: dict[str, Any] = {"meeting": meeting, "streams": {}}
    for path, doc in manifests:
        stream_dir = path.parent
        entry = report["streams"].setdefault(str(stream_dir.relative_to(data_dir)), {})
        entry["files"] = {f.name: f.stat().st_size for f in sorted(stream_dir.iterdir()) if f.is_file()}
        if path.name == "manifest.json":
            problems += stream_problems(stream_dir, MEDIA_FILES)
            if (stream_dir / "recording.mp4").is_file():
                try:
                    decoded = _decode_mp4(stream_dir / "recording.mp4")
                except Exception as exc:  # any decode failure is the finding itself
                    problems.append(f"recording.mp4 does not decode: {exc!r}")
                else:
                    entry["recording.mp4"] = decoded
                    if decoded["frames"].get("video", 0) < duration_s * 10:
                        problems.append(
                            f"recording.mp4 has only {decoded['frames'].get('video', 0)} video frames"
                        )
                    if decoded["frames"].get("audio", 0) == 0:
                        problems.append("recording.mp4 has no audio frames")
            stream = (doc.get("streams") or [{}])[0]
            span_s = stream.get("duration_ms", 0) / 1000
            if (stream_dir / "audio.wav").is_file():
                # The stream's media time starts at its rtms_started webhook, so the files also hold
                # the connection's lead-in (as a gap in the manifest): they span the manifest's
                # duration, which holds at least the meeting's.
                seconds = _wav_seconds(stream_dir / "audio.wav")
                entry["audio.wav_s"] = round(seconds, 2)
                if abs(seconds - span_s) > 0.1:
                    problems.append(f"audio.wav lasts {seconds:.2f}s, its manifest says {span_s:.2f}s")
                if seconds < duration_s - 1:
                    problems.append(
                        f"audio.wav lasts {seconds:.1f}s, less than the {duration_s:.0f}s meeting"
                    )
                mp4_s = entry.get("recording.mp4", {}).get("duration_s")
                if mp4_s is not None and abs(mp4_s - seconds) > 0.5:
                    problems.append(f"recording.mp4 lasts {mp4_s}s but audio.wav {seconds:.2f}s")
            ended = stream.get("ended", {})
            entry["ended"] = f"{ended.get('how')}, counts matched: {ended.get('matched')}"
            if ended.get("how") != "marker" or not ended.get("matched"):
                problems.append(f"the media stream did not end on a matching marker: {ended}")
            entry["gaps"] = [
                f"{g['kind']} {g['duration_ms']}ms at +{g['start_ms'] - stream.get('start_ms', 0)}ms"
                for g in stream.get("gaps", [])
            ]
        else:
            problems += stream_problems(stream_dir, TRANSCRIPT_FILES)
            txt = stream_dir / "transcript.txt"
            if txt.is_file():
                lines = [line for line in txt.read_text().splitlines() if line.strip()]
                entry["transcript_lines"] = len(lines)
                entry["transcript_first"] = lines[0] if lines else None
                if not lines:
                    problems.append("transcript.txt has no lines")
    report["problems"] = problems
    return report


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.load(resp)


def dashboard_queries(dashboard: dict[str, Any]) -> Iterable[tuple[str, str]]:
    """(panel title, PromQL) of every target of every panel."""
    for panel in dashboard.get("panels", []):
        for target in panel.get("targets", []):
            if target.get("expr"):
                yield panel["title"], target["expr"]


def prometheus(url: str, dashboard_path: Path, jobs: dict[str, int]) -> dict[str, Any]:
    """`jobs[job]` scrape targets of each job, every one up, and every query of the Grafana
    dashboard evaluated."""
    problems: list[str] = []
    targets = _get_json(f"{url}/api/v1/targets")["data"]["activeTargets"]
    by_job: dict[str, list[str]] = {}
    for target in targets:
        by_job.setdefault(target["labels"]["job"], []).append(target["health"])
    health = {job: f"{found.count('up')}/{len(found)} up" for job, found in by_job.items()}
    for job, count in jobs.items():
        found = by_job.get(job, [])
        if len(found) != count or found.count("up") != count:
            problems.append(f"job {job}: {health.get(job, 'no target')}, expected {count} up")
    dashboard = json.loads(dashboard_path.read_text())
    panels: dict[str, dict[str, int]] = {}
    firsts: set[str] = set()
    for title, expr in dashboard_queries(dashboard):
        query = urllib.parse.urlencode({"query": expr})
        try:
            answer = _get_json(f"{url}/api/v1/query?{query}")
        except urllib.error.HTTPError as exc:
            problems.append(f"{title}: {expr!r} fails: {exc.read().decode(errors='replace')[:200]}")
            continue
        series = len(answer["data"]["result"])
        panels.setdefault(title, {})[expr] = series
        if title not in firsts:
            firsts.add(title)
            if series == 0 and title.startswith(MUST_HAVE_DATA):
                problems.append(f"panel {title!r}: {expr!r} returns no data")
    return {"targets": health, "panels": panels, "problems": problems}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser(
        "settings",
        help="every setting of rtmsflow/settings.py is passed by COMPOSE_FILE, or named in NOT_PASSED",
    )
    p.add_argument("compose_file", type=Path)
    p = sub.add_parser("ports", help="N distinct free TCP ports on 127.0.0.1")
    p.add_argument("count", type=int)
    p = sub.add_parser("wait-http", help="until GET URL answers 200")
    p.add_argument("url")
    p.add_argument("--timeout", type=float, default=120.0)
    p = sub.add_parser("wait-kafka", help="until the broker answers ApiVersions")
    p.add_argument("bootstrap")
    p.add_argument("--timeout", type=float, default=120.0)
    p = sub.add_parser("wait-s3", help="until the S3 endpoint lists its buckets with these credentials")
    p.add_argument("endpoint")
    p.add_argument("--user", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--timeout", type=float, default=120.0)
    p = sub.add_parser(
        "bucket",
        help="every object under URI (s3://bucket/prefix) into OUT, with the uploads still open there",
    )
    p.add_argument("endpoint")
    p.add_argument("uri")
    p.add_argument("out", type=Path)
    p.add_argument("--user", required=True)
    p.add_argument("--password", required=True)
    p = sub.add_parser(
        "raw", help="records and end-of-stream markers of MEETING in every raw topic (and N partitions each)"
    )
    p.add_argument("bootstrap")
    p.add_argument("meeting")
    p.add_argument("--partitions", type=int)
    p = sub.add_parser("groups", help="each consumer group has N members, each owning partitions")
    p.add_argument("bootstrap")
    p.add_argument("wanted", nargs="+", help="GROUP=MEMBERS")
    p = sub.add_parser("files", help="the sinks' files of MEETING: present, non-trivial, decodable")
    p.add_argument("data_dir", type=Path)
    p.add_argument("meeting")
    p.add_argument("--duration", type=float, required=True)
    p = sub.add_parser(
        "prometheus",
        help="N targets of each job, all up; every dashboard query evaluates (key ones non-empty)",
    )
    p.add_argument("url")
    p.add_argument("dashboard", type=Path)
    p.add_argument(
        "--jobs",
        default="ingest-http,ingest-worker,processor,sink-media,sink-transcripts",
        help="JOB[=TARGETS],... (1 target when not given)",
    )
    args = parser.parse_args(argv)

    if args.cmd == "settings":
        return _emit(settings_passed(args.compose_file))
    if args.cmd == "ports":
        print(" ".join(str(p) for p in free_ports(args.count)))
        return 0
    if args.cmd == "wait-http":
        return _emit(wait_http(args.url, args.timeout))
    if args.cmd == "wait-kafka":
        return _emit(wait_kafka(args.bootstrap, args.timeout))
    if args.cmd == "wait-s3":
        return _emit(wait_s3(args.endpoint, args.user, args.password, args.timeout))
    if args.cmd == "bucket":
        return _emit(download_bucket(args.endpoint, args.user, args.password, args.uri, args.out))
    if args.cmd == "raw":
        return _emit(raw(args.bootstrap, args.meeting, args.partitions))
    if args.cmd == "groups":
        return _emit(groups(args.bootstrap, _counts(args.wanted)))
    if args.cmd == "files":
        return _emit(files(args.data_dir, args.meeting, args.duration))
    return _emit(prometheus(args.url, args.dashboard, _counts(args.jobs.split(","))))


def _counts(items: list[str]) -> dict[str, int]:
    """["name=3", "other"] -> {"name": 3, "other": 1}."""
    out = {}
    for item in items:
        name, _, count = item.partition("=")
        out[name] = int(count or 1)
    return out


if __name__ == "__main__":
    sys.exit(main())
