"""The S3 client settings every part shares: `s3://bucket/prefix` targets, how to reach the
bucket (`S3Options` from `Settings`), and a boto3 client made from them (as `kafka_client` is for
Kafka). The sinks' storage (`sinks.bucket`) and `rtmsflow demo` build on it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

S3_SCHEME = "s3://"


@dataclass(frozen=True)
class BucketTarget:
    """`s3://bucket/prefix`: the bucket and the key prefix (no leading or trailing `/`; may be empty)."""

    bucket: str
    prefix: str = ""

    def key(self, relative: str) -> str:
        """The object key of `relative` (a `/`-separated path under the data dir)."""
        relative = relative.strip("/")
        return f"{self.prefix}/{relative}" if self.prefix else relative

    def relative(self, key: str) -> str:
        """Inverse of `key`."""
        return key[len(self.prefix) + 1 :] if self.prefix else key

    @property
    def uri(self) -> str:
        return f"{S3_SCHEME}{self.bucket}/{self.prefix}" if self.prefix else f"{S3_SCHEME}{self.bucket}"


def parse_target(where: str | Path) -> BucketTarget | None:
    """The bucket target of a data dir setting, or None for a local directory."""
    text = str(where)
    if not text.startswith(S3_SCHEME):
        return None
    bucket, _, prefix = text[len(S3_SCHEME) :].partition("/")
    if not bucket:
        raise ValueError(f"no bucket in {text!r} (use s3://bucket/prefix)")
    return BucketTarget(bucket, prefix.strip("/"))


@dataclass(frozen=True)
class S3Options:
    """How to reach the bucket (from `Settings`: endpoint, region, credentials, addressing)."""

    endpoint: str = ""
    region: str = ""
    access_key_id: str = ""
    secret_access_key: str = ""
    addressing: str = "auto"

    @classmethod
    def from_settings(cls, settings: Any) -> S3Options:
        return cls(
            settings.s3_endpoint,
            settings.s3_region,
            settings.s3_access_key_id,
            settings.s3_secret_access_key,
            settings.s3_addressing,
        )


def make_client(options: S3Options) -> Any:
    """A boto3 S3 client: path-style addressing for an explicit endpoint (MinIO-like servers) unless
    told otherwise; checksums only where S3 requires them (S3-compatible servers differ there)."""
    import boto3
    from botocore.config import Config

    style = options.addressing
    if style == "auto":
        style = "path" if options.endpoint else "virtual"
    config = Config(
        s3={"addressing_style": style},
        connect_timeout=5,
        read_timeout=60,
        retries={"max_attempts": 3, "mode": "standard"},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        max_pool_connections=16,
    )
    session = boto3.session.Session(
        aws_access_key_id=options.access_key_id or None,
        aws_secret_access_key=options.secret_access_key or None,
        region_name=options.region or None,
    )
    return session.client("s3", endpoint_url=options.endpoint or None, config=config)
