"""Pure checks of webhook deliveries: signature, replay window, envelope, lifecycle events, allowlist."""

from __future__ import annotations

import dataclasses
import json

import pytest

from ingest.allowlist import DisallowedUrl, check_server_urls, split_server_urls
from ingest.webhook import AcceptErrorLog
from ingest.webhook_events import (
    WebhookRejected,
    answer_url_validation,
    check_timestamp,
    parse_body,
    session_event,
    verify_signature,
)
from rtms_protocol import url_validation_token, webhook_signature
from rtmsflow.settings import Settings

SECRET = "whsec-test"
NOW_MS = 1_760_000_000_000


def started(event: str = "meeting.rtms_started", **payload: object) -> dict:
    body = {
        "meeting_uuid": "m1==",
        "rtms_stream_id": "s1",
        "server_urls": "wss://rtms.zoom.us/x",
        "operator_id": "op",
    }
    body.update(payload)  # type: ignore[arg-type]
    return {
        "event": event,
        "event_ts": NOW_MS - 5,
        "payload": {k: v for k, v in body.items() if v is not None},
    }


def test_signature_over_raw_body_accepted() -> None:
    raw = b'{"event":"meeting.rtms_started" ,  "payload":{}}'
    verify_signature(SECRET, "1760000000", raw, webhook_signature(SECRET, "1760000000", raw))


@pytest.mark.parametrize(
    ("timestamp", "signature"),
    [
        ("1760000000", "v0=" + "0" * 64),
        (None, "v0=abc"),
        ("1760000000", None),
        ("1760000001", "SIGNED-OTHER-TS"),
    ],
)
def test_bad_or_missing_signature_is_401(timestamp: str | None, signature: str | None) -> None:
    raw = b'{"event":"x","payload":{}}'
    if signature == "SIGNED-OTHER-TS":
        signature = webhook_signature(SECRET, "1760000000", raw)
    with pytest.raises(WebhookRejected) as info:
        verify_signature(SECRET, timestamp, raw, signature)
    assert (info.value.status, info.value.result) == (401, "bad_signature")


def test_signature_of_reserialized_body_does_not_match() -> None:
    raw = b'{"event": "x", "payload": {}}'
    reserialized = json.dumps(json.loads(raw), separators=(",", ":")).encode()
    with pytest.raises(WebhookRejected):
        verify_signature(SECRET, "1", raw, webhook_signature(SECRET, "1", reserialized))


@pytest.mark.parametrize(
    "ts", [str(NOW_MS // 1000), str(NOW_MS), str(NOW_MS // 1000 - 299), str(NOW_MS + 299_000)]
)
def test_timestamp_in_seconds_or_ms_within_window_is_accepted(ts: str) -> None:
    check_timestamp(ts, NOW_MS, 300)


@pytest.mark.parametrize(
    "ts", [str(NOW_MS // 1000 - 301), str(NOW_MS - 301_000), str(NOW_MS // 1000 + 400), "soon", "0"]
)
def test_stale_or_garbage_timestamp_is_401(ts: str) -> None:
    with pytest.raises(WebhookRejected) as info:
        check_timestamp(ts, NOW_MS, 300)
    assert (info.value.status, info.value.result) == (401, "stale_timestamp")


@pytest.mark.parametrize(
    "raw",
    [
        b"{not json",
        b"[1,2]",
        b'{"payload":{}}',
        b'{"event":"x","payload":[]}',
        b"\xff\xfe",
        b'{"event":5,"payload":{}}',
    ],
)
def test_malformed_envelope_is_400(raw: bytes) -> None:
    with pytest.raises(WebhookRejected) as info:
        parse_body(raw)
    assert info.value.status == 400


def test_url_validation_answer() -> None:
    body = parse_body(
        b'{"event":"endpoint.url_validation","payload":{"plainToken":"qgg8vlvZRS6UYooatFL8Aw"}}'
    )
    answer = answer_url_validation(body, SECRET)
    assert answer == {
        "plainToken": "qgg8vlvZRS6UYooatFL8Aw",
        "encryptedToken": url_validation_token(SECRET, "qgg8vlvZRS6UYooatFL8Aw"),
    }


@pytest.mark.parametrize("token", ["v0:1760000000:{}", "x" * 300, "", None])
def test_url_validation_refuses_tokens_that_would_make_it_a_signing_oracle(token: str | None) -> None:
    with pytest.raises(WebhookRejected) as info:
        answer_url_validation({"event": "endpoint.url_validation", "payload": {"plainToken": token}}, SECRET)
    assert info.value.status == 400


@pytest.mark.parametrize(
    ("event", "id_field", "product"),
    [
        ("meeting.rtms_started", "meeting_uuid", "MEETING"),
        ("webinar.rtms_started", "webinar_uuid", "WEBINAR"),
        ("webinar.rtms_started", "meeting_uuid", "WEBINAR"),
        ("session.rtms_started", "session_id", "VIDEO_SDK"),
        ("contact_center.voice_rtms_started", "engagement_id", "CONTACT_CENTER"),
    ],
)
def test_started_event_of_every_product_becomes_a_session_event(
    event: str, id_field: str, product: str
) -> None:
    fields: dict[str, object] = {"meeting_uuid": None, id_field: "inst-1"}
    if product == "VIDEO_SDK":
        fields["session_key"] = "k"
    body = started(event, **fields)
    ev = session_event(body, NOW_MS)
    assert ev is not None
    assert (ev.meeting_uuid, ev.rtms_stream_id, ev.action, ev.server_urls) == (
        "inst-1",
        "s1",
        "STARTED",
        "wss://rtms.zoom.us/x",
    )
    assert ev.record["product"] == product
    assert ev.record["event"] == event
    assert ev.record["event_ts_ms"] == NOW_MS - 5 and ev.record["received_at_ms"] == NOW_MS
    assert json.loads(ev.record["payload_json"])[id_field] == "inst-1"


def test_stopped_and_interrupted_events() -> None:
    stopped = session_event(
        {
            "event": "meeting.rtms_stopped",
            "event_ts": NOW_MS,
            "payload": {"meeting_uuid": "m", "rtms_stream_id": "s", "stop_reason": 6},
        },
        NOW_MS,
    )
    assert stopped is not None and stopped.action == "STOPPED" and stopped.record["stop_reason"] == 6
    interrupted = session_event(
        {
            "event": "meeting.rtms_interrupted",
            "event_ts": NOW_MS,
            "payload": {"meeting_uuid": "m", "rtms_stream_id": "s"},
        },
        NOW_MS,
    )
    assert interrupted is not None and interrupted.action == "INTERRUPTED" and interrupted.server_urls is None


@pytest.mark.parametrize(
    "event",
    ["rtms.concurrency_limited", "rtms.concurrency_near_limit", "meeting.started", "meeting.rtms_paused"],
)
def test_unknown_events_are_ignored(event: str) -> None:
    assert session_event({"event": event, "payload": {}}, NOW_MS) is None


@pytest.mark.parametrize(
    "body",
    [
        started(meeting_uuid=None),
        started(rtms_stream_id=None),
        started(server_urls=None),
        started(server_urls=["wss://a"]),
        {
            "event": "meeting.rtms_stopped",
            "payload": {"meeting_uuid": "m", "rtms_stream_id": "s", "stop_reason": "six"},
        },
        {**started(), "event_ts": "yesterday"},
    ],
)
def test_missing_or_bad_fields_are_400(body: dict) -> None:
    with pytest.raises(WebhookRejected) as info:
        session_event(body, NOW_MS)
    assert info.value.status == 400


def test_allowlist() -> None:
    settings = Settings()
    assert check_server_urls("wss://sjc.rtms.zoom.us/signal", settings) == ["wss://sjc.rtms.zoom.us/signal"]
    assert split_server_urls("wss://a.zoom.us/x, wss://b.zoom.us/y,") == [
        "wss://a.zoom.us/x",
        "wss://b.zoom.us/y",
    ]
    for bad in [
        "ws://sjc.rtms.zoom.us/x",
        "wss://evil.example/x",
        "wss://zoom.us.evil.example/",
        "https://a.zoom.us/",
        "wss://a.zoom.us/x,wss://evil.example/",
        "",
        "wss://:99/",
        "wss://a.zoom.us:bad/",
    ]:
        with pytest.raises(DisallowedUrl):
            check_server_urls(bad, settings)
    loopback = dataclasses.replace(settings, allowed_hosts=("127.0.0.1",), allow_insecure_ws=True)
    assert check_server_urls("ws://127.0.0.1:9000/signaling", loopback)
    with pytest.raises(DisallowedUrl):
        check_server_urls("ws://localhost:9000/", loopback)


@pytest.mark.parametrize(
    ("timestamp", "signature"),
    [
        ("1760000000", "v0=\udcff\udcfe"),  # non-UTF-8 header bytes, as aiohttp hands them over
        ("17600\udcff00000", "v0=" + "0" * 64),
        ("1760000000", "v0=é"),
    ],
)
def test_non_ascii_signature_headers_are_401_not_an_error(timestamp: str, signature: str) -> None:
    with pytest.raises(WebhookRejected) as info:
        verify_signature(SECRET, timestamp, b"{}", signature)
    assert (info.value.status, info.value.result) == (401, "bad_signature")


@pytest.mark.parametrize(
    "event_ts",
    [
        253_402_300_800_000,  # 10000-01-01: past year 9999
        -1,
        1_760_000_000_000_000,  # a microsecond clock read as ms
        1_760_000_000,  # seconds read as ms: January 1970
        1,
    ],
)
def test_event_ts_outside_any_sane_range_is_400(event_ts: int) -> None:
    with pytest.raises(WebhookRejected) as info:
        session_event({**started(), "event_ts": event_ts}, NOW_MS)
    assert info.value.status == 400 and "event_ts" in info.value.reason
    # positive control: the same delivery with a true time passes
    assert session_event({**started(), "event_ts": NOW_MS}, NOW_MS) is not None


@pytest.mark.parametrize("field", ["meeting_uuid", "rtms_stream_id"])
def test_ids_over_the_size_limit_are_400(field: str) -> None:
    with pytest.raises(WebhookRejected) as info:
        session_event(started(**{field: "x" * 65}), NOW_MS)
    assert info.value.status == 400 and "64 bytes" in info.value.reason
    ok = session_event(started(**{field: "x" * 64}), NOW_MS)  # at the limit: accepted
    assert ok is not None and ok.record[field] == "x" * 64


def test_accept_errors_are_logged_once_per_interval_with_a_count(caplog: pytest.LogCaptureFixture) -> None:
    clock = [0.0]
    handler = AcceptErrorLog(interval_s=10.0, clock=lambda: clock[0])
    others: list[dict] = []
    handler.previous = lambda loop, context: others.append(context)
    error = {
        "message": "socket.accept() out of system resource",
        "exception": OSError(24, "Too many open files"),
    }
    for i in range(5_000):  # a burst of failed accepts, 1 ms apart
        clock[0] = i / 1000
        handler(None, error)  # type: ignore[arg-type]
    clock[0] = 10.0
    handler(None, error)  # type: ignore[arg-type]
    lines = [r for r in caplog.records if r.getMessage() == "cannot accept connections"]
    assert [r.suppressed for r in lines] == [0, 4_999]
    handler(None, {"message": "Task exception was never retrieved"})  # type: ignore[arg-type]
    assert others == [{"message": "Task exception was never retrieved"}]  # not ours: passed on
