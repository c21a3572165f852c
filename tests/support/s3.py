"""The real S3-compatible server of the tests (s3proxy, `rtmsflow.s3_server.LocalS3`) and helpers.

s3_server (session): started on first use over a temporary directory, stopped at the end.
s3_target (function): a new bucket per test and an `s3://bucket/prefix` data dir in `settings`;
yields a `BucketView` to read what the sinks wrote (and the settings to use)."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from rtmsflow.s3_server import LocalS3
from rtmsflow.settings import Settings
from sinks.bucket import Bucket, BucketTarget, S3Options, parse_target


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalS3]:
    server = LocalS3(tmp_path_factory.mktemp("s3") / "data")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def s3_settings(settings: Settings, server: LocalS3, data_dir: str, spool: Path) -> Settings:
    """`settings` writing to `data_dir` (`s3://...`) on `server`, spooling under `spool`."""
    return dataclasses.replace(
        settings,
        data_dir=data_dir,
        s3_endpoint=server.endpoint,
        s3_region="us-east-1",
        s3_access_key_id=server.access_key,
        s3_secret_access_key=server.secret_key,
        spool_dir=str(spool),
    )


@dataclass
class BucketView:
    """A test's bucket: its target, a client, and the settings writing to it."""

    server: LocalS3
    target: BucketTarget
    bucket: Bucket
    settings: Settings

    def objects(self, under: str = "") -> dict[str, int]:
        """relative key -> size of every object under the prefix (s3proxy's own entries left out)."""
        prefix = self.target.key(under) if under else (self.target.prefix + "/" if self.target.prefix else "")
        return {self.target.relative(k): s for k, s in self.bucket.list_objects(prefix)}

    def read(self, relative: str) -> bytes:
        return self.bucket.get(self.target.key(relative))

    def files(self, stream_relative: str) -> dict[str, bytes]:
        """name -> bytes of every object of a stream directory (relative to the prefix)."""
        base = stream_relative.rstrip("/") + "/"
        return {k[len(base) :]: self.read(k) for k in sorted(self.objects(base)) if "/" not in k[len(base) :]}

    def uploads(self) -> list[tuple[str, str]]:
        return self.bucket.uploads(self.target.prefix)


def make_bucket_view(server: LocalS3, settings: Settings, tmp_path: Path) -> BucketView:
    name = f"t{uuid.uuid4().hex[:12]}"
    server.create_bucket(name)
    uri = f"s3://{name}/rec"
    target = parse_target(uri)
    assert target is not None
    s3 = s3_settings(settings, server, uri, tmp_path / "spool")
    return BucketView(server, target, Bucket(target, S3Options.from_settings(s3)), s3)


@pytest.fixture
def s3_target(s3_server: LocalS3, settings: Settings, tmp_path: Path) -> BucketView:
    return make_bucket_view(s3_server, settings, tmp_path)


def download_finalized(view: BucketView, into: Path) -> dict[str, Path]:
    """Download every stream both sinks have finalized in the bucket (both manifests there) into
    `into` under the same layout; meeting UUID -> its local stream directory (as on disk)."""
    import json

    objects = view.objects()
    done = {
        rel.rsplit("/", 1)[0]
        for rel in objects
        if rel.endswith("/manifest.json") and rel.rsplit("/", 1)[0] + "/transcript.manifest.json" in objects
    }
    out = {}
    for stream in sorted(done):
        local = into / stream
        local.mkdir(parents=True, exist_ok=True)
        for rel in objects:
            if rel.startswith(stream + "/") and "/" not in rel[len(stream) + 1 :]:
                view.bucket.download(view.target.key(rel), into / rel)
        out[json.loads((local / "manifest.json").read_text())["meeting_uuid"]] = local
    return out
