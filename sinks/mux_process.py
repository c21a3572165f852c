"""A recording's muxer in a process of its own: the AAC encoder on the other core, the same bytes.

    muxer = MuxProcess(MuxerSpec("recording.mp4.partial", video=True, audio=True))
    muxer.open()                            # starts the child; returns at once
    muxer.mux_video(pts, duration, data, keyframe)
    muxer.encode(position, pcm)             # queued; sent in batches
    aac_packets = muxer.finish()            # every call done, the file closed; raises its error

Why: a rebuild spends about half its CPU in FFmpeg's AAC encoder, and a thread cannot take that
off the core that reads Kafka, decodes Avro and writes the WAVs (PyAV takes the GIL back several
times per call: `benchmarks/aac_thread_bench.py`). A child process can. `Mp4Recorder(process=True)`
uses this class in place of an in-process `Mp4Muxer`; replay does, the live sinks do not (a live
stream's encoder needs a few milliseconds of CPU a second, and a process per stream would cost
more than it saves).

Why the bytes cannot change: the child runs one `Mp4Muxer` built from the same `MuxerSpec`, and
makes exactly the calls the recorder made, in the same order, with the same values; no call
depends on when it runs. The recorder keeps every decision (timelines, framing, validation) in
its own process, so a bad frame is still refused synchronously.

The wire: the calls go down a pipe as pickled batches of tuples (`BATCH_BYTES` of payload a
batch), answers come up another. A thread in the child reads the pipe ahead into a queue of
`READ_AHEAD_BYTES`: the pipe alone holds ~10 ms of the encoder's work, too little to carry it
over the sender's waits for Kafka. Memory is bounded by one batch here, the pipe (1 MB asked of
the kernel), the read-ahead and the batch the child is running; when they are full,
`encode`/`mux_video` block (the backpressure). A call that fails in the child stops the recording: the error comes back to
`finish()` (or to the next send), later calls are read and dropped so the sender never blocks.
The child dies with its parent: it reads EOF when the recorder's end of the pipe closes, and
Linux kills it when the parent dies (`rtmsflow.children.die_with_parent`). A recording it
leaves unfinished is a partial file its stream's next build discards.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import pickle
import queue
import subprocess
import sys
import threading
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from sinks.mp4_muxer import Mp4Muxer, MuxerSpec

BATCH_BYTES = 256 * 1024  # payload bytes per batch sent to the child
PIPE_BYTES = 1 << 20  # asked of the kernel for the calls pipe (Linux's default cap for a user)
READ_AHEAD_BYTES = 16 << 20  # batches the child holds read from the pipe, not yet run
_F_SETPIPE_SZ = 1031  # fcntl.F_SETPIPE_SZ (Python >= 3.10 has it on Linux; spelled out for mypy)
_PROJECT_ROOT = str(Path(__file__).resolve().parents[1])


class MuxProcessError(RuntimeError):
    """The muxer process failed or went away; the recording is lost (the stream is rebuilt)."""


class MuxProcess:
    """`Mp4Muxer`'s calls, run in a child process in the order they are made (module docstring)."""

    def __init__(self, spec: MuxerSpec, *, batch_bytes: int = BATCH_BYTES) -> None:
        self.spec = spec
        self._batch_bytes = batch_bytes
        self._pending: list[tuple[Any, ...]] = []
        self._pending_bytes = 0
        self._child: subprocess.Popen[bytes] | None = None
        self._calls: Connection | None = None
        self._answers: Connection | None = None
        self._error: str | None = None

    def open(self) -> None:
        """Start the child, which opens the file and writes its header; returns without waiting."""
        calls_read, calls_write = os.pipe()
        answers_read, answers_write = os.pipe()
        with contextlib.suppress(OSError):  # a smaller pipe only means smaller steps
            fcntl.fcntl(calls_write, _F_SETPIPE_SZ, PIPE_BYTES)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PROJECT_ROOT, env.get("PYTHONPATH")) if p)
        spec = json.dumps(dataclasses.asdict(self.spec))
        try:
            self._child = subprocess.Popen(
                [sys.executable, "-m", "sinks.mux_process", str(calls_read), str(answers_write), spec],
                pass_fds=(calls_read, answers_write),
                env=env,
                stdin=subprocess.DEVNULL,
            )
        except BaseException:
            for fd in (calls_read, calls_write, answers_read, answers_write):
                os.close(fd)
            raise
        os.close(calls_read)  # the child's ends: closing ours lets each side see the other's EOF
        os.close(answers_write)
        self._calls = Connection(calls_write, readable=False)
        self._answers = Connection(answers_read, writable=False)

    def mux_video(self, pts: int, duration: int, data: bytes, keyframe: bool) -> None:
        self._queue(("v", pts, duration, data, keyframe), len(data))

    def encode(self, position: int, pcm: bytes) -> None:
        self._queue(("a", position, pcm), len(pcm))

    def finish(self) -> int:
        """Run every call, close the file and end the child; returns the AAC packet count."""
        self._pending.append(("finish",))
        self._send()
        answer = self._answer()
        self._end()
        if answer[0] != "finished":
            raise MuxProcessError(f"{self.spec.path}: {answer[1]}")
        return int(answer[1])

    def abort(self) -> None:
        """Drop what is not sent, stop the child without finishing the file (idempotent)."""
        self._pending = []
        self._end()

    # -- the parent's side ----------------------------------------------------------------------

    def _queue(self, call: tuple[Any, ...], size: int) -> None:
        self._pending.append(call)
        self._pending_bytes += size
        if self._pending_bytes >= self._batch_bytes:
            self._send()

    def _send(self) -> None:
        if self._calls is None:
            raise MuxProcessError(f"{self.spec.path}: the muxer process is not running")
        if self._answers is not None and self._error is None and self._answers.poll():
            self._error = self._answers.recv()[1]  # the child failed: stop here, not at the end
        if self._error is not None:
            raise MuxProcessError(f"{self.spec.path}: {self._error}")
        blob = pickle.dumps(self._pending, protocol=pickle.HIGHEST_PROTOCOL)
        self._pending = []
        self._pending_bytes = 0
        try:
            self._calls.send_bytes(blob)
        except OSError as exc:  # BrokenPipeError: the child is gone
            raise MuxProcessError(f"{self.spec.path}: the muxer process went away ({exc})") from exc

    def _answer(self) -> tuple[str, Any]:
        """The child's last word: ("finished", aac_packets) or ("error", text)."""
        if self._error is not None:
            return ("error", self._error)
        assert self._answers is not None and self._child is not None
        try:
            answer: tuple[str, Any] = self._answers.recv()
        except EOFError:
            code = self._child.wait()
            return ("error", f"the muxer process ended without an answer (exit status {code})")
        return answer

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


# -- the child's side ---------------------------------------------------------------------------------


def _read_ahead(calls: Connection, batches: queue.Queue[bytes | None]) -> None:
    """Empty the pipe into `batches` (None: EOF), so the sender never waits on a pipe that a
    busy encoder leaves full (the pipe holds ~10 ms of the encoder's work, the queue ~0.2 s)."""
    try:
        while True:
            batches.put(calls.recv_bytes())
    except (EOFError, OSError):
        batches.put(None)


def serve(spec: MuxerSpec, calls: Connection, answers: Connection) -> None:
    """Run the calls that come down `calls` on one muxer until "finish" or EOF (see above)."""
    muxer = Mp4Muxer(spec)
    failed = False
    batches: queue.Queue[bytes | None] = queue.Queue(maxsize=READ_AHEAD_BYTES // BATCH_BYTES)
    reader = threading.Thread(target=_read_ahead, args=(calls, batches), name="read-ahead", daemon=True)
    reader.start()
    try:
        muxer.open()
    except Exception as exc:
        answers.send(("error", f"{type(exc).__name__}: {exc}"))
        failed = True
    while True:
        blob = batches.get()
        if blob is None:
            muxer.abort()  # the recorder aborted or went away
            return
        if failed:
            continue  # keep reading: the sender must never block on a full pipe
        try:
            for call in pickle.loads(blob):
                op = call[0]
                if op == "a":
                    muxer.encode(call[1], call[2])
                elif op == "v":
                    muxer.mux_video(call[1], call[2], call[3], call[4])
                elif op == "finish":
                    answers.send(("finished", muxer.finish()))
                    return
                else:
                    raise ValueError(f"unknown muxer call {op!r}")
        except Exception as exc:
            muxer.abort()
            answers.send(("error", f"{type(exc).__name__}: {exc}"))
            failed = True


def main(argv: list[str]) -> None:
    from rtmsflow.children import die_with_parent

    die_with_parent()
    calls_fd, answers_fd, spec_json = int(argv[0]), int(argv[1]), argv[2]
    fields = json.loads(spec_json)
    fields["video_size"] = tuple(fields["video_size"])
    with Connection(calls_fd, writable=False) as calls, Connection(answers_fd, readable=False) as answers:
        serve(MuxerSpec(**fields), calls, answers)


if __name__ == "__main__":
    main(sys.argv[1:])


__all__ = ["BATCH_BYTES", "MuxProcess", "MuxProcessError", "serve"]
