"""A recording's PyAV calls on a worker thread, in the order they were made: the same bytes, sooner.

    worker = MuxThread("recording.mp4")
    worker.submit(encode_and_mux, pcm_frame)   # returns at once (blocks only when `depth` is full)
    worker.submit(mux_video, sample)
    worker.finish()                            # every call done; raises the first call's error

Why: a rebuild spends much of its time in FFmpeg's AAC encoder, and PyAV releases the GIL while
the encoder and the muxer run, so on a second core they were to overlap the sink's own work (Kafka
fetches, Avro decoding, WAV writes) instead of adding to it. Measured, they do not (each call
takes the GIL back several times and waits for the busy caller to drop it), so `Mp4Recorder`
makes its calls inline by default and this thread is only used with `threaded=True`
(docs/DECISIONS.md, "Sinks").

Why the bytes cannot change: one thread makes every call, one after another, in submission order,
so the encoder and the muxer see exactly the calls, arguments and order they would see inline; no
call depends on when it runs. The caller still makes every decision (timeline, framing, what to
mux) on its own thread, so validation errors stay synchronous.

Memory is bounded: calls are handed over in batches of `batch`, at most `depth` batches waiting
(`submit` blocks beyond that, which is the backpressure). A call that raises stops the recording:
the error is raised by the next `submit` or by `finish`, and later calls are dropped unrun (the
worker keeps draining, so a full queue never blocks the caller). `abort()` stops and waits without
raising.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

Call = tuple[Callable[[Any], object], Any]
_END: list[Call] = []  # the batch that ends the worker (identity-checked)


class MuxThread:
    """One worker thread running submitted calls in order; see the module docstring."""

    def __init__(self, name: str, *, batch: int = 32, depth: int = 4) -> None:
        if batch < 1 or depth < 1:
            raise ValueError("batch and depth must be positive")
        self._batch = batch
        self._pending: list[Call] = []
        self._queue: queue.Queue[list[Call]] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._ended = False
        # daemon: a recorder dropped without close/abort must not keep the process alive
        self._thread = threading.Thread(target=self._run, name=f"mux {name}", daemon=True)
        self._thread.start()

    @property
    def error(self) -> BaseException | None:
        """The first error a call raised (None while every call succeeded)."""
        return self._error

    def submit(self, fn: Callable[[Any], object], arg: Any) -> None:
        """Run `fn(arg)` on the worker after every call submitted before it."""
        if self._ended:
            raise RuntimeError("the mux thread has finished")
        if self._error is not None:
            raise self._error
        self._pending.append((fn, arg))
        if len(self._pending) >= self._batch:
            self._queue.put(self._pending)
            self._pending = []

    def finish(self) -> None:
        """Run every submitted call, stop the worker; raises the first call's error."""
        self._stop()
        if self._error is not None:
            raise self._error

    def abort(self) -> None:
        """Drop the calls not yet handed over, stop the worker (idempotent, never raises)."""
        self._pending = []
        self._stop()

    def _stop(self) -> None:
        if not self._ended:
            self._ended = True
            if self._pending:
                self._queue.put(self._pending)
                self._pending = []
            self._queue.put(_END)
        self._thread.join()

    def _run(self) -> None:
        while True:
            calls = self._queue.get()
            if calls is _END:
                return
            if self._error is not None:
                continue  # keep draining so the caller never blocks on a full queue
            for fn, arg in calls:
                try:
                    fn(arg)
                except BaseException as exc:  # handed to the caller's thread, raised there
                    self._error = exc
                    break


__all__ = ["MuxThread"]
