"""The emulator's webhook sender signs, retries and shapes payloads the way Zoom does, checked
against a real aiohttp server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from emulator.webhooks import PRODUCTS, StreamIdentity, WebhookError, WebhookSender, event_name
from rtms_protocol import Product

SECRET = "whsec-test-token"


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> dict[str, Any]:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A webhook endpoint whose answers are scripted: an int status, 'slow' (no answer until the
    receiver stops: past any sender's timeout) or 'validate' (answers the challenge with `secret`)."""

    url: str = ""
    script: list[int | str] = field(default_factory=list)
    default: int | str = 200
    secret: str = SECRET
    got: list[Received] = field(default_factory=list)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.got.append(Received(dict(request.headers), body))
        action = self.script.pop(0) if self.script else self.default
        if action == "slow":
            await self.stopping.wait()
            return web.Response(status=200)
        if action == "validate":
            token = json.loads(body)["payload"]["plainToken"]
            digest = hmac.new(self.secret.encode(), token.encode(), hashlib.sha256).hexdigest()
            return web.json_response({"plainToken": token, "encryptedToken": digest})
        assert isinstance(action, int)
        return web.Response(status=action)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/webhook", rec.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    rec.url = f"http://127.0.0.1:{port}/webhook"
    yield rec
    rec.stopping.set()
    await runner.cleanup()


def sender(rec: Receiver, **kw: Any) -> WebhookSender:
    kw.setdefault("retry_delays_s", (0.01,))
    return WebhookSender(rec.url, SECRET, **kw)


def stream(product: Product | str = "meeting") -> StreamIdentity:
    return StreamIdentity.generate(product, "ws://127.0.0.1:9999/signaling", seed=5)


async def test_signature_is_zooms_hmac_over_the_raw_body(receiver: Receiver) -> None:
    async with sender(receiver) as hooks:
        [delivery] = await hooks.rtms_started(stream())
    assert delivery.delivered and len(receiver.got) == 1
    got = receiver.got[0]
    ts = got.headers["x-zm-request-timestamp"]
    expected = "v0=" + hmac.new(SECRET.encode(), f"v0:{ts}:".encode() + got.body, hashlib.sha256).hexdigest()
    assert got.headers["x-zm-signature"] == expected
    assert abs(int(ts) - time.time()) < 5, "epoch seconds"
    assert got.headers["Content-Type"].startswith("application/json")
    envelope = got.json
    assert envelope["event"] == "meeting.rtms_started"
    assert abs(envelope["event_ts"] - time.time() * 1000) < 5000, "event_ts in epoch ms"
    assert set(envelope) == {"event", "payload", "event_ts"}


async def test_url_validation_round_trip(receiver: Receiver) -> None:
    receiver.script = ["validate"]
    async with sender(receiver) as hooks:
        await hooks.validate_url("plain-123")
        assert receiver.got[-1].json["event"] == "endpoint.url_validation"
        assert receiver.got[-1].json["payload"] == {"plainToken": "plain-123"}

        receiver.script, receiver.secret = ["validate"], "another-secret"
        with pytest.raises(WebhookError, match="encryptedToken"):
            await hooks.validate_url()

        receiver.script = [500]
        with pytest.raises(WebhookError, match="HTTP 500"):
            await hooks.validate_url()
    assert len(receiver.got) == 3, "a challenge is never retried"


async def test_unacknowledged_delivery_is_retried_with_same_body_and_fresh_signature(
    receiver: Receiver,
) -> None:
    receiver.script = [500, 404, 200]
    clock = itertools.count(1_800_000_000, 7)
    async with sender(receiver, clock=lambda: float(next(clock))) as hooks:
        delivery = await hooks.rtms_stopped(stream(), 6)
    assert delivery.delivered and [a.status for a in delivery.attempts] == [500, 404, 200]
    assert len({r.body for r in receiver.got}) == 1, "the same event, byte for byte"
    stamps = [r.headers["x-zm-request-timestamp"] for r in receiver.got]
    assert len(set(stamps)) == 3
    for r in receiver.got:
        ts = r.headers["x-zm-request-timestamp"]
        mac = hmac.new(SECRET.encode(), f"v0:{ts}:".encode() + r.body, hashlib.sha256).hexdigest()
        assert r.headers["x-zm-signature"] == "v0=" + mac


async def test_slow_answer_counts_as_not_acknowledged(receiver: Receiver) -> None:
    receiver.script = ["slow", 200]
    # the timeout only has to be longer than a prompt answer takes on a loaded machine
    async with sender(receiver, timeout_s=5.0) as hooks:
        delivery = await hooks.rtms_interrupted(stream())
    assert [a.status for a in delivery.attempts] == [None, 200]
    assert delivery.attempts[0].error == "no answer within 5.0 s"
    assert delivery.delivered and len(receiver.got) == 2


async def test_gives_up_after_the_retries(receiver: Receiver) -> None:
    receiver.default = 503
    async with sender(receiver, retries=2) as hooks:
        delivery = await hooks.send("meeting.rtms_started", stream().started_payload())
    assert not delivery.delivered and len(delivery.attempts) == 3 == len(receiver.got)


async def test_unreachable_endpoint_is_retried_then_reported() -> None:
    hooks = WebhookSender("http://127.0.0.1:9/webhook", SECRET, retries=1, retry_delays_s=(0.01,))
    async with hooks:
        delivery = await hooks.rtms_stopped(stream())
    assert not delivery.delivered and len(delivery.attempts) == 2
    assert all(a.status is None and a.error for a in delivery.attempts)


async def test_started_can_be_sent_twice(receiver: Receiver) -> None:
    async with sender(receiver) as hooks:
        deliveries = await hooks.rtms_started(stream(), twice=True)
    assert [d.delivered for d in deliveries] == [True, True]
    assert len(receiver.got) == 2 and receiver.got[0].body == receiver.got[1].body


EXPECTED_FIELDS: dict[str, tuple[set[str], set[str], set[str]]] = {
    # product: (started, stopped, interrupted)
    "meeting": (
        {
            "meeting_uuid",
            "operator_id",
            "rtms_stream_id",
            "server_urls",
            "account_id",
            "meeting_id",
            "is_original_host",
        },
        {"meeting_uuid", "rtms_stream_id", "stop_reason"},
        {"meeting_uuid", "rtms_stream_id"},
    ),
    "webinar": (
        {
            "webinar_uuid",
            "operator_id",
            "rtms_stream_id",
            "server_urls",
            "account_id",
            "webinar_id",
            "is_original_host",
        },
        {"webinar_uuid", "rtms_stream_id", "stop_reason"},
        {"webinar_uuid", "rtms_stream_id"},
    ),
    "session": (
        {"session_id", "session_key", "rtms_stream_id", "server_urls", "account_id"},
        {"session_id", "session_key", "rtms_stream_id", "stop_reason"},
        {"session_id", "session_key", "rtms_stream_id"},
    ),
    "contact_center": (
        {"engagement_id", "rtms_stream_id", "server_urls"},
        {"engagement_id", "rtms_stream_id", "stop_reason"},
        {"engagement_id", "rtms_stream_id"},
    ),
}


@pytest.mark.parametrize("product", PRODUCTS)
async def test_every_product_variant_has_its_event_names_and_fields(receiver: Receiver, product: str) -> None:
    s = stream(product)
    async with sender(receiver) as hooks:
        await hooks.rtms_started(s)
        await hooks.rtms_interrupted(s)
        await hooks.rtms_stopped(s, 8)
    started, interrupted, stopped = (r.json for r in receiver.got)
    prefix = "contact_center.voice_rtms_" if product == "contact_center" else f"{product}.rtms_"
    assert [started["event"], interrupted["event"], stopped["event"]] == [
        prefix + "started",
        prefix + "interrupted",
        prefix + "stopped",
    ]
    assert event_name(Product.from_webhook_name(product), "started") == prefix + "started"
    want_started, want_stopped, want_interrupted = EXPECTED_FIELDS[product]
    assert set(started["payload"]) == want_started
    assert set(stopped["payload"]) == want_stopped and stopped["payload"]["stop_reason"] == 8
    assert set(interrupted["payload"]) == want_interrupted
    assert started["payload"]["server_urls"] == "ws://127.0.0.1:9999/signaling"
    assert started["payload"]["rtms_stream_id"] == stopped["payload"]["rtms_stream_id"] == s.rtms_stream_id
    id_field = {"meeting": "meeting_uuid", "webinar": "webinar_uuid", "session": "session_id"}.get(
        product, "engagement_id"
    )
    assert started["payload"][id_field] == s.instance_id
    if product in ("meeting", "webinar"):
        assert isinstance(started["payload"][f"{product}_id"], int)
        assert started["payload"]["is_original_host"] is True


def test_generated_identities_are_zoom_shaped_and_repeatable() -> None:
    a = StreamIdentity.generate("meeting", "ws://x", seed=1, index=0)
    assert a == StreamIdentity.generate("meeting", "ws://x", seed=1, index=0)
    assert a.rtms_stream_id != StreamIdentity.generate("meeting", "ws://x", seed=1, index=1).rtms_stream_id
    assert len(a.rtms_stream_id) == 32 and int(a.rtms_stream_id, 16) >= 0
    assert a.instance_id.endswith("==") and len(a.instance_id) == 24
    assert a.numeric_id is not None and 10**10 <= a.numeric_id < 10**11
    with pytest.raises(ValueError, match="product"):
        StreamIdentity.generate("phone", "ws://x")
    with pytest.raises(ValueError, match="product"):
        StreamIdentity.generate(Product.UNKNOWN, "ws://x")


def test_a_product_is_named_by_its_enum_or_its_webhook_name_alike() -> None:
    for product in (Product.MEETING, Product.WEBINAR, Product.VIDEO_SDK, Product.CONTACT_CENTER):
        by_name = StreamIdentity.generate(product.webhook_name, "ws://x", seed=3)
        assert by_name == StreamIdentity.generate(product, "ws://x", seed=3)
        assert by_name.product is product
    assert PRODUCTS == ("meeting", "webinar", "session", "contact_center")


async def test_sender_lifecycle_is_explicit() -> None:
    hooks = WebhookSender("http://127.0.0.1:9/webhook", SECRET)
    with pytest.raises(RuntimeError, match="not started"):
        await hooks.rtms_stopped(stream())
    await hooks.start()
    await hooks.stop()
    await hooks.stop()
    with pytest.raises(RuntimeError, match="restarted"):
        await hooks.start()
    with pytest.raises(ValueError, match="secret"):
        WebhookSender("http://127.0.0.1:9/webhook", "")
