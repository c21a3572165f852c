"""A stream's files published to a bucket with the guarantees of `sinks.atomic.FileGroup` on disk.

Writers work in a local spool; `BucketFileGroup` streams whole parts as multipart uploads (not part 1),
verifies them by MD5 at publish, completes the uploads and PUTs the manifest last; `begin` removes a stale
manifest and aborts a crash's uploads. Outages block in `Outage.retry`."""

from __future__ import annotations

import hashlib
import threading
import weakref
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePath, PurePosixPath

from rtmsflow.logs import get_logger
from sinks.atomic import MANIFEST_NAME, FileGroup, FileGroupError
from sinks.bucket import Bucket
from sinks.layout import StreamLayout

log = get_logger(__name__)

PUMP_INTERVAL_S = 0.5
# files of a stream published at once, and parts of each file: at most 4 parts (32 MiB) in memory
PUBLISH_THREADS = 2
PART_THREADS = 2


@dataclass(frozen=True)
class Part:
    """Part `number` (1-based) of a file: bytes [start, start + length)."""

    number: int
    start: int
    length: int


def plan_parts(size_bytes: int, part_bytes: int) -> list[Part]:
    """The parts of a file of `size_bytes`: whole `part_bytes` parts, the last one shorter (pure)."""
    if part_bytes <= 0:
        raise ValueError("part_bytes must be positive")
    parts: list[Part] = []
    start = 0
    while start < size_bytes or not parts:
        length = min(part_bytes, size_bytes - start)
        parts.append(Part(len(parts) + 1, start, length))
        start += length
        if length == 0:
            break
    return parts


def early_parts(size_bytes: int, part_bytes: int) -> list[Part]:
    """The parts a growing file of `size_bytes` can upload now: whole parts, part 1 excepted."""
    return [p for p in plan_parts(size_bytes, part_bytes) if p.number > 1 and p.length == part_bytes]


def region_md5(path: Path, part: Part) -> tuple[bytes, str]:
    """(bytes, MD5 hex) of a part of a file (one read: the part is in memory once)."""
    with open(path, "rb") as handle:
        handle.seek(part.start)
        data = handle.read(part.length)
    return data, hashlib.md5(data, usedforsecurity=False).hexdigest()


@dataclass
class _Upload:
    """One file's multipart upload: its id and the parts uploaded so far (number -> (md5, etag))."""

    key: str
    upload_id: str
    parts: dict[int, tuple[str, str]] = field(default_factory=dict)


class BucketStorage:
    """Files under a spool directory, published to a bucket (see the module docstring)."""

    def __init__(self, bucket: Bucket, spool_root: Path, part_bytes: int = 8 << 20) -> None:
        self.bucket = bucket
        self.root = spool_root
        self.part_bytes = part_bytes
        self.outage = bucket.outage
        self._groups: weakref.WeakSet[BucketFileGroup] = weakref.WeakSet()
        self._groups_lock = threading.Lock()
        self._stop = threading.Event()
        self._pump = threading.Thread(target=self._pump_loop, name="s3-parts", daemon=True)
        self._pump.start()

    @property
    def where(self) -> str:
        return self.bucket.target.uri

    def key_of(self, directory: Path, name: str = "") -> str:
        """The object key of `name` in a spool directory (or of the directory itself)."""
        relative = PurePosixPath(*directory.relative_to(self.root).parts)
        return self.bucket.target.key(str(relative / name) if name else str(relative))

    def group(
        self, directory: Path, manifest_name: str = MANIFEST_NAME, owns: Callable[[str], bool] | None = None
    ) -> BucketFileGroup:
        group = BucketFileGroup(self, directory, manifest_name, owns)
        with self._groups_lock:
            self._groups.add(group)
        return group

    def is_finalized(self, layout: StreamLayout, manifest_name: str) -> bool:
        return self.bucket.exists(self.key_of(layout.stream_dir, manifest_name))

    def close(self) -> None:
        self._stop.set()
        self.outage.stop()
        if self._pump.is_alive() and threading.current_thread() is not self._pump:
            self._pump.join(timeout=30)

    def _pump_loop(self) -> None:
        while not self._stop.wait(PUMP_INTERVAL_S):
            try:
                self.pump()
            except Exception:  # never end the thread: publish uploads whatever is missing
                log.exception("part uploads failed; retried later")

    def pump(self) -> int:
        """Upload the whole parts every open group's files have now; return how many (tests call
        it to not wait for the thread)."""
        with self._groups_lock:
            groups = list(self._groups)
        return sum(g.pump() for g in groups)


class BucketFileGroup:
    """`FileGroup`'s contract (begin, partial, partials, publish, abort) with a bucket behind it."""

    def __init__(
        self,
        storage: BucketStorage,
        directory: Path,
        manifest_name: str = MANIFEST_NAME,
        owns: Callable[[str], bool] | None = None,
    ) -> None:
        self.storage = storage
        self.bucket = storage.bucket
        self.local = FileGroup(directory, manifest_name, owns)
        self.directory = directory
        self.manifest_name = manifest_name
        self.owns = owns
        self._uploads: dict[str, _Upload] = {}
        self._lock = threading.Lock()  # the pump thread and the sink's thread share _uploads
        self._closed = False
        self._published = False
        self._pump_failing = False

    def key(self, name: str) -> str:
        return self.storage.key_of(self.directory, name)

    @property
    def complete(self) -> bool:
        return self.bucket.exists(self.key(self.manifest_name))

    def begin(self) -> list[Path]:
        """Clear the spool's leftovers, delete a stale manifest object (first: it must never vouch
        for objects being replaced), abort the multipart uploads a crash left for this group."""
        removed = self.local.begin()
        manifest = self.key(self.manifest_name)
        if self.bucket.exists(manifest):
            self.bucket.delete([manifest])
        prefix = self.key("") + "/"
        for key, upload_id in self.bucket.uploads(prefix):
            name = key[len(prefix) :]
            if "/" not in name and (self.owns is None or self.owns(name)):
                log.info("aborting a multipart upload left by a crash", extra={"key": key})
                self.bucket.abort_upload(key, upload_id)
        return removed

    def partial(self, name: str) -> Path:
        return self.local.partial(name)

    def partials(self) -> Mapping[str, Path]:
        return self.local.partials()

    # -- streaming ------------------------------------------------------------------------------

    def pump(self) -> int:
        """Upload the whole parts (but part 1) the files have now; errors wait for the next pump
        (publish uploads whatever is missing). Called from the storage's thread."""
        done = 0
        with self._lock:
            if self._closed:
                return 0
            for name, path in self.local.partials().items():
                try:
                    size = path.stat().st_size
                except FileNotFoundError:
                    continue
                for part in early_parts(size, self.storage.part_bytes):
                    upload = self._uploads.get(name)
                    if upload is not None and part.number in upload.parts:
                        continue
                    try:
                        if upload is None:
                            key = self.key(name)
                            upload = self._uploads[name] = _Upload(
                                key, self.bucket.create_upload(key, retry=False)
                            )
                        data, md5 = region_md5(path, part)
                        etag = self.bucket.upload_part(
                            upload.key, upload.upload_id, part.number, data, retry=False
                        )
                    except Exception as exc:
                        if not self._pump_failing:  # once per failing streak, not every pump
                            log.warning(
                                "part upload failed; retried later", extra={"file": name, "error": repr(exc)}
                            )
                        self._pump_failing = True
                        return done
                    self._pump_failing = False
                    upload.parts[part.number] = (md5, etag)
                    done += 1
        return done

    # -- publishing -----------------------------------------------------------------------------

    def publish(self, manifest: bytes) -> list[PurePath]:
        """Every registered file as a complete object, then the manifest; return their bucket
        paths, manifest last. The writers must have closed their files."""
        if self._published:
            raise FileGroupError("group already published")
        with self._lock:
            self._closed = True  # the pump leaves this group alone from now on
        temps = self.local.partials()
        missing = [name for name, path in temps.items() if not path.is_file()]
        if missing:
            raise FileGroupError(f"temporary files missing for {missing}")
        with ThreadPoolExecutor(
            min(PUBLISH_THREADS, max(1, len(temps))), thread_name_prefix="s3-publish"
        ) as pool:
            list(pool.map(self._publish_file, temps.items()))
        self.bucket.put(self.key(self.manifest_name), manifest)
        self._published = True
        self.local.abort()  # the spool's copies are not needed any more
        _remove_empty_dirs(self.directory, self.storage.root)
        out: list[PurePath] = [PurePosixPath(self.bucket.target.bucket, self.key(n)) for n in temps]
        return [*out, PurePosixPath(self.bucket.target.bucket, self.key(self.manifest_name))]

    def _publish_file(self, item: tuple[str, Path]) -> None:
        name, path = item
        key = self.key(name)
        parts = plan_parts(path.stat().st_size, self.storage.part_bytes)
        upload = self._uploads.get(name)
        if len(parts) == 1:
            if upload is not None:  # the file shrank below two parts: one PUT instead
                self.bucket.abort_upload(upload.key, upload.upload_id)
                del self._uploads[name]
            self.bucket.put(key, region_md5(path, parts[0])[0])
            return
        if upload is None:
            upload = self._uploads[name] = _Upload(key, self.bucket.create_upload(key))
        uploading = upload

        def ensure(part: Part) -> None:
            data, md5 = region_md5(path, part)
            kept = uploading.parts.get(part.number)
            if kept is None or kept[0] != md5:  # never uploaded, or rewritten since (headers)
                etag = self.bucket.upload_part(key, uploading.upload_id, part.number, data)
                uploading.parts[part.number] = (md5, etag)

        # parts on threads of their own (memory: one part each): a backlog (replay) goes out at once
        with ThreadPoolExecutor(PART_THREADS, thread_name_prefix="s3-part") as pool:
            list(pool.map(ensure, parts))
        etags = [upload.parts[part.number][1] for part in parts]
        self.bucket.complete_upload(key, upload.upload_id, etags)
        del self._uploads[name]

    def abort(self) -> None:
        """Drop the spool's files and the uploads in progress (best effort: a failed abort is
        cleared by the next `begin` of the stream, or by the bucket's lifecycle rule)."""
        with self._lock:
            self._closed = True
            uploads, self._uploads = list(self._uploads.values()), {}
        for upload in uploads:
            try:
                self.bucket.abort_upload(upload.key, upload.upload_id, retry=False)
            except Exception as exc:
                log.warning("could not abort an upload", extra={"key": upload.key, "error": repr(exc)})
        self.local.abort()


def _remove_empty_dirs(directory: Path, root: Path) -> None:
    """Remove `directory` and its parents up to `root` while they are empty (the spool's tree)."""
    current = directory
    while current != root and current.is_relative_to(root):
        try:
            current.rmdir()
        except OSError:
            return
        current = current.parent
