"""`sinks.bucket_files` against a real S3-compatible server (s3proxy): parts streamed as a file grows,
objects visible only when complete, the manifest last, a kill -9 mid-upload leaves nothing behind
once the stream begins again, and an outage is waited out. The pure part planning needs no server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from emulator.media import MeetingSpec, SyntheticMeeting
from rtmsflow.children import die_with_parent
from rtmsflow.s3_server import LocalS3
from schemas.codec import Codec
from schemas.topics import AUDIO
from sinks.bucket import Bucket, S3Options, classify, parse_target
from sinks.bucket_files import BucketStorage, Part, early_parts, plan_parts
from sinks.layout import StreamLayout
from sinks.media_stream_files import MediaStreamFiles
from sinks.outage import Outage, OutageReason, OutageStopped
from sinks.stream_sink import SinkCore
from tests.sinks.support import from_meeting
from tests.support.s3 import BucketView

MIB = 1 << 20
PART = 5 * MIB  # s3proxy, like S3, refuses smaller parts but the last


# -- pure -----------------------------------------------------------------------------------------


def test_plan_parts_tiles_the_file_with_whole_parts_and_a_shorter_last() -> None:
    assert plan_parts(0, 10) == [Part(1, 0, 0)]
    assert plan_parts(10, 10) == [Part(1, 0, 10)]
    assert plan_parts(25, 10) == [Part(1, 0, 10), Part(2, 10, 10), Part(3, 20, 5)]
    for size in range(0, 57):
        parts = plan_parts(size, 7)
        assert sum(p.length for p in parts) == size
        assert [p.number for p in parts] == list(range(1, len(parts) + 1))
        assert all(p.length == 7 for p in parts[:-1])


def test_early_parts_are_whole_and_never_the_first() -> None:
    assert early_parts(19, 10) == []  # part 2 is not whole yet
    assert early_parts(20, 10) == [Part(2, 10, 10)]
    assert early_parts(35, 10) == [Part(2, 10, 10), Part(3, 20, 10)]


def test_parse_target() -> None:
    assert parse_target("./data") is None
    target = parse_target("s3://recordings/rtms/flow/")
    assert target is not None and (target.bucket, target.prefix) == ("recordings", "rtms/flow")
    assert target.key("2026-01-01/m/s/audio.wav") == "rtms/flow/2026-01-01/m/s/audio.wav"
    assert target.relative(target.key("a/b")) == "a/b"
    bare = parse_target("s3://recordings")
    assert bare is not None and bare.key("a") == "a" and bare.uri == "s3://recordings"
    with pytest.raises(ValueError):
        parse_target("s3:///nobucket")


def test_classify_tells_outages_from_bugs() -> None:
    from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

    def client_error(code: str, status: int) -> ClientError:
        return ClientError(
            {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}}, "Put"
        )

    unreachable = classify(EndpointConnectionError(endpoint_url="http://x"))
    assert unreachable is not None and unreachable.kind == "unreachable"
    assert (r := classify(NoCredentialsError())) is not None and r.kind == "credentials"
    assert (r := classify(client_error("InvalidAccessKeyId", 403))) is not None and r.kind == "credentials"
    assert (r := classify(client_error("XMinioStorageFull", 507))) is not None and r.kind == "full"
    assert (r := classify(client_error("NoSuchBucket", 404))) is not None and r.kind == "bucket"
    assert (r := classify(client_error("SlowDown", 503))) is not None and r.kind == "unavailable"
    assert classify(client_error("InvalidArgument", 400)) is None  # a bug: raised, not retried
    assert classify(ValueError("x")) is None


def test_outage_retry_waits_out_an_outage_then_clears() -> None:
    outage = Outage("t", first_backoff_s=0.001, max_backoff_s=0.002)
    calls: list[int] = []
    seen: list[object] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 4:
            seen.append(outage.current())
            raise ConnectionError("down")
        return "done"

    reason = OutageReason("unreachable", "down")
    assert outage.retry("op", flaky, lambda e: reason if isinstance(e, ConnectionError) else None) == "done"
    assert len(calls) == 4
    assert seen[0] is None and seen[-1] is not None  # shown while it lasted
    assert outage.current() is None  # and cleared by the success
    with pytest.raises(KeyError):  # not an outage: raised at once
        outage.retry("op", lambda: {}["x"], lambda e: None)
    outage.stop()
    with pytest.raises(OutageStopped):
        outage.retry("op", flaky, lambda e: reason)


# -- against s3proxy ------------------------------------------------------------------------------


def storage(view: BucketView, spool: Path) -> BucketStorage:
    out = BucketStorage(view.bucket, spool, PART)
    out._stop.set()  # the tests pump by hand: no thread racing them
    return out


def group_dir(spool: Path) -> Path:
    return spool / "2026-01-02" / "meeting" / "stream"


def test_a_growing_file_is_uploaded_in_parts_and_published_byte_identical(
    s3_target: BucketView, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    store = storage(s3_target, spool)
    group = store.group(group_dir(spool), "manifest.json", lambda n: not n.startswith("transcript."))
    group.begin()
    big, small = group.partial("recording.mp4"), group.partial("audio.wav")
    data = os.urandom(3 * PART + 1234)
    with open(big, "wb") as out:
        out.write(data[: 2 * PART + 10])  # parts 1 and 2 whole, part 3 started
        out.flush()
        assert store.pump() == 1  # part 2 only: part 1 may still be rewritten (headers)
        assert store.pump() == 0  # nothing new
        out.write(data[2 * PART + 10 :])
    assert store.pump() == 1  # part 3 is whole now
    (upload,) = s3_target.uploads()
    assert upload[0].endswith("/recording.mp4")
    assert s3_target.objects() == {}  # nothing visible while the stream is written
    # the writer rewrites its header (part 1) and a byte of an uploaded part (part 2) at close
    final = bytearray(data)
    final[0:4] = b"HEAD"
    final[PART + 7] ^= 0xFF
    big.write_bytes(bytes(final))
    small.write_bytes(b"RIFF small")
    paths = group.publish(b'{"manifest": true}\n')
    assert [p.name for p in paths] == ["audio.wav", "recording.mp4", "manifest.json"]
    assert s3_target.read("2026-01-02/meeting/stream/recording.mp4") == bytes(final)
    assert s3_target.read("2026-01-02/meeting/stream/audio.wav") == b"RIFF small"
    assert s3_target.read("2026-01-02/meeting/stream/manifest.json") == b'{"manifest": true}\n'
    assert s3_target.uploads() == []
    assert not spool.exists() or not any(spool.rglob("*"))  # the spool is emptied


def test_manifest_is_put_after_every_object(s3_target: BucketView, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    store = storage(s3_target, spool)
    group = store.group(group_dir(spool))
    group.begin()
    group.partial("a.bin").write_bytes(b"a" * 100)
    group.partial("b.bin").write_bytes(os.urandom(PART + 5))
    order: list[str] = []
    real_put, real_complete = store.bucket.put, store.bucket.complete_upload

    def put(key: str, data: bytes, retry: bool = True) -> None:
        order.append(key.rsplit("/", 1)[-1])
        real_put(key, data, retry)

    def complete(key: str, upload_id: str, etags: list[str]) -> None:
        order.append(key.rsplit("/", 1)[-1])
        real_complete(key, upload_id, etags)

    store.bucket.put, store.bucket.complete_upload = put, complete  # type: ignore[method-assign]
    group.publish(b"{}\n")
    assert sorted(order[:-1]) == ["a.bin", "b.bin"] and order[-1] == "manifest.json"


def test_begin_deletes_a_stale_manifest_and_aborts_only_its_own_uploads(
    s3_target: BucketView, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    store = storage(s3_target, spool)
    base = "2026-01-02/meeting/stream/"
    s3_target.bucket.put(s3_target.target.key(base + "manifest.json"), b"stale")
    mine = s3_target.bucket.create_upload(s3_target.target.key(base + "recording.mp4"))
    theirs = s3_target.bucket.create_upload(s3_target.target.key(base + "transcript.txt"))
    group = store.group(group_dir(spool), "manifest.json", lambda n: not n.startswith("transcript."))
    group.begin()
    assert "2026-01-02/meeting/stream/manifest.json" not in s3_target.objects()
    left = s3_target.uploads()
    assert [u[1] for u in left] == [theirs] and mine not in {u[1] for u in left}


CRASHER = """
import os, sys
from pathlib import Path
from sinks.bucket import Bucket, S3Options, parse_target
from sinks.bucket_files import BucketStorage
uri, endpoint, key, secret, spool = sys.argv[1:6]
bucket = Bucket(parse_target(uri), S3Options(endpoint, "us-east-1", key, secret, "path"))
store = BucketStorage(bucket, Path(spool), 5 << 20)
group = store.group(Path(spool) / "2026-01-02" / "meeting" / "stream")
group.begin()
path = group.partial("recording.mp4")
with open(path, "wb") as out:
    out.write(bytes(range(256)) * (11 << 12))  # 11 MiB: part 2 is whole
out = None
while not store.pump() and not group._uploads.get("recording.mp4", None):
    pass
print("uploading", flush=True)
with open(path, "ab") as out:
    while True:  # a sink still writing when it is killed
        out.write(b"x" * 4096)
"""


def test_kill_9_mid_upload_leaves_no_object_and_begin_aborts_the_upload(
    s3_target: BucketView, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    s = s3_target.settings
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            CRASHER,
            s.data_dir,
            s.s3_endpoint,
            s.s3_access_key_id,
            s.s3_secret_access_key,
            str(spool),
        ],
        stdout=subprocess.PIPE,
        preexec_fn=die_with_parent,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == b"uploading"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert len(s3_target.uploads()) == 1  # the killed sink's upload is still open
    assert s3_target.objects() == {}  # and nothing partial is visible
    # the restarted sink begins the stream again: the upload is aborted, the rebuild is identical
    store = storage(s3_target, spool)
    group = store.group(group_dir(spool))
    group.begin()
    assert s3_target.uploads() == []
    data = os.urandom(2 * PART + 99)
    group.partial("recording.mp4").write_bytes(data)
    group.publish(b"{}\n")
    assert s3_target.read("2026-01-02/meeting/stream/recording.mp4") == data


def test_an_operation_waits_while_the_server_is_down_and_completes_when_it_returns(
    tmp_path: Path,
) -> None:
    server = LocalS3(tmp_path / "s3")
    server.start()
    try:
        server.create_bucket("outage")
        target = parse_target("s3://outage/p")
        assert target is not None
        outage = Outage("t", first_backoff_s=0.05, max_backoff_s=0.2)
        bucket = Bucket(
            target,
            S3Options(server.endpoint, "us-east-1", server.access_key, server.secret_key, "path"),
            outage,
        )
        bucket.put("p/before", b"1")
        server.kill()
        done = threading.Event()
        worker = threading.Thread(target=lambda: (bucket.put("p/during", b"2"), done.set()))
        worker.start()
        seen = None
        while seen is None:  # a condition, not a sleep: the outage shows once a call failed
            seen = outage.current()
            done.wait(0.05)
        assert seen["kind"] == "unreachable" and "put p/during" in str(seen["message"])
        assert not done.is_set()
        server.start()
        worker.join(60)
        assert done.is_set() and outage.current() is None
        assert bucket.get("p/during") == b"2"
    finally:
        server.stop()


def test_a_refused_credential_is_an_outage_named_as_such(s3_target: BucketView) -> None:
    outage = Outage("t", first_backoff_s=0.01, max_backoff_s=0.01)
    options = S3Options(s3_target.server.endpoint, "us-east-1", "wrong", "wrong", "path")
    bad = Bucket(s3_target.target, options, outage)
    reasons: list[object] = []
    original = outage.fail

    def fail(reason: OutageReason) -> None:
        reasons.append(reason)
        original(reason)
        outage.stop()  # one failure is enough to see it

    outage.fail = fail  # type: ignore[method-assign]
    with pytest.raises(OutageStopped):
        bad.put(s3_target.target.key("x"), b"1")
    assert [r.kind for r in reasons] == ["credentials"]  # type: ignore[attr-defined]
    s3_target.bucket.put(s3_target.target.key("x"), b"1")  # positive control: the right key works
    assert s3_target.read("x") == b"1"


def test_a_stream_whose_start_meets_a_stopped_outage_is_not_consumed(tmp_path: Path) -> None:
    """The sink stops while storage is down at a new stream's first record: that record's offset
    stays uncommitted (the position does not move past it), so a restart reads it again."""
    outage = Outage("t")
    outage.stop()  # stopping: a retry gives up at once

    def is_finalized(layout: StreamLayout) -> bool:
        return outage.retry("head", lambda: False, lambda e: None)

    stream = from_meeting(
        SyntheticMeeting(MeetingSpec(seed=1, participants=1, duration_s=1, video=None)), "m==", "s1"
    )
    value, _ = stream.records[AUDIO.name][0]
    codec = Codec()
    core = SinkCore(
        "t", {AUDIO.name: AUDIO.name}, tmp_path, codec, MediaStreamFiles, is_finalized=is_finalized
    )
    core.feed(AUDIO.name, 0, 6, b"m==", None, [])  # positive control: a tombstone moves the position
    assert core.committable() == {(AUDIO.name, 0): 7}
    with pytest.raises(OutageStopped):
        core.feed(AUDIO.name, 0, 7, b"m==", codec.encode(AUDIO.name, value), [])
    assert core.committable() == {(AUDIO.name, 0): 7}
    assert core.open == {}
