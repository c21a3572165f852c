"""A recording's muxer in a process of its own: the AAC encoder on the other core, the same bytes.

`MuxProcess` replays the recorder's exact calls into an `Mp4Muxer` in a child (payloads through a
shared-memory ring, calls pickled in batches; a full ring is backpressure). Errors come back as
`MuxProcessError`; the child dies with its parent. Linux only (`available()`); used by replay."""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import mmap
import os
import pickle
import subprocess
import sys
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, NoReturn

from sinks.mp4_muxer import Mp4Muxer, MuxerSpec

BATCH_BYTES = 256 * 1024  # payload bytes per batch of calls
RING_BYTES = 16 << 20  # shared memory for payloads on their way to the child (~3 min of 360p media)
PIPE_BYTES = 1 << 20  # asked of the kernel for the calls pipe (Linux's default cap for a user)
_F_SETPIPE_SZ = 1031  # fcntl.F_SETPIPE_SZ (Python >= 3.10 has it on Linux; spelled out for mypy)
_PROJECT_ROOT = str(Path(__file__).resolve().parents[1])


def available() -> bool:
    """True where a muxer process can run (Linux: memfd, PR_SET_PDEATHSIG); elsewhere recorders
    asking for one mux inline (the same bytes, one core)."""
    return sys.platform.startswith("linux") and hasattr(os, "memfd_create")


class MuxProcessError(RuntimeError):
    """The muxer process failed or went away; the recording is lost (the stream is rebuilt)."""


class MuxProcess:
    """`Mp4Muxer`'s calls, run in a child process in the order they are made.

    Payloads go into a shared-memory ring (`RING_BYTES`, a memfd both processes map: one copy in, one
    out, no pickling of media); calls go down a pipe as pickled batches of small tuples naming their
    payload's place, `BATCH_BYTES` of payload a batch, and the child answers how far it has read, which
    frees the ring. A payload over a quarter of the ring goes through the pipe. A full ring makes
    `encode` / `mux_video` wait (backpressure). A failed call stops the recording; its error is raised
    by the next send or `finish()` (`MuxProcessError`). The child exits on EOF of its pipe and dies
    with its parent (`rtmsflow.children.die_with_parent`)."""

    def __init__(
        self, spec: MuxerSpec, *, batch_bytes: int = BATCH_BYTES, ring_bytes: int = RING_BYTES
    ) -> None:
        self.spec = spec
        self._batch_bytes = batch_bytes
        self._ring_bytes = ring_bytes
        self._pending: list[tuple[Any, ...]] = []
        self._pending_bytes = 0
        self._child: subprocess.Popen[bytes] | None = None
        self._ring: mmap.mmap | None = None
        self._written = 0  # ring position after the last payload (grows; the ring wraps)
        self._freed = 0  # ring position the child has read up to
        self._calls: Connection | None = None
        self._answers: Connection | None = None
        self._error: str | None = None

    def open(self) -> None:
        """Start the child, which opens the file and writes its header; returns without waiting."""
        ring_fd = os.memfd_create("rtmsflow-mux-ring")
        fds: list[int] = [ring_fd]
        try:
            os.ftruncate(ring_fd, self._ring_bytes)
            self._ring = mmap.mmap(ring_fd, self._ring_bytes)
            calls_read, calls_write = os.pipe()
            fds += [calls_read, calls_write]
            answers_read, answers_write = os.pipe()
            fds += [answers_read, answers_write]
            with contextlib.suppress(OSError):  # a smaller pipe only means smaller steps
                fcntl.fcntl(calls_write, _F_SETPIPE_SZ, PIPE_BYTES)
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(p for p in (_PROJECT_ROOT, env.get("PYTHONPATH")) if p)
            spec = json.dumps(dataclasses.asdict(self.spec))
            args = [str(fd) for fd in (ring_fd, calls_read, answers_write)]
            self._child = subprocess.Popen(
                [sys.executable, "-m", "sinks.mux_process", *args, spec],
                pass_fds=(ring_fd, calls_read, answers_write),
                env=env,
                stdin=subprocess.DEVNULL,
            )
        except BaseException:
            for fd in fds:
                os.close(fd)
            if self._ring is not None:
                self._ring.close()
                self._ring = None
            raise
        for fd in (ring_fd, calls_read, answers_write):  # the child's: closing ours lets each side
            os.close(fd)  # see the other's EOF (the ring stays mapped)
        self._calls = Connection(calls_write, readable=False)
        self._answers = Connection(answers_read, writable=False)

    def mux_video(self, pts: int, duration: int, data: bytes, keyframe: bool) -> None:
        self._queue(("v", pts, duration, keyframe), data)

    def encode(self, position: int, pcm: bytes) -> None:
        self._queue(("a", position), pcm)

    def finish(self) -> int:
        """Run every call, close the file and end the child; returns the AAC packet count."""
        self._pending.append(("finish",))
        self._send()
        while True:
            kind, value = self._read_answer()
            if kind == "finished":
                break
        self._end()
        return int(value)

    def abort(self) -> None:
        """Drop what is not sent, stop the child without finishing the file (idempotent)."""
        self._pending = []
        self._end()

    # -- the parent's side ----------------------------------------------------------------------

    def _queue(self, call: tuple[Any, ...], payload: bytes) -> None:
        size = len(payload)
        if size > self._ring_bytes // 4:
            self._pending.append((*call, None, payload))  # through the pipe
        else:
            start = self._room_for(size)
            ring = self._ring
            assert ring is not None
            at = start % self._ring_bytes
            ring[at : at + size] = payload
            self._written = start + size
            self._pending.append((*call, at, size))
        self._pending_bytes += size
        if self._pending_bytes >= self._batch_bytes:
            self._send()

    def _room_for(self, size: int) -> int:
        """Where in the ring (as a growing position) `size` bytes go, once the child has read
        enough; a payload never wraps (the ring's tail is skipped instead)."""
        start = self._written
        if start % self._ring_bytes + size > self._ring_bytes:
            start += self._ring_bytes - start % self._ring_bytes
        while start + size - self._freed > self._ring_bytes:
            if self._pending:
                self._send()  # the child cannot free what it has not been sent
            self._read_answer()
        return start

    def _send(self) -> None:
        if self._calls is None:
            raise MuxProcessError(f"{self.spec.path}: the muxer process is not running")
        while self._error is None and self._answers is not None and self._answers.poll():
            self._read_answer()  # progress (or the child's error: raised here, not at the end)
        if self._error is not None:
            raise MuxProcessError(f"{self.spec.path}: {self._error}")
        blob = pickle.dumps((self._written, self._pending), protocol=pickle.HIGHEST_PROTOCOL)
        self._pending = []
        self._pending_bytes = 0
        try:
            self._calls.send_bytes(blob)
        except OSError as exc:  # BrokenPipeError: the child is gone
            self._fail(f"the muxer process went away ({exc})")

    def _read_answer(self) -> tuple[str, Any]:
        """One answer (blocks): ("read", ring position), ("finished", aac packets); an error raises."""
        if self._answers is None:
            raise MuxProcessError(f"{self.spec.path}: the muxer process is not running")
        try:
            kind, value = pickle.loads(self._answers.recv_bytes())
        except (EOFError, OSError):
            self._fail(None)
        if kind == "read":
            self._freed = max(self._freed, value)
        elif kind == "error":
            self._error = str(value)
            raise MuxProcessError(f"{self.spec.path}: {self._error}")
        return kind, value

    def _fail(self, reason: str | None) -> NoReturn:
        """Raise the child's error if it sent one, else `reason` (or its exit status)."""
        while self._error is None and self._answers is not None:
            try:
                kind, value = pickle.loads(self._answers.recv_bytes())
            except (EOFError, OSError):
                break
            if kind == "error":
                self._error = str(value)
        if self._error is None:
            code = self._child.wait() if self._child is not None else None
            self._error = reason or f"the muxer process ended without an answer (exit status {code})"
        raise MuxProcessError(f"{self.spec.path}: {self._error}")

    def _end(self) -> None:
        for conn in (self._calls, self._answers):
            if conn is not None:
                conn.close()  # the child reads EOF: it stops (aborting an unfinished file)
        self._calls = self._answers = None
        child, self._child = self._child, None
        if child is not None:
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        if self._ring is not None:
            self._ring.close()
            self._ring = None


# -- the child's side ---------------------------------------------------------------------------------


def serve(spec: MuxerSpec, ring: mmap.mmap, calls: Connection, answers: Connection) -> None:
    """Run the calls that come down `calls` on one muxer until "finish" or EOF (see above)."""
    muxer = Mp4Muxer(spec)
    view = memoryview(ring)
    try:
        muxer.open()
        while True:
            try:
                written, batch = pickle.loads(calls.recv_bytes())
            except EOFError:
                muxer.abort()  # the recorder aborted or went away
                return
            for call in batch:
                op = call[0]
                if op == "finish":
                    answers.send_bytes(pickle.dumps(("finished", muxer.finish())))
                    return
                at, payload = call[-2], call[-1]
                data = payload if at is None else view[at : at + payload]
                if op == "a":
                    muxer.encode(call[1], data)
                elif op == "v":  # the packet keeps its bytes until muxed: a copy, not the ring
                    muxer.mux_video(call[1], call[2], bytes(data), call[3])
                else:
                    raise ValueError(f"unknown muxer call {op!r}")
            answers.send_bytes(pickle.dumps(("read", written)))
    except Exception as exc:
        muxer.abort()
        with contextlib.suppress(OSError):
            answers.send_bytes(pickle.dumps(("error", f"{type(exc).__name__}: {exc}")))
    finally:
        view.release()


def main(argv: list[str]) -> None:
    from rtmsflow.children import die_with_parent

    die_with_parent()
    ring_fd, calls_fd, answers_fd = (int(a) for a in argv[:3])
    fields = json.loads(argv[3])
    fields["video_size"] = tuple(fields["video_size"])
    with (
        mmap.mmap(ring_fd, 0, access=mmap.ACCESS_READ) as ring,
        Connection(calls_fd, writable=False) as calls,
        Connection(answers_fd, readable=False) as answers,
    ):
        serve(MuxerSpec(**fields), ring, calls, answers)


if __name__ == "__main__":
    main(sys.argv[1:])


__all__ = ["BATCH_BYTES", "RING_BYTES", "MuxProcess", "MuxProcessError", "available", "serve"]
