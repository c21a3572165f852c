"""sinks.atomic: temporary names, publish in order (manifest last), crash leftovers, re-runs."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sinks.atomic import (
    FileGroup,
    FileGroupError,
    atomic_writer,
    is_partial,
    make_dirs,
    partial_path,
    sweep_partials,
    write_bytes_atomic,
)


def names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def write_stream(group: FileGroup, contents: dict[str, bytes]) -> None:
    for name, data in contents.items():
        group.partial(name).write_bytes(data)


def test_partial_names_are_hidden_siblings(tmp_path: Path) -> None:
    final = tmp_path / "audio.wav"
    assert partial_path(final) == tmp_path / ".audio.wav.partial"
    assert is_partial(partial_path(final))
    assert not is_partial(final)
    assert not is_partial(tmp_path / ".partial")


def test_atomic_writer_shows_nothing_until_closed_then_the_whole_file(tmp_path: Path) -> None:
    final = tmp_path / "x.bin"
    with atomic_writer(final) as handle:
        handle.write(b"abc")
        assert not final.exists()
        assert partial_path(final).exists()
    assert final.read_bytes() == b"abc"
    assert not partial_path(final).exists()


def test_atomic_writer_removes_its_temporary_file_on_error_and_keeps_the_old_file(tmp_path: Path) -> None:
    final = tmp_path / "x.bin"
    final.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_writer(final) as handle:
            handle.write(b"new, torn")
            raise RuntimeError("writer died")
    assert final.read_bytes() == b"old"
    assert names(tmp_path) == ["x.bin"]


def test_publish_renames_every_file_and_writes_the_manifest_last(tmp_path: Path) -> None:
    group = FileGroup(tmp_path / "2025-05-15" / "m" / "s")
    assert group.begin() == []
    write_stream(group, {"audio.wav": b"RIFF", "transcript.txt": b"line\n"})
    assert not group.complete
    published = group.publish(b'{"ok": true}\n')
    assert [p.name for p in published] == ["audio.wav", "transcript.txt", "manifest.json"]
    assert names(group.directory) == ["audio.wav", "manifest.json", "transcript.txt"]
    assert group.complete
    assert (group.directory / "audio.wav").read_bytes() == b"RIFF"
    assert (group.directory / "manifest.json").read_bytes() == b'{"ok": true}\n'


def test_publish_refuses_when_a_registered_file_was_never_written(tmp_path: Path) -> None:
    group = FileGroup(tmp_path)
    group.begin()
    group.partial("audio.wav")  # registered, never written
    group.partial("transcript.txt").write_bytes(b"x")
    with pytest.raises(FileGroupError):
        group.publish(b"{}")
    assert not group.complete
    assert (tmp_path / ".transcript.txt.partial").exists()  # nothing was renamed


def test_group_misuse_is_a_clear_error(tmp_path: Path) -> None:
    group = FileGroup(tmp_path)
    with pytest.raises(FileGroupError):
        group.partial("audio.wav")  # before begin()
    group.begin()
    for bad in ("manifest.json", "a/b", "", ".x"):
        with pytest.raises(FileGroupError):
            group.partial(bad)
    group.partial("audio.wav").write_bytes(b"x")
    group.publish(b"{}")
    with pytest.raises(FileGroupError):
        group.publish(b"{}")


CRASHING_SINK = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from sinks.atomic import FileGroup
    group = FileGroup(Path(sys.argv[1]))
    group.begin()
    for name in ("audio.wav", "transcript.txt"):
        with open(group.partial(name), "wb") as f:
            f.write(b"half of " + name.encode())
    os._exit(9)  # killed before publish: no cleanup runs
    """
)


def test_a_crash_leaves_only_temporary_files_which_the_restart_removes(tmp_path: Path) -> None:
    stream_dir = tmp_path / "stream"
    repo = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-c", CRASHING_SINK, str(stream_dir)], cwd=repo, check=False)
    assert result.returncode == 9
    assert names(stream_dir) == [".audio.wav.partial", ".transcript.txt.partial"]

    restarted = FileGroup(stream_dir)
    assert not restarted.complete
    removed = restarted.begin()
    assert [p.name for p in removed] == [".audio.wav.partial", ".transcript.txt.partial"]
    assert names(stream_dir) == []
    write_stream(restarted, {"audio.wav": b"whole audio", "transcript.txt": b"whole text"})
    restarted.publish(b"{}")
    assert names(stream_dir) == ["audio.wav", "manifest.json", "transcript.txt"]
    assert (stream_dir / "audio.wav").read_bytes() == b"whole audio"


def test_a_crash_during_publish_leaves_no_manifest_and_the_rebuild_overwrites(tmp_path: Path) -> None:
    group = FileGroup(tmp_path)
    group.begin()
    write_stream(group, {"audio.wav": b"a1", "transcript.txt": b"t1"})
    # Simulate dying after the first rename: one final file, one temporary, no manifest.
    partial_path(tmp_path / "audio.wav").rename(tmp_path / "audio.wav")
    assert not group.complete

    rebuild = FileGroup(tmp_path)
    rebuild.begin()
    write_stream(rebuild, {"audio.wav": b"a2", "transcript.txt": b"t2"})
    rebuild.publish(b"{}")
    assert names(tmp_path) == ["audio.wav", "manifest.json", "transcript.txt"]
    assert (tmp_path / "audio.wav").read_bytes() == b"a2"


def test_a_rerun_overwrites_instead_of_duplicating(tmp_path: Path) -> None:
    for run in (1, 2):
        group = FileGroup(tmp_path)
        group.begin()
        write_stream(group, {"audio.wav": f"audio {run}".encode(), "transcript.txt": b"t"})
        group.publish(f"manifest {run}".encode())
        assert names(tmp_path) == ["audio.wav", "manifest.json", "transcript.txt"]
    assert (tmp_path / "audio.wav").read_bytes() == b"audio 2"
    assert (tmp_path / "manifest.json").read_bytes() == b"manifest 2"


def test_a_rebuild_withdraws_the_old_manifest_before_touching_the_files(tmp_path: Path) -> None:
    group = FileGroup(tmp_path)
    group.begin()
    write_stream(group, {"audio.wav": b"a"})
    group.publish(b"{}")
    assert group.complete
    rebuild = FileGroup(tmp_path)
    rebuild.begin()
    assert not rebuild.complete
    assert names(tmp_path) == ["audio.wav"]


def test_abort_removes_only_the_groups_temporary_files(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_bytes(b"k")
    group = FileGroup(tmp_path)
    group.begin()
    write_stream(group, {"audio.wav": b"a"})
    group.abort()
    assert names(tmp_path) == ["keep.txt"]


def test_sweep_ignores_final_files_and_missing_directories(tmp_path: Path) -> None:
    assert sweep_partials(tmp_path / "absent") == []
    (tmp_path / "audio.wav").write_bytes(b"a")
    (tmp_path / ".audio.wav.partial").write_bytes(b"b")
    assert [p.name for p in sweep_partials(tmp_path)] == [".audio.wav.partial"]
    assert names(tmp_path) == ["audio.wav"]


def test_make_dirs_and_write_bytes_atomic(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "c"
    make_dirs(target)
    assert target.is_dir()
    write_bytes_atomic(target / "f", b"1")
    write_bytes_atomic(target / "f", b"2")
    assert (target / "f").read_bytes() == b"2"
    assert names(target) == ["f"]
