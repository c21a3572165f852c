"""The webhook endpoint through the real broker: what is accepted lands on rtms.sessions, what is
refused gets the right status and produces nothing."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from emulator.webhooks import StreamIdentity, WebhookSender
from ingest.webhook import WebhookServer
from rtms_protocol import webhook_signature
from rtmsflow.children import die_with_parent
from rtmsflow.settings import Settings
from schemas.topics import partition_for
from tests.ingest.support import WEBHOOK_SECRET, free_port, ingest_settings, read_topic, worker_env

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
    good = json.dumps({"event": "meeting.rtms_started", "event_ts": int(time.time() * 1000), "payload": {
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


async def test_non_utf8_signature_headers_are_401_not_a_kafka_failure(endpoint: tuple[str, Settings]) -> None:
    base, s = endpoint
    body = json.dumps({"event": "meeting.rtms_started", "event_ts": int(time.time() * 1000), "payload": {
        "meeting_uuid": "m==", "rtms_stream_id": "s", "server_urls": "ws://127.0.0.1:1/x"}}).encode()  # fmt: skip
    ts = str(int(time.time()))
    for name, head in [
        ("x-zm-signature", f"x-zm-request-timestamp: {ts}\r\nx-zm-signature: v0=\xff\xfe".encode("latin-1")),
        (
            "x-zm-request-timestamp",
            "x-zm-request-timestamp: 17\xff\r\nx-zm-signature: v0=ab".encode("latin-1"),
        ),
    ]:
        status, answer = await raw_post(base, "/zoom/hook", head, body)
        assert (status, answer["error"]) == (401, "bad_signature"), name
    # positive control: the same body, correctly signed, is stored
    assert (await post(base + "/zoom/hook", body, signed(body)))[0] == 200
    assert [v["action"] for _, v, _, _ in await read_topic(s, s.topic_prefix + "rtms.sessions")] == [
        "STARTED"
    ]


async def raw_post(base: str, path: str, head: bytes, body: bytes) -> tuple[int, dict]:
    """POST with header bytes exactly as given (aiohttp's client would refuse non-UTF-8 ones)."""
    host, port = base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        b"POST " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + b"Connection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n" + head + b"\r\n\r\n" + body
    )  # fmt: skip
    response = await reader.read()
    writer.close()
    status_line, _, rest = response.partition(b"\r\n")
    return int(status_line.split()[1]), json.loads(rest.partition(b"\r\n\r\n")[2])


async def test_a_body_that_never_comes_is_408(settings: Settings, kafka_topics: dict[str, str]) -> None:
    s = dataclasses.replace(ingest_settings(settings), webhook_header_timeout_s=1.0)
    server = WebhookServer(s, path="/zoom/hook")
    port = await server.start(host="127.0.0.1", port=0)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /zoom/hook HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")  # then nothing
        response = await asyncio.wait_for(reader.read(), 60)
        writer.close()
        assert response.startswith(b"HTTP/1.1 408") and b'"timeout"' in response
    finally:
        await server.stop()


async def test_idle_partial_header_connections_are_closed_and_webhooks_still_served(
    settings: Settings, settings_env: dict[str, str], kafka_topics: dict[str, str], tmp_path: Path
) -> None:
    """~2,000 connections sending a header a byte at a time against `rtmsflow ingest http`: each is
    closed after the header timeout, a signed webhook sent meanwhile is stored, the log stays small."""
    port = free_port()
    env = {**worker_env(settings_env), "ZOOM_SECRET_TOKEN": WEBHOOK_SECRET, "RTMSFLOW_HTTP_PORT": str(port),
           "RTMSFLOW_WEBHOOK_HEADER_TIMEOUT_S": "3"}  # fmt: skip
    log_path = tmp_path / "ingest-http.log"
    proc = spawn_ingest_http(env, log_path)
    base = f"http://127.0.0.1:{port}"
    try:
        await wait_healthy(base, proc)
        idle = []
        for _ in range(2_000):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"POST /webhook HTTP/1.1\r\nHo")
            idle.append((reader, writer))
        for _, writer in idle:  # one more byte each: trickling does not buy more time
            writer.write(b"s")
        body = json.dumps({"event": "meeting.rtms_started", "event_ts": int(time.time() * 1000), "payload": {
            "meeting_uuid": "busy==", "rtms_stream_id": "s1", "server_urls": "ws://127.0.0.1:1/x"}}).encode()  # fmt: skip
        status, answer = await post(base + "/webhook", body, signed(body))
        assert (status, answer) == (200, {"status": "accepted"})
        closed = await asyncio.gather(*(asyncio.wait_for(closed_by_peer(r), 120) for r, _ in idle))
        assert all(closed) and len(closed) == 2_000
        for _, writer in idle:
            writer.close()
        # the endpoint is still there, and what it stored is durable
        assert (await post(base + "/webhook", body, signed(body)))[0] == 200
        records = await read_topic(settings, settings.topic_prefix + "rtms.sessions")
        assert [v["meeting_uuid"] for _, v, _, _ in records] == ["busy==", "busy=="]
    finally:
        proc.terminate()
        proc.wait(30)
    text = log_path.read_text()
    assert text.count('"webhook accepted"') == 2  # positive control: this is the endpoint's log
    assert len(text) < 20_000 and "Traceback" not in text, text[-2_000:]


def spawn_ingest_http(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """`rtmsflow ingest http` in a subprocess, its output (JSON log lines) in `log_path`."""
    with log_path.open("wb") as log_file:
        return subprocess.Popen([sys.executable, "-m", "rtmsflow.cli", "ingest", "http"], env=env,
                                stdout=log_file, stderr=subprocess.STDOUT, preexec_fn=die_with_parent)  # fmt: skip


async def closed_by_peer(reader: asyncio.StreamReader) -> bool:
    """True once the server closed the connection (EOF or reset) without answering a request."""
    try:
        data = await reader.read()
    except ConnectionResetError:
        return True
    return b"HTTP/1.1 2" not in data


async def wait_healthy(base: str, proc: subprocess.Popen[bytes]) -> None:
    """Until the endpoint answers /health with 200 (the process must not exit meanwhile)."""
    async with aiohttp.ClientSession() as http:
        while True:
            assert proc.poll() is None, "ingest http exited"
            try:
                async with http.get(base + "/health") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
