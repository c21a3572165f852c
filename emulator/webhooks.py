"""Zoom's side of RTMS webhooks: signed `*.rtms_started/stopped/interrupted` deliveries and the
`endpoint.url_validation` challenge, posted to one endpoint with Zoom's retry rule.

`WebhookSender` signs as Zoom does (`x-zm-signature: v0=HMAC-SHA256(...)`); a delivery not answered 2xx
within `timeout_s` is sent again with a fresh signature, on Zoom's retry schedule compressed to seconds."""

from __future__ import annotations

import asyncio
import base64
import enum
import json
import random
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp

from rtms_protocol import Product, StopReason, signatures_equal, url_validation_token, webhook_signature
from rtmsflow.logs import get_logger

log = get_logger(__name__)

# The products the emulator plays, by the name Zoom's webhooks give them (what `--product` takes).
PRODUCTS: tuple[str, ...] = tuple(p.webhook_name for p in Product if p is not Product.UNKNOWN)

# Real Zoom: retry 5 min after the first attempt, then 20 min, then 60 min later.
ZOOM_RETRY_DELAYS_S: tuple[float, ...] = (300.0, 1200.0, 3600.0)
# Same shape, scaled for a local run.
DEFAULT_RETRY_DELAYS_S: tuple[float, ...] = (1.0, 4.0, 12.0)


def event_name(product: Product, what: Literal["started", "stopped", "interrupted"]) -> str:
    """`meeting.rtms_started`, `contact_center.voice_rtms_stopped`, ..."""
    return product.event_prefix + what


def _b64_id(rng: random.Random, n: int = 16) -> str:
    return base64.b64encode(rng.randbytes(n)).decode()


def _b64url_id(rng: random.Random) -> str:
    return base64.urlsafe_b64encode(rng.randbytes(16)).decode().rstrip("=")[:22]


@dataclass(frozen=True)
class StreamIdentity:
    """Who a stream's webhooks are about, in the fields each product uses.

    `instance_id` is the meeting UUID, webinar UUID, Video SDK session id or ZCC engagement id;
    it is also what the client sends as `meeting_uuid` in its handshakes. `numeric_id` is the
    meeting / webinar number (meetings and webinars only), `session_key` the Video SDK custom key.
    """

    product: Product
    instance_id: str
    rtms_stream_id: str
    server_urls: str
    operator_id: str = ""
    account_id: str = ""
    numeric_id: int | None = None
    is_original_host: bool = True
    session_key: str = ""

    @classmethod
    def generate(
        cls, product: Product | str, server_urls: str, *, seed: int | None = None, index: int = 0
    ) -> StreamIdentity:
        """Zoom-shaped random ids (base64 UUIDs, 32-hex stream id, 11-digit meeting number);
        repeatable when `seed` is given (`index` tells apart the meetings of one run). `product` is
        a `Product` or its webhook name (one of PRODUCTS)."""
        if not isinstance(product, Product) or product is Product.UNKNOWN:
            product = Product.from_webhook_name(str(product))
        name = product.webhook_name
        rng = random.Random(None if seed is None else f"{seed}:{index}:{name}")
        contact_center = product is Product.CONTACT_CENTER
        instance = "eng_" + rng.randbytes(12).hex() if contact_center else _b64_id(rng)
        numbered = product in (Product.MEETING, Product.WEBINAR)
        return cls(
            product=product,
            instance_id=instance,
            rtms_stream_id=rng.randbytes(16).hex(),
            server_urls=server_urls,
            operator_id=_b64url_id(rng),
            account_id=_b64url_id(rng),
            numeric_id=rng.randrange(10**10, 10**11) if numbered else None,
            session_key=f"session-{rng.randrange(10**6):06d}" if product is Product.VIDEO_SDK else "",
        )

    def _ids(self) -> dict[str, Any]:
        if self.product is Product.MEETING:
            return {"meeting_uuid": self.instance_id}
        if self.product is Product.WEBINAR:
            return {"webinar_uuid": self.instance_id}
        if self.product is Product.VIDEO_SDK:
            return {"session_id": self.instance_id, "session_key": self.session_key}
        return {"engagement_id": self.instance_id}

    def started_payload(self) -> dict[str, Any]:
        """`payload` of the started event (fields as of Zoom's 2026-05-09 changelog)."""
        out = self._ids()
        numbered = self.product in (Product.MEETING, Product.WEBINAR)
        if numbered:
            out["operator_id"] = self.operator_id
        out["rtms_stream_id"] = self.rtms_stream_id
        out["server_urls"] = self.server_urls
        if self.product is not Product.CONTACT_CENTER:
            out["account_id"] = self.account_id
        if numbered:
            out["is_original_host"] = self.is_original_host
            out[f"{self.product.webhook_name}_id"] = self.numeric_id
        return out

    def stopped_payload(self, stop_reason: int) -> dict[str, Any]:
        """`payload` of the stopped event."""
        return {**self._ids(), "rtms_stream_id": self.rtms_stream_id, "stop_reason": int(stop_reason)}

    def interrupted_payload(self) -> dict[str, Any]:
        """`payload` of the interrupted event (signaling socket broken)."""
        return {**self._ids(), "rtms_stream_id": self.rtms_stream_id}


@dataclass(frozen=True)
class Attempt:
    """One POST: its HTTP status (None when it timed out or failed to connect)."""

    status: int | None
    error: str | None
    elapsed_s: float
    timestamp: str
    signature: str


@dataclass
class Delivery:
    """The outcome of sending one event: every attempt, and the last response body."""

    event: str
    body: bytes
    attempts: list[Attempt] = field(default_factory=list)
    response_body: bytes = b""

    @property
    def delivered(self) -> bool:
        return (
            bool(self.attempts)
            and self.attempts[-1].status is not None
            and 200 <= self.attempts[-1].status < 300
        )


class WebhookError(RuntimeError):
    """A webhook could not be delivered, or the endpoint answered a challenge wrongly."""

    def __init__(self, message: str, delivery: Delivery | None = None) -> None:
        super().__init__(message)
        self.delivery = delivery


class _State(enum.Enum):
    NEW = "new"
    STARTED = "started"
    STOPPED = "stopped"


class WebhookSender:
    """Posts signed Zoom webhooks to `url`. Use `async with` or `start()` / `stop()`.

    `retries` extra attempts follow an unacknowledged one (non-2xx, timeout, connection error),
    after `retry_delays_s[i]` seconds (the last delay repeats). `clock` (epoch seconds) lets tests
    and fault runs skew the timestamps.
    """

    def __init__(
        self,
        url: str,
        secret_token: str,
        *,
        timeout_s: float = 3.0,
        retries: int = 3,
        retry_delays_s: Sequence[float] = DEFAULT_RETRY_DELAYS_S,
        clock: Callable[[], float] = time.time,
        headers: Mapping[str, str] | None = None,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        if not secret_token:
            raise ValueError("a webhook secret token is required (ZOOM_SECRET_TOKEN)")
        if retries < 0 or (retries and not retry_delays_s):
            raise ValueError("retries must be >= 0 and need at least one delay")
        self.url = url
        self._secret = secret_token
        self.timeout_s = timeout_s
        self.retries = retries
        self.retry_delays_s = tuple(retry_delays_s)
        self._clock = clock
        self._headers = {"user-agent": "Zoom Marketplace/1.0a", **(headers or {})}
        self._session = session
        self._own_session = session is None
        self._state = _State.NEW

    async def start(self) -> None:
        if self._state is _State.STOPPED:
            raise RuntimeError("a stopped WebhookSender cannot be restarted; make a new one")
        if self._state is _State.STARTED:
            return
        if self._session is None:
            self._session = aiohttp.ClientSession()
        self._state = _State.STARTED

    async def stop(self) -> None:
        """Close the HTTP session (idempotent)."""
        if self._state is _State.STARTED and self._own_session and self._session is not None:
            await self._session.close()
        self._state = _State.STOPPED

    async def __aenter__(self) -> WebhookSender:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- sending ----------------------------------------------------------------------------------

    def sign(self, body: bytes) -> tuple[str, str]:
        """A fresh (`x-zm-request-timestamp`, `x-zm-signature`) pair for `body`."""
        timestamp = str(int(self._clock()))
        return timestamp, webhook_signature(self._secret, timestamp, body)

    @staticmethod
    def envelope(event: str, payload: Mapping[str, Any], event_ts: int) -> bytes:
        """The raw body Zoom posts: compact JSON `{"event", "payload", "event_ts"}`."""
        return json.dumps(
            {"event": event, "payload": dict(payload), "event_ts": event_ts}, separators=(",", ":")
        ).encode()

    async def _post_once(self, delivery: Delivery) -> Attempt:
        if self._state is not _State.STARTED or self._session is None:
            raise RuntimeError("WebhookSender is not started (use `async with` or `await start()`)")
        timestamp, signature = self.sign(delivery.body)
        headers = {
            **self._headers,
            "content-type": "application/json; charset=utf-8",
            "x-zm-request-timestamp": timestamp,
            "x-zm-signature": signature,
        }
        began = time.monotonic()
        try:
            async with asyncio.timeout(self.timeout_s):
                async with self._session.post(self.url, data=delivery.body, headers=headers) as resp:
                    delivery.response_body = await resp.read()
                    status: int | None = resp.status
                    error = None if 200 <= resp.status < 300 else f"HTTP {resp.status}"
        except TimeoutError:
            status, error = None, f"no answer within {self.timeout_s} s"
        except aiohttp.ClientError as exc:
            status, error = None, f"{type(exc).__name__}: {exc}"
        return Attempt(status, error, time.monotonic() - began, timestamp, signature)

    async def deliver(self, delivery: Delivery, *, retries: int | None = None) -> Delivery:
        """Post `delivery.body` until acknowledged or out of retries; returns it with its attempts."""
        retries = self.retries if retries is None else retries
        for n in range(retries + 1):
            if n:
                delay = self.retry_delays_s[min(n - 1, len(self.retry_delays_s) - 1)]
                await asyncio.sleep(delay)
            attempt = await self._post_once(delivery)
            delivery.attempts.append(attempt)
            if attempt.error is None:
                break
            log.warning(
                "webhook not acknowledged",
                extra={"event": delivery.event, "attempt": n + 1, "reason": attempt.error, "url": self.url},
            )
        return delivery

    async def send(self, event: str, payload: Mapping[str, Any], *, event_ts: int | None = None) -> Delivery:
        """Sign and post one event with retries. `event_ts` (epoch ms) defaults to now."""
        ts = int(self._clock() * 1000) if event_ts is None else event_ts
        delivery = await self.deliver(Delivery(event, self.envelope(event, payload, ts)))
        if not delivery.delivered:
            log.error(
                "webhook given up",
                extra={"event": event, "attempts": len(delivery.attempts), "url": self.url},
            )
        return delivery

    # -- Zoom's events ------------------------------------------------------------------------------

    async def validate_url(self, plain_token: str | None = None) -> Delivery:
        """Send the `endpoint.url_validation` challenge once (Zoom does not retry it) and check
        the answer: HTTP 200 with `plainToken` echoed and `encryptedToken` =
        hex HMAC-SHA256(secret token, plainToken). Raises WebhookError otherwise."""
        token = plain_token or secrets.token_urlsafe(16)
        delivery = Delivery(
            "endpoint.url_validation",
            self.envelope("endpoint.url_validation", {"plainToken": token}, int(self._clock() * 1000)),
        )
        await self.deliver(delivery, retries=0)
        if not delivery.delivered or delivery.attempts[-1].status != 200:
            raise WebhookError(f"url validation failed: {delivery.attempts[-1].error}", delivery)
        try:
            answer = json.loads(delivery.response_body)
        except ValueError as exc:
            raise WebhookError(
                f"url validation answer is not JSON: {delivery.response_body[:200]!r}", delivery
            ) from exc
        expected = url_validation_token(self._secret, token)
        if not isinstance(answer, dict) or answer.get("plainToken") != token:
            raise WebhookError(f"url validation answer does not echo plainToken: {answer!r}", delivery)
        if not signatures_equal(str(answer.get("encryptedToken", "")), expected):
            raise WebhookError(
                "url validation answer has a wrong encryptedToken (secret token mismatch?)", delivery
            )
        return delivery

    async def rtms_started(
        self, stream: StreamIdentity, *, twice: bool = False, twice_after_s: float = 0.0
    ) -> list[Delivery]:
        """Announce a stream. `twice` sends the identical event again after it was acknowledged,
        as Zoom does when it did not see the first acknowledgement: the receiver must dedupe."""
        event = event_name(stream.product, "started")
        first = await self.send(event, stream.started_payload())
        out = [first]
        if twice:
            await asyncio.sleep(twice_after_s)
            out.append(await self.deliver(Delivery(event, first.body)))
        return out

    async def rtms_stopped(
        self, stream: StreamIdentity, stop_reason: int = StopReason.MEETING_ENDED
    ) -> Delivery:
        """The stream ended for `stop_reason` (RTMS_STOP_REASON; 6 = meeting ended)."""
        return await self.send(event_name(stream.product, "stopped"), stream.stopped_payload(stop_reason))

    async def rtms_interrupted(self, stream: StreamIdentity) -> Delivery:
        """The stream's signaling connection broke; the client should reconnect within 60 s."""
        return await self.send(event_name(stream.product, "interrupted"), stream.interrupted_payload())
