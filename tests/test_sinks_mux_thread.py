"""The mux thread (sinks.mux_thread): calls run in submission order on one other thread, the first
error reaches the caller, a failed or aborted worker never blocks it. Pure: no PyAV, no files."""

from __future__ import annotations

import threading

import pytest

from sinks.mux_thread import MuxThread


def test_calls_run_in_submission_order_on_one_other_thread() -> None:
    seen: list[int] = []
    threads: set[int] = set()

    def call(i: int) -> None:
        seen.append(i)
        threads.add(threading.get_ident())

    worker = MuxThread("t", batch=7, depth=2)  # batches that do not divide the count
    for i in range(1000):
        worker.submit(call, i)
    worker.finish()
    assert seen == list(range(1000))
    assert len(threads) == 1 and threading.get_ident() not in threads


def test_finish_runs_a_partial_batch() -> None:
    seen: list[int] = []
    worker = MuxThread("t", batch=32)
    worker.submit(seen.append, 1)
    worker.finish()
    assert seen == [1]


def test_first_error_is_raised_to_the_caller_and_later_calls_are_dropped() -> None:
    seen: list[int] = []
    boom = ValueError("mux failed")

    def call(i: int) -> None:
        if i == 5:
            raise boom
        seen.append(i)

    worker = MuxThread("t", batch=1, depth=1)
    with pytest.raises(ValueError) as raised:
        for i in range(10_000):  # the error surfaces at a later submit, long before the end
            worker.submit(call, i)
        worker.finish()
    assert raised.value is boom
    assert seen == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError):
        worker.finish()  # and again, it does not go away
    assert worker.error is boom


def test_abort_never_blocks_and_never_raises_even_after_an_error() -> None:
    release = threading.Event()
    ran: list[int] = []

    def slow(i: int) -> None:
        release.wait(5)
        ran.append(i)
        raise RuntimeError("after the release")

    worker = MuxThread("t", batch=1, depth=1)
    worker.submit(slow, 0)  # the worker is busy in it, holding nothing else
    worker.submit(slow, 1)  # fills the queue
    release.set()
    worker.abort()
    worker.abort()  # idempotent
    assert ran == [0]  # the second call was dropped: the first one failed
    with pytest.raises(RuntimeError, match="finished"):
        worker.submit(ran.append, 2)


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError):
        MuxThread("t", batch=0)
    with pytest.raises(ValueError):
        MuxThread("t", depth=0)
