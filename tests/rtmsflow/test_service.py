"""The stages' service shell without a broker: `async with` order, run errors, /health status codes."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from aiokafka import TopicPartition

from rtmsflow.jvm import free_port
from rtmsflow.service import RebalanceListener, Stage, run_stage


class Recorder(Stage):
    """A stage that notes its lifecycle; `run()` waits for `fail` (then raises) or a cancel."""

    def __init__(self) -> None:
        self.steps: list[str] = []
        self.fail = asyncio.Event()
        self.ran = asyncio.Event()
        self.status = "ok"

    async def start(self) -> None:
        self.steps.append("start")

    async def run(self) -> None:
        self.steps.append("run")
        self.ran.set()
        try:
            await self.fail.wait()
        except asyncio.CancelledError:
            self.steps.append("run cancelled")
            raise
        raise RuntimeError("the run failed")

    async def stop(self) -> None:
        self.steps.append("stop")

    def health(self) -> dict[str, Any]:
        return {"status": self.status, "steps": len(self.steps)}


async def test_async_with_starts_runs_then_cancels_the_run_before_stopping() -> None:
    stage = Recorder()
    async with stage as entered:
        assert entered is stage
        await stage.ran.wait()
        assert stage.run_task is not None and not stage.run_task.done()
    assert stage.steps == ["start", "run", "run cancelled", "stop"]
    assert stage.run_task is None


async def test_run_stage_raises_the_run_s_error_after_stopping_and_a_cancel_stops_it_quietly() -> None:
    failing = Recorder()
    task = asyncio.create_task(run_stage(failing, "127.0.0.1", 0))
    await failing.ran.wait()
    failing.fail.set()
    with pytest.raises(RuntimeError, match="the run failed"):
        await task
    assert failing.steps == ["start", "run", "stop"]

    cancelled = Recorder()  # the control: a cancel (SIGTERM) ends it in order, with no error of its own
    task = asyncio.create_task(run_stage(cancelled, "127.0.0.1", 0))
    await cancelled.ran.wait()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert cancelled.steps == ["start", "run", "run cancelled", "stop"]


async def test_health_is_200_when_the_stage_says_ok_and_503_otherwise() -> None:
    stage, port = Recorder(), free_port()
    task = asyncio.create_task(run_stage(stage, "127.0.0.1", port))
    try:
        async with aiohttp.ClientSession() as http:
            await stage.ran.wait()
            async with http.get(f"http://127.0.0.1:{port}/health") as r:
                assert (r.status, await r.json()) == (200, {"status": "ok", "steps": 2})
            stage.status = "stopped"
            async with http.get(f"http://127.0.0.1:{port}/health") as r:
                assert (r.status, (await r.json())["status"]) == (503, "stopped")
            async with http.get(f"http://127.0.0.1:{port}/metrics") as r:
                assert r.status == 200 and "python_info" in await r.text()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_the_rebalance_listener_hands_sets_of_partitions_to_the_stage() -> None:
    seen: list[tuple[str, set[TopicPartition]]] = []

    class Member:
        async def on_revoked(self, revoked: set[TopicPartition]) -> None:
            seen.append(("revoked", revoked))

        async def on_assigned(self, assigned: set[TopicPartition]) -> None:
            seen.append(("assigned", assigned))

    listener = RebalanceListener(Member())
    one, two = TopicPartition("t", 0), TopicPartition("t", 1)
    await listener.on_partitions_revoked(frozenset({one}))
    await listener.on_partitions_assigned([one, two])
    assert seen == [("revoked", {one}), ("assigned", {one, two})]
    assert all(type(partitions) is set for _, partitions in seen)
