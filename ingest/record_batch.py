"""`RecordBatch`: one Kafka record batch (message format v2) for aiokafka's `send_batch`.

It stands in for aiokafka's `BatchBuilder`: the records' pieces are kept and joined once when the
producer sends the batch (aiokafka's grows one buffer record by record, a reallocation and copy of
the batch so far at most appends), and the CRC-32C is the `crc32c` package's (hardware) one."""

from __future__ import annotations

import struct
import time
from collections.abc import Sequence

from crc32c import crc32c

HEADER_BYTES = 61  # base offset .. record count
_CRC_FROM = 21  # the CRC covers attributes .. the end
# base offset, batch length, partition leader epoch, magic, crc
_HEAD = struct.Struct(">qiibI")
# attributes, last offset delta, first timestamp, max timestamp, producer id, epoch, base sequence, count
_TAIL = struct.Struct(">hiqqqhii")


def _varint(n: int) -> bytes:
    """Kafka's signed varint (zig-zag, as protobuf's sint64)."""
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


_SMALL = 1 << 13  # 0 .. 8191: one or two bytes, from a table
_VARINTS = [_varint(n) for n in range(_SMALL)]
_NULL = _varint(-1)
_BLANK_HEADER = bytes(HEADER_BYTES)


def varint(n: int) -> bytes:
    """The varint of `n` (a table lookup for the small non-negative ones records are made of)."""
    return _VARINTS[n] if 0 <= n < _SMALL else _varint(n)


class RecordBatch:
    """A batch of records for one partition, appended to until closed, then built once.

    `append` returns None when the batch is closed or the record would take it past `limit` bytes
    (a first record always fits), as aiokafka's builder does; the producer calls `close`,
    `closed`, `record_count`, `_set_producer_state` and `_build`."""

    __slots__ = (
        "limit",
        "parts",
        "size",
        "count",
        "first_ts",
        "max_ts",
        "producer_state",
        "_closed",
        "_built",
    )

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.parts: list[bytes] = [_BLANK_HEADER]  # written over by `_build`
        self.size = HEADER_BYTES
        self.count = 0
        self.first_ts = -1
        self.max_ts = -1
        self.producer_state = (-1, -1, -1)  # producer id, epoch, base sequence (idempotence)
        self._closed = False
        self._built: bytearray | None = None

    def append(
        self,
        *,
        timestamp: int | None,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes | None]] | None = None,
    ) -> bool | None:
        """Add a record (`timestamp` in ms, None: now). True, or None if it does not go in."""
        if self._closed:
            return None
        ts = time.time_ns() // 1_000_000 if timestamp is None else timestamp
        if self.count:
            delta = ts - self.first_ts
            ts_delta = _VARINTS[delta] if 0 <= delta < _SMALL else _varint(delta)
        else:
            ts_delta = b"\x00"
        offset = self.count
        offset_delta = _VARINTS[offset] if offset < _SMALL else _varint(offset)
        if key is None:
            key_len, key_size = _NULL, 0
        else:
            key_size = len(key)
            key_len = _VARINTS[key_size] if key_size < _SMALL else _varint(key_size)
        if value is None:
            value_len, value_size = _NULL, 0
        else:
            value_size = len(value)
            value_len = _VARINTS[value_size] if value_size < _SMALL else _varint(value_size)
        header_parts = _headers(headers) if headers else (b"\x00",)
        body = 1 + len(ts_delta) + len(offset_delta) + len(key_len) + key_size + len(value_len) + value_size
        body += sum(map(len, header_parts))
        length = _VARINTS[body] if body < _SMALL else _varint(body)
        if offset and self.size + len(length) + body > self.limit:
            return None
        self.parts += (length, b"\x00", ts_delta, offset_delta, key_len, key or b"", value_len, value or b"")
        self.parts += header_parts
        self.size += len(length) + body
        if not offset:
            self.first_ts = ts
        if ts > self.max_ts:
            self.max_ts = ts
        self.count = offset + 1
        return True

    def append_plain(self, key: bytes, value: bytes, timestamp: int | None = None) -> bool:
        """`append` of a record with a key, a value and no headers (a frame); False if it does not go in."""
        if self._closed:
            return False
        ts = time.time_ns() // 1_000_000 if timestamp is None else timestamp
        offset = self.count
        if offset:
            delta = ts - self.first_ts
            ts_delta = _VARINTS[delta] if 0 <= delta < _SMALL else _varint(delta)
            offset_delta = _VARINTS[offset] if offset < _SMALL else _varint(offset)
        else:
            self.first_ts = ts
            ts_delta = offset_delta = b"\x00"
        key_size = len(key)
        value_size = len(value)
        key_len = _VARINTS[key_size] if key_size < _SMALL else _varint(key_size)
        value_len = _VARINTS[value_size] if value_size < _SMALL else _varint(value_size)
        body = 2 + len(ts_delta) + len(offset_delta) + len(key_len) + key_size + len(value_len) + value_size
        length = _VARINTS[body] if body < _SMALL else _varint(body)
        size = self.size + len(length) + body
        if offset and size > self.limit:
            return False
        self.parts += (length, b"\x00", ts_delta, offset_delta, key_len, key, value_len, value, b"\x00")
        self.size = size
        if ts > self.max_ts:
            self.max_ts = ts
        self.count = offset + 1
        return True

    def close(self) -> None:
        self._closed = True

    def closed(self) -> bool:
        return self._closed

    def record_count(self) -> int:
        return self.count

    def _set_producer_state(self, producer_id: int, producer_epoch: int, base_sequence: int) -> None:
        self.producer_state = (producer_id, producer_epoch, base_sequence)

    def _build(self) -> bytearray:
        """The batch's bytes (built once: a retry sends the same bytes)."""
        self._closed = True
        if self._built is None:
            buf = bytearray().join(self.parts)
            producer_id, epoch, sequence = self.producer_state
            _TAIL.pack_into(
                buf,
                _CRC_FROM,
                0,
                self.count - 1,
                self.first_ts,
                self.max_ts,
                producer_id,
                epoch,
                sequence,
                self.count,
            )
            _HEAD.pack_into(buf, 0, 0, len(buf) - 12, -1, 2, crc32c(memoryview(buf)[_CRC_FROM:]))
            self._built = buf
            self.parts = []
        return self._built


def _headers(headers: Sequence[tuple[str, bytes | None]]) -> list[bytes]:
    parts = [varint(len(headers))]
    for name, data in headers:
        raw = name.encode()
        parts += (varint(len(raw)), raw)
        parts += (_NULL,) if data is None else (varint(len(data)), data)
    return parts
