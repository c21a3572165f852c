"""`ingest.record_batch.RecordBatch` against aiokafka's own batch builder: the same bytes for the same
records (keys, values, nulls, headers, large varints, a clock that steps back), the size limit, and a
closed batch refusing records."""

from __future__ import annotations

import os

import pytest
from aiokafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder

from ingest.record_batch import HEADER_BYTES, RecordBatch

T = 1_796_688_000_000
Record = tuple[int, bytes | None, bytes | None, list[tuple[str, bytes | None]]]


def aiokafka_bytes(records: list[Record], state: tuple[int, int, int]) -> bytes:
    builder = DefaultRecordBatchBuilder(2, 0, 0, *state, batch_size=1 << 24)
    for offset, (ts, key, value, headers) in enumerate(records):
        assert builder.append(offset, ts, key, value, headers) is not None
    return bytes(builder.build())


def ours(records: list[Record], state: tuple[int, int, int], plain: bool) -> bytes:
    batch = RecordBatch(1 << 24)
    for ts, key, value, headers in records:
        if plain and key is not None and value is not None and not headers:
            assert batch.append_plain(key, value, ts)
        else:
            assert batch.append(timestamp=ts, key=key, value=value, headers=headers)
    batch.close()
    batch._set_producer_state(*state)
    return bytes(batch._build())


CASES: dict[str, list[Record]] = {
    "frames": [(T + i, b"meeting-%d==" % (i % 3), os.urandom(600 + 97 * i), []) for i in range(30)],
    "one": [(T, b"k", b"v", [])],
    "markers and nulls": [
        (T, b"m==", b"before", []),
        (T + 1, b"m==", None, [("rtmsflow.control", b"progress"), ("empty", b""), ("none", None)]),
        (T + 2, None, b"no key", []),
        (T + 2, b"", b"", [("Zoë", b"\x00" * 300)]),
    ],
    "large varints": [(T, b"k" * 9000, os.urandom(70_000), []), (T + 10_000, b"k", os.urandom(8191), [])],
    "clock steps back": [(T, b"k", b"a", []), (T - 5, b"k", b"b", []), (T + 3, b"k", b"c", [])],
    "many records": [(T + i // 10, b"m==", b"x" * (i % 50), []) for i in range(9000)],
}


@pytest.mark.parametrize("plain", [True, False], ids=["append_plain", "append"])
@pytest.mark.parametrize("case", list(CASES))
def test_the_same_bytes_as_aiokafkas_builder(case: str, plain: bool) -> None:
    records = CASES[case]
    state = (12345, 7, 4_000)
    data = ours(records, state, plain)
    assert data == aiokafka_bytes(records, state)
    read = DefaultRecordBatch(data)
    assert read.validate_crc()
    assert (read.producer_id, read.producer_epoch, read.base_sequence) == state
    assert [(r.timestamp, r.key, r.value, list(r.headers)) for r in read] == [
        (ts, key, value, headers) for ts, key, value, headers in records
    ]


def test_a_different_producer_state_is_different_bytes() -> None:
    """A positive control for the comparison above: it can tell batches apart."""
    records = CASES["one"]
    assert ours(records, (1, 0, 0), True) != aiokafka_bytes(records, (1, 0, 1))
    assert ours(records, (1, 0, 1), True) == aiokafka_bytes(records, (1, 0, 1))


def test_a_record_that_would_pass_the_limit_is_refused_but_a_first_one_always_goes() -> None:
    record_bytes = 13  # a length byte, then 12: attributes, two deltas, key length, "k", value length, "vvvvv", no headers
    batch = RecordBatch(HEADER_BYTES + 2 * record_bytes)
    assert batch.append_plain(b"k", b"v" * 5, T)
    assert batch.append(timestamp=T, key=b"k", value=b"v" * 5)
    assert not batch.append_plain(b"k", b"v" * 5, T)
    assert batch.append(timestamp=T, key=b"k", value=b"v" * 5) is None
    assert batch.record_count() == 2
    assert len(batch._build()) == HEADER_BYTES + 2 * record_bytes
    alone = RecordBatch(10)
    assert alone.append_plain(b"k", b"v" * 100, T)  # over the limit, but first
    assert alone.record_count() == 1


def test_a_closed_batch_takes_nothing_and_builds_once() -> None:
    batch = RecordBatch(1 << 20)
    assert batch.append_plain(b"k", b"v", T)
    batch.close()
    assert batch.closed()
    assert batch.append(timestamp=T, key=b"k", value=b"w") is None
    assert not batch.append_plain(b"k", b"w", T)
    first = batch._build()
    assert batch._build() is first
    assert [r.value for r in DefaultRecordBatch(bytes(first))] == [b"v"]
