"""Zoom's HMAC-SHA256 signatures: the RTMS handshake's, and the webhook's (an HTTP concern, shared by
ingest's webhook app, which verifies, and the emulator's webhook sender, which signs)."""

from __future__ import annotations

import hashlib
import hmac


def _hmac_hex(key: str, msg: bytes) -> str:
    return hmac.new(key.encode(), msg, hashlib.sha256).hexdigest()


def handshake_signature(client_id: str, client_secret: str, meeting_uuid: str, stream_id: str) -> str:
    """The `signature` of signaling and data handshakes: lowercase hex
    HMAC-SHA256(client secret, "client_id,meeting_uuid,rtms_stream_id")."""
    return _hmac_hex(client_secret, f"{client_id},{meeting_uuid},{stream_id}".encode())


def webhook_signature(secret: str, timestamp: str | int, raw_body: bytes) -> str:
    """The `x-zm-signature` header of a webhook: "v0=" + hex HMAC-SHA256(webhook secret token,
    "v0:{x-zm-request-timestamp}:{raw body}"). Always hash the raw bytes, never a re-serialization."""
    return "v0=" + _hmac_hex(secret, b"v0:" + str(timestamp).encode() + b":" + raw_body)


def url_validation_token(secret: str, plain_token: str) -> str:
    """`encryptedToken` answering an `endpoint.url_validation` challenge."""
    return _hmac_hex(secret, plain_token.encode())


def signatures_equal(a: str, b: str) -> bool:
    """Constant-time comparison of two signatures."""
    return hmac.compare_digest(a.encode(), b.encode())
