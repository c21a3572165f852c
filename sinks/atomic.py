"""Files that appear complete or not at all: temporary names, fsync, rename, fsync the directory.

`FileGroup` writes each file as `.<name>.partial`; `publish` fsyncs, renames each into place, fsyncs the
directory and writes the manifest last, so its presence means every file it lists is complete; `begin`
sweeps a crash's debris."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

PARTIAL_PREFIX = "."
PARTIAL_SUFFIX = ".partial"
MANIFEST_NAME = "manifest.json"


def partial_path(final: Path) -> Path:
    """The temporary name of `final`, in the same directory (so the rename never crosses a device)."""
    return final.with_name(f"{PARTIAL_PREFIX}{final.name}{PARTIAL_SUFFIX}")


def is_partial(path: Path) -> bool:
    """True for a name made by `partial_path`."""
    name = path.name
    return name.startswith(PARTIAL_PREFIX) and name.endswith(PARTIAL_SUFFIX) and len(name) > 9


def fsync_dir(directory: Path) -> None:
    """Make the directory's entries (creations, renames, deletions) durable."""
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    """fsync a file that another handle wrote and closed (fsync applies to the inode, not the handle)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(directory: Path) -> None:
    """`mkdir -p`, fsyncing each parent whose entries changed, so the path survives a power cut."""
    missing: list[Path] = []
    current = directory
    while not current.exists():
        missing.append(current)
        current = current.parent
    for path in reversed(missing):
        path.mkdir(exist_ok=True)
        fsync_dir(path.parent)


def publish(partial: Path, final: Path) -> None:
    """fsync `partial`, rename it over `final`, fsync the directory."""
    fsync_file(partial)
    os.replace(partial, final)
    fsync_dir(final.parent)


@contextmanager
def atomic_writer(final: Path) -> Iterator[BinaryIO]:
    """Write one file under its temporary name; on a clean exit publish it, on an error remove it.

    >>> with atomic_writer(Path("/tmp/x.bin")) as f:   # doctest: +SKIP
    ...     f.write(b"...")
    """
    temp = partial_path(final)
    try:
        with open(temp, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    os.replace(temp, final)
    fsync_dir(final.parent)


def write_bytes_atomic(final: Path, data: bytes) -> None:
    """Replace `final` with `data`, atomically and durably."""
    with atomic_writer(final) as handle:
        handle.write(data)


def final_name(partial: Path) -> str:
    """The final file name a temporary name made by `partial_path` stands for."""
    return partial.name[len(PARTIAL_PREFIX) : -len(PARTIAL_SUFFIX)]


def sweep_partials(directory: Path, owns: Callable[[str], bool] | None = None) -> list[Path]:
    """Remove the temporary files a crash left in `directory` (only those whose final name `owns`
    accepts, when given); return what was removed, sorted."""
    if not directory.is_dir():
        return []
    removed = sorted(
        p
        for p in directory.iterdir()
        if p.is_file() and is_partial(p) and (owns is None or owns(final_name(p)))
    )
    for path in removed:
        path.unlink()
    if removed:
        fsync_dir(directory)
    return removed


class FileGroupError(RuntimeError):
    """A misuse of a `FileGroup` (a name outside it, publishing twice, a missing temporary file)."""


class FileGroup:
    """The files of one stream directory, written under temporary names and published together.

    Lifecycle: `begin()` (create the directory, clear a crash's leftovers and any stale manifest),
    `partial(name)` for each file while writing, `publish(manifest_bytes)` once. A group that is
    never published leaves only `.partial` files, which the next `begin()` removes.

    Several groups may share a directory (the media and the transcript sink write one stream's
    directory, each with its own manifest): `owns(name)` says which file names belong to this
    group, so its `begin()` never sweeps another group's files that are being written.
    """

    def __init__(
        self,
        directory: Path,
        manifest_name: str = MANIFEST_NAME,
        owns: Callable[[str], bool] | None = None,
    ) -> None:
        self.directory = directory
        self.manifest_name = manifest_name
        self.owns = owns
        self._names: list[str] = []
        self._begun = False
        self._published = False

    @property
    def complete(self) -> bool:
        """True when the directory holds a published manifest (its stream needs no rebuild)."""
        return (self.directory / self.manifest_name).is_file()

    def begin(self) -> list[Path]:
        """Prepare the directory for a (re)build; return the leftover temporary files it removed.

        A stale manifest is removed first (and the removal made durable): a rebuild that crashes
        halfway must not leave a manifest vouching for files that are being replaced.
        """
        make_dirs(self.directory)
        manifest = self.directory / self.manifest_name
        if manifest.exists():
            manifest.unlink()
            fsync_dir(self.directory)
        self._begun = True
        return sweep_partials(self.directory, self.owns)

    def partial(self, name: str) -> Path:
        """The temporary path to write `name` to; registers `name` for `publish`."""
        if not self._begun:
            raise FileGroupError("begin() the group before writing to it")
        if name == self.manifest_name or "/" in name or not name or name.startswith("."):
            raise FileGroupError(f"not a data file name: {name!r}")
        if self.owns is not None and not self.owns(name):
            raise FileGroupError(f"{name!r} belongs to another group of {self.directory}")
        if name not in self._names:
            self._names.append(name)
        return partial_path(self.directory / name)

    def partials(self) -> Mapping[str, Path]:
        """Final name -> temporary path of every registered file, sorted by name."""
        return {name: partial_path(self.directory / name) for name in sorted(self._names)}

    def publish(self, manifest: bytes) -> list[Path]:
        """Publish every registered file, then the manifest; return the final paths, manifest last.

        The writers must have closed their files. All temporary files are fsynced before the first
        rename, and the manifest is renamed only after the data renames are durable.
        """
        if self._published:
            raise FileGroupError("group already published")
        temps = self.partials()
        missing = [name for name, path in temps.items() if not path.is_file()]
        if missing:
            raise FileGroupError(f"temporary files missing for {missing}")
        for path in temps.values():
            fsync_file(path)
        finals = []
        for name, path in temps.items():
            final = self.directory / name
            os.replace(path, final)
            finals.append(final)
        fsync_dir(self.directory)
        manifest_path = self.directory / self.manifest_name
        write_bytes_atomic(manifest_path, manifest)
        self._published = True
        return [*finals, manifest_path]

    def abort(self) -> None:
        """Remove this group's temporary files (the writers must have closed them)."""
        for path in self.partials().values():
            path.unlink(missing_ok=True)
