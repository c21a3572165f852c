"""A throw-away TLS certificate for 127.0.0.1, for wss:// tests (made with the openssl CLI)."""

from __future__ import annotations

import subprocess
from pathlib import Path


def make_test_cert(directory: Path) -> tuple[Path, Path]:
    """A self-signed cert for 127.0.0.1 whose SAN has it both as DNS name and IP (Zoom's SDK checks
    the DNS one); returns (cert.pem, key.pem). The cert is its own CA (ZM_RTMS_CA, ssl cafile)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=DNS:127.0.0.1,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key
