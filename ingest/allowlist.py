"""Which RTMS servers ingest may connect to.

Every URL of `server_urls` is checked before anything connects: scheme `wss` (or `ws` when
`Settings.allow_insecure_ws`) and a host matching one of `Settings.allowed_hosts` (case-insensitive globs)."""

from __future__ import annotations

from fnmatch import fnmatchcase
from urllib.parse import urlsplit

from rtmsflow.settings import Settings


class DisallowedUrl(ValueError):
    """A server URL that ingest must not connect to; the message says which and why."""


def split_server_urls(server_urls: str) -> list[str]:
    """Zoom's `server_urls` string as a list: "multiple URLs ... separated by commas"."""
    return [part.strip() for part in server_urls.split(",") if part.strip()]


def check_url(url: str, allowed_hosts: tuple[str, ...], allow_insecure_ws: bool) -> None:
    """Raise `DisallowedUrl` unless `url` is a wss:// (or permitted ws://) URL on an allowed host."""
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError as exc:
        raise DisallowedUrl(f"malformed server URL {url!r}: {exc}") from None
    schemes = ("wss", "ws") if allow_insecure_ws else ("wss",)
    if parts.scheme.lower() not in schemes:
        raise DisallowedUrl(f"server URL {url!r}: scheme must be {' or '.join(schemes)}")
    if not host:
        raise DisallowedUrl(f"server URL {url!r} has no host")
    if not any(fnmatchcase(host, pattern.lower()) for pattern in allowed_hosts):
        raise DisallowedUrl(f"server URL host {host!r} is not in the allowed hosts {list(allowed_hosts)}")


def check_server_urls(server_urls: str, settings: Settings) -> list[str]:
    """Every URL of `server_urls`, checked; raises `DisallowedUrl` if any is not allowed or none given."""
    urls = split_server_urls(server_urls)
    if not urls:
        raise DisallowedUrl("server_urls is empty")
    for url in urls:
        check_url(url, settings.allowed_hosts, settings.allow_insecure_ws)
    return urls
