"""The webhook endpoint through the real broker: what is accepted lands on rtms.sessions, what is
refused gets the right status and produces nothing."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest

from emulator.webhooks import StreamIdentity, WebhookSender
from ingest.webhook import WebhookServer
from rtms_protocol import webhook_signature
from rtmsflow.settings import Settings
from schemas.topics import partition_for
from tests.ingest_support import WEBHOOK_SECRET, ingest_settings, read_topic

pytestmark = pytest.mark.kafka


@pytest.fixture
async def endpoint(settings: Settings, kafka_topics: dict[str, str]) -> AsyncIterator[tuple[str, Settings]]:
    s = ingest_settings(settings)
    server = WebhookServer(s, path="/zoom/hook")
    port = await server.start(host="127.0.0.1", port=0)
    try:
        yield f"http://127.0.0.1:{port}", s
    finally:
        await server.stop()


async def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as http, http.post(url, data=body, headers=headers) as resp:
        return resp.status, await resp.json()


def signed(body: bytes, ts: str | None = None, secret: str = WEBHOOK_SECRET) -> dict[str, str]:
    ts = ts or str(int(time.time()))
    return {"x-zm-request-timestamp": ts, "x-zm-signature": webhook_signature(secret, ts, body)}


async def test_url_validation_is_answered(endpoint: tuple[str, Settings]) -> None:
    base, _ = endpoint
    async with WebhookSender(base + "/zoom/hook", WEBHOOK_SECRET) as hooks:
        await hooks.validate_url()  # raises unless plainToken and encryptedToken are right
    status, answer = await post(
        base + "/zoom/hook", b'{"event":"endpoint.url_validation","payload":{"plainToken":"abc"}}', {}
    )
    assert status == 200 and answer["plainToken"] == "abc"


async def test_started_webhook_lands_on_sessions_keyed_by_stream_in_the_meetings_partition(
    endpoint: tuple[str, Settings],
) -> None:
    base, s = endpoint
    stream = StreamIdentity.generate("webinar", "ws://127.0.0.1:9999/signaling", seed=3)
    async with WebhookSender(base + "/zoom/hook", WEBHOOK_SECRET, retries=0) as hooks:
        (delivery,) = await hooks.rtms_started(stream)
        stopped = await hooks.rtms_stopped(stream, 6)
    assert delivery.attempts[-1].status == 200 and stopped.attempts[-1].status == 200
    records = await read_topic(s, s.topic_prefix + "rtms.sessions")
    key = f"{stream.instance_id}|{stream.rtms_stream_id}".encode()
    assert [(k, v["action"]) for k, v, _, _ in records] == [(key, "STARTED"), (key, "STOPPED")]
    started = records[0][1]
    assert started["product"] == "WEBINAR" and started["event"] == "webinar.rtms_started"
    assert started["server_urls"] == stream.server_urls and started["rtms_stream_id"] == stream.rtms_stream_id
    assert records[1][1]["stop_reason"] == 6
    # the meeting's partition: where the raw topics put its frames (murmur2 of the meeting UUID)
    assert {p for _, _, p, _ in records} == {partition_for(stream.instance_id, s.partitions)}


async def test_bad_requests_get_their_status_and_produce_nothing(endpoint: tuple[str, Settings]) -> None:
    base, s = endpoint
    url = base + "/zoom/hook"
    good = json.dumps({"event": "meeting.rtms_started", "event_ts": 1, "payload": {
        "meeting_uuid": "m==", "rtms_stream_id": "s", "server_urls": "ws://127.0.0.1:1/x"}}).encode()  # fmt: skip
    stale_ts = str(int(time.time()) - 3600)
    cases = [
        ("bad signature", good, signed(good, secret="wrong"), 401, "bad_signature"),
        ("missing signature", good, {}, 401, "bad_signature"),
        ("stale timestamp", good, signed(good, ts=stale_ts), 401, "stale_timestamp"),
        ("stale timestamp in ms", good, signed(good, ts=stale_ts + "000"), 401, "stale_timestamp"),
        ("malformed JSON", b'{"event": "meeting.rtms_started", ', signed(b'{"event": "meeting.rtms_started", '), 400, "malformed"),
        ("missing id", b'{"event":"meeting.rtms_started","payload":{"rtms_stream_id":"s","server_urls":"ws://127.0.0.1:1"}}', None, 400, "malformed"),
        ("disallowed host", good.replace(b"127.0.0.1", b"evil.example"), None, 400, "disallowed_url"),
        ("insecure scheme off-allowlist", good.replace(b"ws://127.0.0.1:1/x", b"http://127.0.0.1:1/x"), None, 400, "disallowed_url"),
    ]  # fmt: skip
    for name, body, headers, status, result in cases:
        got, answer = await post(url, body, headers if headers is not None else signed(body))
        assert (got, answer["error"]) == (status, result), name
    ignored = json.dumps({"event": "rtms.concurrency_limited", "payload": {"account_id": "a"}}).encode()
    assert await post(url, ignored, signed(ignored)) == (200, {"status": "ignored"})
    assert await read_topic(s, s.topic_prefix + "rtms.sessions") == []
    async with aiohttp.ClientSession() as http:
        async with http.get(base + "/metrics") as resp:
            text = await resp.text()
        async with http.get(base + "/health") as resp:
            assert resp.status == 200
    assert 'rtmsflow_ingest_webhooks_total{result="stale_timestamp"}' in text
