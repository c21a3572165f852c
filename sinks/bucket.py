"""An S3-compatible bucket as the sinks' storage: `s3://bucket/prefix` targets and a thin client.

`Bucket` wraps one thread-safe boto3 client with the operations the sinks, replay, prune and forget need;
every call goes through the sink's `Outage` (storage unreachable: retried until it clears)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from rtmsflow.s3_client import S3_SCHEME, BucketTarget, S3Options, make_client, parse_target
from sinks.outage import Outage, OutageReason

__all__ = ["S3_SCHEME", "Bucket", "BucketTarget", "S3Options", "classify", "make_client", "parse_target"]

T = TypeVar("T")

# S3 error codes by what they mean for the sink (anything else is a bug: it raises)
_CREDENTIALS = frozenset(
    {
        "AccessDenied",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "AllAccessDisabled",
        "AuthorizationHeaderMalformed",
    }
)
_FULL = frozenset(
    {"QuotaExceeded", "XMinioStorageFull", "XMinioAdminBucketQuotaExceeded", "InsufficientStorage"}
)
_BUSY = frozenset(
    {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "XMinioServerNotInitialized"}
)


def classify(exc: BaseException) -> OutageReason | None:
    """The outage an error means (None: not an outage, the error is raised)."""
    from botocore import exceptions as bx

    if isinstance(exc, bx.NoCredentialsError | bx.PartialCredentialsError):
        return OutageReason("credentials", f"no usable credentials ({exc})")
    if isinstance(exc, bx.ConnectionError | bx.HTTPClientError):
        return OutageReason("unreachable", f"endpoint unreachable ({exc})")
    if isinstance(exc, bx.ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        text = f"{code or status}: {error.get('Message', '')}".strip()
        if code in _CREDENTIALS or status in (401, 403):
            return OutageReason("credentials", f"credential refused ({text})")
        if code in _FULL or status == 507:
            return OutageReason("full", f"storage full ({text})")
        if code == "NoSuchBucket":
            return OutageReason("bucket", f"no such bucket ({text})")
        if code in _BUSY or (status >= 500 and status != 501):  # 501: not implemented, a bug
            return OutageReason("unavailable", f"server error ({text})")
    return None


def _not_found(exc: BaseException) -> bool:
    from botocore.exceptions import ClientError

    if not isinstance(exc, ClientError):
        return False
    code = str(exc.response.get("Error", {}).get("Code", ""))
    return code in ("404", "NoSuchKey", "NotFound")


class Bucket:
    """The operations the sinks need on one bucket, each retried through `outage` (see module doc).

    `retry=False` (background part uploads) raises instead of waiting: the caller tries later."""

    def __init__(self, target: BucketTarget, options: S3Options, outage: Outage | None = None) -> None:
        self.target = target
        self.options = options
        self.outage = outage or Outage()
        self.client = make_client(options)

    def _call(self, what: str, call: Callable[[], T], retry: bool = True) -> T:
        if not retry:
            return call()
        return self.outage.retry(f"{what} on {self.target.uri}", call, classify)

    def put(self, key: str, data: bytes, retry: bool = True) -> None:
        self._call(
            f"put {key}", lambda: self.client.put_object(Bucket=self.target.bucket, Key=key, Body=data), retry
        )

    def get(self, key: str) -> bytes:
        def call() -> bytes:
            body = self.client.get_object(Bucket=self.target.bucket, Key=key)["Body"]
            try:
                return bytes(body.read())
            finally:
                body.close()

        return self._call(f"get {key}", call)

    def download(self, key: str, path: Path, chunk_bytes: int = 1 << 20) -> None:
        """Stream an object into a local file (memory: one chunk)."""

        def call() -> None:
            body = self.client.get_object(Bucket=self.target.bucket, Key=key)["Body"]
            try:
                with open(path, "wb") as out:
                    for chunk in body.iter_chunks(chunk_bytes):
                        out.write(chunk)
            finally:
                body.close()

        self._call(f"get {key}", call)

    def exists(self, key: str) -> bool:
        def call() -> bool:
            try:
                self.client.head_object(Bucket=self.target.bucket, Key=key)
            except Exception as exc:
                if _not_found(exc):
                    return False
                raise
            return True

        return self._call(f"head {key}", call)

    def list_objects(self, prefix: str) -> list[tuple[str, int]]:
        """(key, size) of every object under `prefix`, sorted (directory markers left out)."""

        def call() -> list[tuple[str, int]]:
            out: list[Any] = []
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.target.bucket, Prefix=prefix
            )
            for page in pages:
                out.extend(
                    (o["Key"], int(o["Size"])) for o in page.get("Contents", []) if not o["Key"].endswith("/")
                )
            return sorted(out)

        return self._call(f"list {prefix}", call)

    def children(self, prefix: str) -> list[str]:
        """The `dir/` names right under `prefix` (which ends with `/` or is empty), sorted."""

        def call() -> list[str]:
            out: list[Any] = []
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.target.bucket, Prefix=prefix, Delimiter="/"
            )
            for page in pages:
                out.extend(p["Prefix"][len(prefix) :].rstrip("/") for p in page.get("CommonPrefixes", []))
            return sorted(out)

        return self._call(f"list {prefix}", call)

    def delete(self, keys: Iterable[str]) -> None:
        """Delete objects, one request each (DeleteObjects needs a checksum header that not every
        S3-compatible server implements); a missing key is no error."""
        for key in sorted(set(keys)):
            self._call(
                f"delete {key}",
                lambda key=key: self.client.delete_object(Bucket=self.target.bucket, Key=key),  # type: ignore[misc]
            )

    # -- multipart --------------------------------------------------------------------------------

    def create_upload(self, key: str, retry: bool = True) -> str:
        return str(
            self._call(
                f"start upload of {key}",
                lambda: self.client.create_multipart_upload(Bucket=self.target.bucket, Key=key)["UploadId"],
                retry,
            )
        )

    def upload_part(self, key: str, upload_id: str, number: int, data: bytes, retry: bool = True) -> str:
        def call() -> str:
            response = self.client.upload_part(
                Bucket=self.target.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=data
            )
            return str(response["ETag"])

        return self._call(f"upload part {number} of {key}", call, retry)

    def complete_upload(self, key: str, upload_id: str, etags: list[str]) -> None:
        parts = [{"PartNumber": i + 1, "ETag": etag} for i, etag in enumerate(etags)]
        self._call(
            f"complete {key}",
            lambda: self.client.complete_multipart_upload(
                Bucket=self.target.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
            ),
        )

    def abort_upload(self, key: str, upload_id: str, retry: bool = True) -> None:
        def call() -> None:
            try:
                self.client.abort_multipart_upload(Bucket=self.target.bucket, Key=key, UploadId=upload_id)
            except Exception as exc:
                if "NoSuchUpload" not in str(exc):
                    raise

        self._call(f"abort upload of {key}", call, retry)

    def uploads(self, prefix: str) -> list[tuple[str, str]]:
        """(key, upload id) of the multipart uploads in progress under `prefix`."""

        def call() -> list[tuple[str, str]]:
            out: list[Any] = []
            pages = self.client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.target.bucket, Prefix=prefix
            )
            for page in pages:
                out.extend((u["Key"], u["UploadId"]) for u in page.get("Uploads", []))
            return sorted(out)

        return self._call(f"list uploads under {prefix}", call)
