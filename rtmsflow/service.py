"""The stages' service shell: a stage as `async with`, its /health and /metrics, the consumer
group's rebalance listener, and running a stage until SIGINT/SIGTERM."""

from __future__ import annotations

import abc
import asyncio
import signal
from collections.abc import Coroutine
from typing import Any, Protocol, Self

from aiohttp import web
from aiokafka import ConsumerRebalanceListener, TopicPartition
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest


class Stage(abc.ABC):
    """A long-lived stage (the ingest worker, the processors' loop, a sink): `start()` joins,
    `run()` works until cancelled, `stop()` shuts down in order (stop intake, flush, commit, close);
    `health()` is what /health reports.

    `async with stage:` starts it and runs it in a task (`stage.run_task`); leaving the block cancels
    the run, then stops the stage. `start()` raising leaves the stage unstarted (no `stop()`)."""

    run_task: asyncio.Task[None] | None = None

    @abc.abstractmethod
    async def start(self) -> None: ...

    @abc.abstractmethod
    async def run(self) -> None: ...

    @abc.abstractmethod
    async def stop(self) -> None: ...

    @abc.abstractmethod
    def health(self) -> dict[str, Any]:
        """The /health body: its "status" is "ok" while the stage serves (200), anything else is 503."""

    async def __aenter__(self) -> Self:
        await self.start()
        self.run_task = asyncio.create_task(self.run(), name=f"{type(self).__name__}.run")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        task, self.run_task = self.run_task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await self.stop()

    async def wait(self) -> None:
        """Until the run ends: raises its error, or CancelledError (the run cancelled with the caller)."""
        if self.run_task is None:
            raise RuntimeError(f"{type(self).__name__} is not running (use `async with`)")
        await self.run_task


class Rebalanced(Protocol):
    """What a consumer group's member does when its partitions are taken away or handed over."""

    async def on_revoked(self, revoked: set[TopicPartition]) -> None: ...
    async def on_assigned(self, assigned: set[TopicPartition]) -> None: ...


class RebalanceListener(ConsumerRebalanceListener):  # type: ignore[misc]
    """Hands a consumer's rebalance callbacks to a stage's `on_revoked` / `on_assigned`."""

    def __init__(self, stage: Rebalanced) -> None:
        self.stage = stage

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.stage.on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self.stage.on_assigned(set(assigned))


def health_status(body: dict[str, Any]) -> int:
    """The HTTP status of a /health body: 200 when its "status" is "ok", else 503."""
    return 200 if body["status"] == "ok" else 503


async def handle_metrics(request: web.Request) -> web.Response:
    """Prometheus exposition of this process's registry."""
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def serve_health(stage: Stage, host: str, port: int) -> web.AppRunner:
    """Serve the stage's /health and the process's /metrics on `port`; the caller cleans the runner up."""

    async def health(request: web.Request) -> web.Response:
        body = stage.health()
        return web.json_response(body, status=health_status(body))

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", handle_metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


async def run_stage(stage: Stage, host: str, metrics_port: int) -> None:
    """Run a stage until cancelled (or until its run fails), with /health and /metrics on
    `metrics_port` when it is set."""
    runner = await serve_health(stage, host, metrics_port) if metrics_port else None
    try:
        async with stage:
            await stage.wait()
    finally:
        if runner is not None:
            await runner.cleanup()


def run_until_signal(main: Coroutine[Any, Any, None]) -> None:
    """Run `main` until SIGINT/SIGTERM, then let its `finally` shut down in order."""

    async def runner() -> None:
        task = asyncio.ensure_future(main)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        try:
            await task
        except asyncio.CancelledError:
            pass

    asyncio.run(runner())
