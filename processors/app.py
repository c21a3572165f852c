"""`rtmsflow process`: the processors as a Faust app.

Faust gives the stage its lifecycle, web server (`/health`, `/metrics`, `/meetings/{uuid}`) and signals;
the raw -> ordered work runs in `ProcessorService` around `processors.batch_loop.ProcessorLoop`. Built by
`make_app(settings, ...)`, not at import time. Why not Faust agents: docs/DECISIONS.md, "Processors"."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import tempfile
from typing import Any

import faust
from mode import Service
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from processors.batch_loop import ProcessorLoop
from rtmsflow.kafka_client import bootstrap_servers
from rtmsflow.logs import get_logger
from rtmsflow.service import health_status
from rtmsflow.settings import Settings
from schemas.codec import Codec
from schemas.topics import MEETINGS

log = get_logger(__name__)


class ProcessorService(Service):
    """Runs a `ProcessorLoop` for as long as the app runs: start joins the group, stop runs the
    loop's last cycle (acks, state, commit) before the app's clients close."""

    def __init__(self, processor: ProcessorLoop, **kwargs: Any) -> None:
        self.processor = processor
        self._stopping = False
        super().__init__(**kwargs)

    async def on_start(self) -> None:
        await self.processor.start()
        # What exists now (modules, the app, its clients) lives as long as the process: out of
        # the cyclic collector's sight, a full collection scans only what the run allocates
        # (the imports made every one take 50-170 ms, a latency spike every ~6 s)
        gc.collect()
        gc.freeze()

    @Service.task
    async def _process(self) -> None:
        try:
            await self.processor.run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if self._stopping:  # the consumer was closed under the loop: a normal stop
                return
            # A failed send or commit: stop the worker so a supervisor restarts it from the last
            # state (it never writes past what it cannot account for).
            log.exception("processor loop failed; stopping the worker")
            await self.crash(exc)

    @Service.task
    async def _lag(self) -> None:
        while not self.should_stop:
            await self.sleep(5.0)
            try:
                await self.processor.update_lag()
            except Exception as exc:  # metrics only
                log.info("lag not updated", extra={"error": repr(exc)})

    async def on_stop(self) -> None:
        self._stopping = True
        await self.processor.stop()


def make_app(settings: Settings, *, web_port: int = 6066) -> faust.App:
    """The processors' Faust app for `settings` (broker, prefix, registry, consumer group and its
    session timeout), serving its pages on `web_port`."""
    group, session_timeout_ms = settings.process_group, settings.process_session_timeout_ms
    # Faust's datadir defaults to one in the current directory; with tables in memory and the
    # restart state in Kafka it holds nothing worth keeping: a temporary one, removed with the app
    # (or at exit)
    datadir = tempfile.TemporaryDirectory(prefix="rtmsflow-faust-")
    app = faust.App(
        f"{settings.topic_prefix}{group}-app",
        broker=f"kafka://{bootstrap_servers(settings)}",
        store="memory://",
        datadir=datadir.name,
        web_host=settings.http_host,
        web_port=web_port,
        web_enabled=True,
        topic_disable_leader=True,
        topic_allow_declare=False,
        consumer_auto_offset_reset="earliest",
        producer_linger_ms=5,
        stream_buffer_maxsize=32_768,
        # Faust starts app services only once its own consumer has its partitions: with Faust's
        # default 60 s session a restart after kill -9 would wait a minute for the dead member
        broker_session_timeout=session_timeout_ms / 1000,
        broker_heartbeat_interval=1.0,
        broker_rebalance_timeout=max(session_timeout_ms / 1000, 10.0),
    )
    loop = ProcessorLoop(settings, group, session_timeout_ms=session_timeout_ms)

    class _Service(ProcessorService):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(loop, **kwargs)

    app.service(_Service)
    codec = Codec(settings.schema_registry_url, settings.topic_prefix)
    meetings_topic = app.topic(MEETINGS.full_name(settings.topic_prefix), key_type=bytes, value_type=bytes,
                               key_serializer="raw", value_serializer="raw")  # fmt: skip
    index: dict[str, dict[str, Any]] = {}

    @app.agent(meetings_topic)
    async def meetings_view(stream: Any) -> None:
        """Latest rtms.meetings record per meeting (of the partitions this agent is given)."""
        async for value in stream:
            if value is None:
                continue
            try:
                record = codec.decode(meetings_topic.get_topic_name(), value)
            except ValueError as exc:
                log.error("unreadable rtms.meetings record", extra={"error": str(exc)})
                continue
            index[record["meeting_uuid"]] = record

    @app.page("/health")
    async def health(web: Any, request: Any) -> Any:
        body = loop.health()
        return web.json(body, status=health_status(body))

    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        return web.bytes(generate_latest(), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    @app.page("/meetings/{meeting}")
    async def meeting(web: Any, request: Any, meeting: str) -> Any:
        record = index.get(meeting)
        if record is None:
            return web.json({"error": f"meeting {meeting!r} not in this worker's view"}, status=404)
        return web.json(json.loads(json.dumps(record, default=lambda b: b.hex())))

    app.processor_loop = loop  # type: ignore[attr-defined]
    app.datadir_holder = datadir  # type: ignore[attr-defined]  # the directory lives as long as the app
    return app


def logging_config(level: str) -> dict[str, Any]:
    """dictConfig for the Faust worker: our JSON lines on stderr, the root logger at `level`
    (Faust's own default leaves it at DEBUG, which costs ~10 % throughput)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "rtmsflow.logs.JsonFormatter"}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json"}},
        "root": {"handlers": ["stderr"], "level": level.upper()},
        "loggers": {
            "aiokafka": {"level": max(logging.WARNING, logging.getLevelName(level.upper()))},
            "faust": {"level": max(logging.WARNING, logging.getLevelName(level.upper()))},
            "mode": {"level": max(logging.WARNING, logging.getLevelName(level.upper()))},
        },
    }
