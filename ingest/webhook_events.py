"""Zoom webhook deliveries, checked and turned into `session_event` records (pure: no I/O).

`parse_body`, `answer_url_validation`, `verify_signature`, `check_timestamp` and `session_event`, called
in that order by `ingest.webhook`."""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass
from typing import Any

from rtms_protocol import Product, url_validation_token, webhook_signature
from schemas.limits import MAX_ID_BYTES, id_too_long, timestamp_in_range

URL_VALIDATION = "endpoint.url_validation"

# an event name is its product's prefix (`Product.event_prefix`), then the action
_ACTIONS = {"started": "STARTED", "stopped": "STOPPED", "interrupted": "INTERRUPTED"}
# docs/PROTOCOL.md §2.2: whatever the product, the instance id goes into the handshake's meeting_uuid.
_ID_FIELDS = ("meeting_uuid", "webinar_uuid", "session_id", "engagement_id")
_MAX_PLAIN_TOKEN = 256


class WebhookRejected(Exception):
    """A delivery we refuse. `status` is the HTTP answer, `result` the metrics label, the message
    the reason (logged, and returned to the caller)."""

    def __init__(self, status: int, result: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.result = result
        self.reason = reason


def _malformed(reason: str) -> WebhookRejected:
    return WebhookRejected(400, "malformed", reason)


def parse_body(raw: bytes) -> dict[str, Any]:
    """The envelope `{"event", "event_ts", "payload"}` as a dict; `WebhookRejected(400)` otherwise."""
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _malformed(f"body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise _malformed("body is not a JSON object")
    if not isinstance(body.get("event"), str) or not body["event"]:
        raise _malformed("missing or non-string 'event'")
    if not isinstance(body.get("payload"), dict):
        raise _malformed("missing or non-object 'payload'")
    return body


def answer_url_validation(body: dict[str, Any], secret: str) -> dict[str, str]:
    """The `{plainToken, encryptedToken}` answer to Zoom's endpoint challenge.

    The answer is an HMAC of caller-chosen text with the same secret that signs deliveries, so an
    unsigned challenge could be used as a signing oracle: a plainToken shaped like a signature
    base string (`v0:<ts>:<body>`) is refused, and the token's length is bounded.
    """
    token = body["payload"].get("plainToken")
    if not isinstance(token, str) or not token:
        raise _malformed("url_validation without a string payload.plainToken")
    if len(token) > _MAX_PLAIN_TOKEN or token.startswith("v0:"):
        raise _malformed("url_validation plainToken refused (too long or shaped like a signature base)")
    return {"plainToken": token, "encryptedToken": url_validation_token(secret, token)}


def verify_signature(secret: str, timestamp: str | None, raw: bytes, signature: str | None) -> None:
    """Check `x-zm-signature` over the raw body in constant time; `WebhookRejected(401)` if wrong."""
    if not secret:
        raise WebhookRejected(401, "bad_signature", "no webhook secret configured (ZOOM_SECRET_TOKEN)")
    if not timestamp or not signature:
        raise WebhookRejected(401, "bad_signature", "missing x-zm-signature or x-zm-request-timestamp")
    if not (timestamp.isascii() and signature.isascii()):
        # aiohttp hands non-UTF-8 header bytes over as surrogates: no signature of ours looks like that
        raise WebhookRejected(401, "bad_signature", "x-zm-signature or x-zm-request-timestamp is not ASCII")
    expected = webhook_signature(secret, timestamp, raw)
    if not hmac.compare_digest(expected.encode(), signature.encode()):
        raise WebhookRejected(401, "bad_signature", "x-zm-signature does not match the body")


def check_timestamp(timestamp: str, now_ms: int, max_skew_s: int) -> None:
    """Refuse replays: `x-zm-request-timestamp` (seconds or ms; Zoom's unit is undocumented) must
    be within `max_skew_s` of now."""
    try:
        value = int(timestamp)
    except ValueError:
        raise WebhookRejected(
            401, "stale_timestamp", f"x-zm-request-timestamp {timestamp!r} is not an integer"
        ) from None
    ts_ms = value if value > 100_000_000_000 else value * 1000  # 1e11 ms = 1973, 1e11 s = year 5138
    skew_ms = abs(now_ms - ts_ms)
    if skew_ms > max_skew_s * 1000:
        raise WebhookRejected(
            401, "stale_timestamp", f"request timestamp is {skew_ms // 1000} s off (max {max_skew_s} s)"
        )


@dataclass(frozen=True)
class LifecycleEvent:
    """What an accepted lifecycle webhook means, plus the `session_event` record to produce."""

    meeting_uuid: str
    rtms_stream_id: str
    action: str  # STARTED, STOPPED, INTERRUPTED
    server_urls: str | None
    record: dict[str, Any]


def _opt_str(payload: dict[str, Any], name: str) -> str | None:
    value = payload.get(name)
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise _malformed(f"payload.{name} is not a string")
    return value


def session_event(body: dict[str, Any], received_at_ms: int) -> LifecycleEvent | None:
    """The lifecycle event of a verified delivery, or `None` for an event we do not handle
    (e.g. `rtms.concurrency_limited`). `WebhookRejected(400)` when required fields are missing."""
    event: str = body["event"]
    product = Product.of_event(event)
    if product is None:
        return None
    suffix = event.rsplit("rtms_", 1)[1]
    action = _ACTIONS.get(suffix)
    if action is None:
        return None
    payload: dict[str, Any] = body["payload"]
    meeting_uuid = next((v for f in _ID_FIELDS if isinstance(v := payload.get(f), str) and v), None)
    if meeting_uuid is None:
        raise _malformed(f"{event} without an instance id (one of {', '.join(_ID_FIELDS)})")
    stream_id = payload.get("rtms_stream_id")
    if not isinstance(stream_id, str) or not stream_id:
        raise _malformed(f"{event} without rtms_stream_id")
    if id_too_long(meeting_uuid) or id_too_long(stream_id):
        raise _malformed(f"instance id or rtms_stream_id longer than {MAX_ID_BYTES} bytes")
    server_urls = _opt_str(payload, "server_urls")
    if action == "STARTED" and not server_urls:
        raise _malformed(f"{event} without server_urls")
    stop_reason = payload.get("stop_reason")
    if stop_reason is not None and (not isinstance(stop_reason, int) or isinstance(stop_reason, bool)):
        raise _malformed("payload.stop_reason is not an integer")
    event_ts = body.get("event_ts", received_at_ms)
    if not isinstance(event_ts, int) or isinstance(event_ts, bool):
        raise _malformed("event_ts is not an integer")
    if not timestamp_in_range(event_ts):
        # it becomes the stream's t = 0 and its files' date: past year 2100 or before 2000 it is a
        # unit mistake (s or us read as ms) or forged, and would stop the sinks' date directories
        raise _malformed(f"event_ts {event_ts} is not a time between 2000 and 2100 (ms since the epoch)")
    record: dict[str, Any] = {
        "meeting_uuid": meeting_uuid,
        "rtms_stream_id": stream_id,
        "product": product.value,
        "action": action,
        "event": event,
        "server_urls": server_urls,
        "stop_reason": stop_reason,
        "event_ts_ms": event_ts,
        "received_at_ms": received_at_ms,
        "operator_id": _opt_str(payload, "operator_id"),
        "account_id": _opt_str(payload, "account_id"),
        "session_key": _opt_str(payload, "session_key"),
        "payload_json": json.dumps(payload, separators=(",", ":"), ensure_ascii=False),
    }
    return LifecycleEvent(meeting_uuid, stream_id, action, server_urls, record)
