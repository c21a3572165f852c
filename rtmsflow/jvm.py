"""What the project's local Java services (the Kafka broker, the schema registry) share: finding
Java, picking a free loopback port, an exclusive lock on a cache or state directory, and the tail
of a service's log for error messages."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import socket
from collections.abc import Iterable, Iterator
from pathlib import Path

HOST = "127.0.0.1"


class JavaNotFound(RuntimeError):
    """No `java` on PATH or under JAVA_HOME."""


def find_java(purpose: str) -> str:
    """The `java` executable: $JAVA_HOME/bin/java, else the one on PATH."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").exists():
        return str(Path(java_home) / "bin" / "java")
    java = shutil.which("java")
    if java is None:
        raise JavaNotFound(f"Java 17 is needed to run {purpose}: install a JDK/JRE or set JAVA_HOME")
    return java


def free_port(avoid: frozenset[int] = frozenset()) -> int:
    """A TCP port on 127.0.0.1 that is free now (the service binds it moments later)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((HOST, 0))
            port = int(s.getsockname()[1])
        if port not in avoid:
            return port
    raise OSError("could not find a free TCP port on 127.0.0.1")


@contextlib.contextmanager
def locked(directory: Path) -> Iterator[None]:
    """An exclusive lock on `directory` (a `.lock` file in it), so that two processes do not
    fetch into it, or start and stop its service, at once."""
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / ".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def tail(paths: Iterable[Path], lines: int = 30) -> str:
    """The last `lines` lines of these log files together, for an error message."""
    out: list[str] = []
    for path in paths:
        with contextlib.suppress(OSError):
            out += path.read_text(errors="replace").splitlines()[-lines:]
    return "\n".join(out[-lines:])
