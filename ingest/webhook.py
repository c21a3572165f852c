"""`rtmsflow ingest http`: Zoom's webhooks in, `session_event` records on `rtms.sessions` out.

Checks signature and timestamp (401), body (400), lifecycle fields and the allowlist (400), then produces
the record to the meeting's partition and answers 200 only after the broker's ack (503 if Kafka is down,
so Zoom retries). Slow and idle connections are timed out (`Settings.webhook_header_timeout_s`)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web
from aiokafka import AIOKafkaProducer

from ingest import metrics
from ingest.allowlist import DisallowedUrl, check_server_urls
from ingest.webhook_events import (
    URL_VALIDATION,
    WebhookRejected,
    answer_url_validation,
    check_timestamp,
    parse_body,
    session_event,
    verify_signature,
)
from rtmsflow.clock import now_ms
from rtmsflow.kafka_client import make_producer
from rtmsflow.logs import Throttle, get_logger
from rtmsflow.service import handle_metrics, health_status
from rtmsflow.settings import Settings
from schemas.codec import Codec
from schemas.topics import SESSIONS, partition_for, session_key

log = get_logger(__name__)

MAX_BODY_BYTES = 64 * 1024
PRODUCE_TIMEOUT_S = 2.5  # Zoom wants an answer within ~3 s
_ACCEPT_LOG_INTERVAL_S = 10.0
_ACCEPT_ERROR = "socket.accept() out of system resource"  # asyncio's message (selector_events)


class WebhookServer:
    """The webhook HTTP endpoint with its own producer. `start()` binds and returns the port
    (pass port 0 for a free one), `stop()` closes the listener, then the producer."""

    def __init__(self, settings: Settings, *, path: str = "/webhook", codec: Codec | None = None) -> None:
        self.settings = settings
        self.path = path
        self.codec = codec or Codec(settings.schema_registry_url, settings.topic_prefix)
        self.topic = SESSIONS.full_name(settings.topic_prefix)
        self.producer: AIOKafkaProducer | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0

    def app(self) -> web.Application:
        """The aiohttp application (routes only; the producer is started by `start()`)."""
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.router.add_post(self.path, self.handle_webhook)
        app.router.add_get("/health", self.handle_health)
        app.router.add_get("/metrics", handle_metrics)
        return app

    async def start(self, host: str | None = None, port: int | None = None) -> int:
        await self.codec.prepare([self.topic])
        self.producer = make_producer(self.settings, linger_ms=0)
        await self.producer.start()
        # keepalive_timeout is also the time a new connection has to send its headers (the timer is
        # armed at connect in the aiohttp we pin, >= 3.14; tested); aiohttp's default is an hour
        self._runner = web.AppRunner(
            self.app(), access_log=None, keepalive_timeout=self.settings.webhook_header_timeout_s
        )
        await self._runner.setup()
        site = web.TCPSite(
            self._runner,
            host or self.settings.http_host,
            self.settings.http_port if port is None else port,
        )
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        log.info(
            "webhook endpoint listening", extra={"port": self.port, "path": self.path, "topic": self.topic}
        )
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self.producer is not None:
            await self.producer.stop()
            self.producer = None

    # --- handlers ---------------------------------------------------------------------------

    async def handle_health(self, request: web.Request) -> web.Response:
        body = {"status": "ok" if self.producer is not None else "starting"}
        return web.json_response(body, status=health_status(body))

    async def handle_webhook(self, request: web.Request) -> web.Response:
        try:
            async with asyncio.timeout(self.settings.webhook_header_timeout_s):
                raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return self._reject(
                WebhookRejected(413, "malformed", f"body larger than {MAX_BODY_BYTES} bytes"), {}
            )
        except TimeoutError:
            rejected = WebhookRejected(408, "timeout", "body not received in time")
            response = self._reject(rejected, {})
            response.force_close()
            return response
        received = now_ms()
        signature = request.headers.get("x-zm-signature")
        timestamp = request.headers.get("x-zm-request-timestamp")
        context: dict[str, Any] = {}
        try:
            if signature is not None or timestamp is not None:
                verify_signature(self.settings.zoom_webhook_secret, timestamp, raw, signature)
                assert timestamp is not None
                check_timestamp(timestamp, received, self.settings.webhook_max_skew_s)
            body = parse_body(raw)
            context["event"] = body["event"]
            if body["event"] == URL_VALIDATION:
                answer = answer_url_validation(body, self.settings.zoom_webhook_secret)
                return self._ok("url_validation", context, answer)
            if signature is None:
                raise WebhookRejected(
                    401, "bad_signature", "missing x-zm-signature or x-zm-request-timestamp"
                )
            event = session_event(body, received)
            if event is None:
                return self._ok("ignored", context, {"status": "ignored"})
            context.update(meeting=event.meeting_uuid, rtms_stream_id=event.rtms_stream_id)
            if event.server_urls is not None:
                try:
                    check_server_urls(event.server_urls, self.settings)
                except DisallowedUrl as exc:
                    raise WebhookRejected(400, "disallowed_url", str(exc)) from None
            await self._produce(event.meeting_uuid, event.record["rtms_stream_id"], event.record)
        except WebhookRejected as rejected:
            return self._reject(rejected, context)
        except Exception as exc:  # Kafka down or slow: let Zoom retry
            log.exception("session event not produced", extra=context)
            return self._reject(WebhookRejected(503, "produce_failed", f"not stored: {exc!r}"), context)
        return self._ok("accepted", context, {"status": "accepted"})

    async def _produce(self, meeting_uuid: str, stream_id: str, record: dict[str, Any]) -> None:
        if self.producer is None:
            raise RuntimeError("webhook endpoint not started")
        value = self.codec.encode(self.topic, record)
        started = time.perf_counter()
        partitions = len(await self.producer.partitions_for(self.topic))
        send = self.producer.send_and_wait(
            self.topic,
            value=value,
            key=session_key(meeting_uuid, stream_id),
            partition=partition_for(meeting_uuid, partitions),
        )
        await asyncio.wait_for(send, PRODUCE_TIMEOUT_S)
        metrics.PRODUCE_LATENCY.labels(topic="sessions").observe(time.perf_counter() - started)

    def _ok(self, result: str, context: dict[str, Any], answer: dict[str, str]) -> web.Response:
        metrics.WEBHOOKS.labels(result=result).inc()
        log.info("webhook %s", result, extra={**context, "result": result})
        return web.json_response(answer)

    def _reject(self, rejected: WebhookRejected, context: dict[str, Any]) -> web.Response:
        metrics.WEBHOOKS.labels(result=rejected.result).inc()
        log.warning(
            "webhook rejected: %s",
            rejected.reason,
            extra={**context, "result": rejected.result, "status": rejected.status},
        )
        return web.json_response(
            {"error": rejected.result, "reason": rejected.reason}, status=rejected.status
        )


class AcceptErrorLog:
    """A loop exception handler that logs asyncio's "out of system resource" accept errors (one a
    failed accept while file descriptors run out) once per interval, with how many there were;
    everything else goes to the previous handler."""

    def __init__(self, interval_s: float = _ACCEPT_LOG_INTERVAL_S, clock: Any = time.monotonic) -> None:
        self.throttle = Throttle(interval_s)
        self.clock = clock
        self.previous: Any = None

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        self.previous = loop.get_exception_handler()
        loop.set_exception_handler(self)

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if not str(context.get("message", "")).startswith(_ACCEPT_ERROR):
            if self.previous is not None:
                self.previous(loop, context)
            else:
                loop.default_exception_handler(context)
            return
        metrics.ACCEPT_ERRORS.inc()
        if self.throttle.ready(self.clock()):
            log.error(
                "cannot accept connections",
                extra={
                    "error": repr(context.get("exception")),
                    "suppressed": self.throttle.take_suppressed(),
                },
            )


async def serve_http(settings: Settings, path: str) -> None:
    """Run the endpoint until cancelled (the CLI's `ingest http`)."""
    AcceptErrorLog().install(asyncio.get_running_loop())
    server = WebhookServer(settings, path=path)
    await server.start()
    try:
        await asyncio.Event().wait()
    finally:
        await server.stop()
