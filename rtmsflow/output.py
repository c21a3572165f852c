"""Where the sinks' files are, as `rtmsflow demo` and `rtmsflow up` read them back: a directory, or
a bucket (`RTMSFLOW_DATA_DIR=s3://bucket/prefix`, listed with boto3). Both name a stream directory as
it is shown (a path, or `s3://bucket/<key prefix>`) and raise `OSError` when it cannot be read."""

from __future__ import annotations

import contextlib
import json
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from rtmsflow.s3_client import S3_SCHEME, BucketTarget, S3Options, make_client, parse_target
from rtmsflow.settings import Settings

T = TypeVar("T")

MANIFEST_SUFFIX = "manifest.json"  # manifest.json (media), transcript.manifest.json


class ManifestRef(NamedTuple):
    """A manifest a sink published: its stream directory (as shown) and its name."""

    stream_dir: str
    name: str


class Output(ABC):
    """The sinks' files under one data dir (`<date>/<meeting>/<stream>/<file>`)."""

    where: str  # the data dir as shown

    @abstractmethod
    def manifests(self, since_wall_s: float) -> list[ManifestRef]:
        """The manifests published (renamed or PUT into place) since `since_wall_s`, sorted."""

    @abstractmethod
    def read(self, ref: ManifestRef) -> dict[str, Any]:
        """A manifest's facts."""

    @abstractmethod
    def files(self, stream_dir: str) -> dict[str, int]:
        """name -> bytes of a stream directory's files (hidden ones left out), by name."""

    def describe(self, since_wall_s: float) -> dict[str, Any]:
        """Each stream directory with a manifest published since `since_wall_s`: its meeting, its
        files (bytes) and its manifests' facts."""
        report: dict[str, Any] = {}
        for ref in self.manifests(since_wall_s):
            facts = self.read(ref)
            if ref.stream_dir not in report:
                report[ref.stream_dir] = {
                    "meeting_uuid": facts.get("meeting_uuid"),
                    "files": self.files(ref.stream_dir),
                    "manifests": {},
                }
            report[ref.stream_dir]["manifests"][ref.name] = facts
        return report


class DirectoryOutput(Output):
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.where = str(directory)

    def manifests(self, since_wall_s: float) -> list[ManifestRef]:
        found = []
        for p in self.directory.glob(f"*/*/*/*{MANIFEST_SUFFIX}"):
            with contextlib.suppress(OSError):  # gone since the listing (retention)
                if p.stat().st_mtime >= since_wall_s:
                    found.append(ManifestRef(str(p.parent), p.name))
        return sorted(found)

    def read(self, ref: ManifestRef) -> dict[str, Any]:
        facts: dict[str, Any] = json.loads((Path(ref.stream_dir) / ref.name).read_text())
        return facts

    def files(self, stream_dir: str) -> dict[str, int]:
        found = sorted(Path(stream_dir).iterdir())
        return {f.name: f.stat().st_size for f in found if f.is_file() and not f.name.startswith(".")}


class BucketOutput(Output):
    def __init__(self, target: BucketTarget, client: Any) -> None:
        self.target = target
        self.client = client
        self.where = target.uri
        self._root = f"{S3_SCHEME}{target.bucket}/"

    def manifests(self, since_wall_s: float) -> list[ManifestRef]:
        prefix = f"{self.target.prefix}/" if self.target.prefix else ""
        found = []
        for o in self._objects(prefix):
            where, _, name = o["Key"].rpartition("/")
            if (
                len(o["Key"][len(prefix) :].split("/")) == 4  # <date>/<meeting>/<stream>/<file>
                and name.endswith(MANIFEST_SUFFIX)
                and o["LastModified"].timestamp() >= int(since_wall_s)  # S3 keeps whole seconds
            ):
                found.append(ManifestRef(self._root + where, name))
        return sorted(found)

    def read(self, ref: ManifestRef) -> dict[str, Any]:
        key = f"{self._key(ref.stream_dir)}/{ref.name}"
        body = self._call(
            f"cannot read {self._root}{key}",
            lambda: self.client.get_object(Bucket=self.target.bucket, Key=key)["Body"].read(),
        )
        facts: dict[str, Any] = json.loads(body)
        return facts

    def files(self, stream_dir: str) -> dict[str, int]:
        base = f"{self._key(stream_dir)}/"
        names = {o["Key"][len(base) :]: int(o["Size"]) for o in self._objects(base)}
        return {n: size for n, size in sorted(names.items()) if "/" not in n and not n.startswith(".")}

    def _key(self, stream_dir: str) -> str:
        if not stream_dir.startswith(self._root):
            raise ValueError(f"{stream_dir} is not in {self.where}")
        return stream_dir[len(self._root) :]

    def _objects(self, prefix: str) -> list[dict[str, Any]]:
        """Every object under `prefix` (a key ending in `/` is a server's directory marker: left out)."""

        def call() -> list[dict[str, Any]]:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.target.bucket, Prefix=prefix
            )
            return [o for page in pages for o in page.get("Contents", []) if not o["Key"].endswith("/")]

        return self._call(f"cannot list {self._root}{prefix}", call)

    @staticmethod
    def _call(what: str, call: Callable[[], T]) -> T:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return call()
        except (BotoCoreError, ClientError) as exc:
            raise OSError(f"{what}: {exc}") from exc


def open_output(settings: Settings) -> Output:
    """The data dir of `settings`: a bucket for `s3://bucket/prefix`, else a directory."""
    target = parse_target(settings.data_dir)
    if target is None:
        return DirectoryOutput(Path(settings.data_dir).resolve())
    return BucketOutput(target, make_client(S3Options.from_settings(settings)))
