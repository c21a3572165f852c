"""`RecordBatch`: one Kafka record batch (message format v2) for aiokafka's `send_batch`.

It stands in for aiokafka's `BatchBuilder`: the records' pieces are kept and joined once when the
producer sends the batch (aiokafka's grows one buffer record by record, a reallocation and copy of
the batch so far at most appends), and the CRC-32C is the `crc32c` package's (hardware) one."""

from __future__ import annotations

import struct
import time
from collections.abc import Sequence

from crc32c import crc32c

from ingest.record_bytes import avro_long

HEADER_BYTES = 61  # base offset .. record count
_CRC_FROM = 21  # the CRC covers attributes .. the end
# base offset, batch length, partition leader epoch, magic, crc
_HEAD = struct.Struct(">qiibI")
# attributes, last offset delta, first timestamp, max timestamp, producer id, epoch, base sequence, count
_TAIL = struct.Struct(">hiqqqhii")


# Kafka's record varints are Avro's longs (zig-zag varints): 0 .. 8191 from a table, one or two bytes
_SMALL = 1 << 13
_VARINTS = [avro_long(n) for n in range(_SMALL)]
_NULL = avro_long(-1)
_BLANK_HEADER = bytes(HEADER_BYTES)


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
        offset = self.count
        first_ts = self.first_ts if offset else ts
        pieces = [
            b"\x00",  # attributes
            avro_long(ts - first_ts),
            avro_long(offset),
            _NULL if key is None else avro_long(len(key)),
            key or b"",
            _NULL if value is None else avro_long(len(value)),
            value or b"",
            *(_headers(headers) if headers else (b"\x00",)),
        ]
        body = sum(map(len, pieces))
        length = avro_long(body)
        if offset and self.size + len(length) + body > self.limit:
            return None
        self.parts.append(length)
        self.parts += pieces
        self.size += len(length) + body
        self.first_ts = first_ts
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
            ts_delta = _VARINTS[delta] if 0 <= delta < _SMALL else avro_long(delta)
            offset_delta = _VARINTS[offset] if offset < _SMALL else avro_long(offset)
        else:
            self.first_ts = ts
            ts_delta = offset_delta = b"\x00"
        key_size = len(key)
        value_size = len(value)
        key_len = _VARINTS[key_size] if key_size < _SMALL else avro_long(key_size)
        value_len = _VARINTS[value_size] if value_size < _SMALL else avro_long(value_size)
        body = 2 + len(ts_delta) + len(offset_delta) + len(key_len) + key_size + len(value_len) + value_size
        length = _VARINTS[body] if body < _SMALL else avro_long(body)
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
    parts = [avro_long(len(headers))]
    for name, data in headers:
        raw = name.encode()
        parts += (avro_long(len(raw)), raw)
        parts += (_NULL,) if data is None else (avro_long(len(data)), data)
    return parts
