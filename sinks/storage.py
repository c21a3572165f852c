"""Where a sink's files go: a local directory (`DiskStorage`, the default) or a bucket
(`sinks.bucket_files.BucketStorage`), chosen by the one data dir setting (`s3://bucket/prefix`).

Both give the builders a `FileGroup`-like group per stream directory and say whether a stream's
manifest exists; the layout, names and bytes are the same."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from rtmsflow.settings import Settings
from sinks.atomic import MANIFEST_NAME, FileGroup
from sinks.bucket import Bucket, S3Options, parse_target
from sinks.layout import StreamLayout
from sinks.outage import Outage

GroupFactory = Callable[..., Any]  # (directory, manifest_name, owns) -> a FileGroup-like group


class Storage(Protocol):
    root: Path  # the directory the builders' layouts live under (the data dir, or the spool)
    outage: Outage

    @property
    def where(self) -> str: ...
    def group(
        self, directory: Path, manifest_name: str = MANIFEST_NAME, owns: Callable[[str], bool] | None = None
    ) -> Any: ...
    def is_finalized(self, layout: StreamLayout, manifest_name: str) -> bool: ...
    def close(self) -> None: ...


class DiskStorage:
    """Today's storage: files published in place under the data directory."""

    def __init__(self, root: Path, outage: Outage | None = None) -> None:
        self.root = root
        self.outage = outage or Outage()

    @property
    def where(self) -> str:
        return str(self.root)

    def group(
        self, directory: Path, manifest_name: str = MANIFEST_NAME, owns: Callable[[str], bool] | None = None
    ) -> FileGroup:
        return FileGroup(directory, manifest_name, owns)

    def is_finalized(self, layout: StreamLayout, manifest_name: str) -> bool:
        return (layout.stream_dir / manifest_name).is_file()

    def close(self) -> None:
        self.outage.stop()


def open_storage(
    settings: Settings, where: str | Path | None, sink: str, spool: Path | None = None
) -> Storage:
    """The storage of `where` (default: the settings' data dir). A bucket's spool is
    `<spool or settings' spool>/<sink>`: each sink's own, so no two sinks share a spool tree."""
    target_text = str(where) if where is not None else settings.data_dir
    outage = Outage(sink)
    target = parse_target(target_text)
    if target is None:
        return DiskStorage(Path(target_text), outage)
    from sinks.bucket_files import BucketStorage

    bucket = Bucket(target, S3Options.from_settings(settings), outage)
    root = (spool or settings.spool_path()) / sink
    return BucketStorage(bucket, root, settings.s3_part_mb << 20)
