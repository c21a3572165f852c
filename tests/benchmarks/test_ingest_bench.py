"""ingest_bench's reading consumer: which partitions it samples for latency."""

import pytest

from benchmarks.ingest_bench import sampled_partitions


def test_few_meetings_read_every_partition() -> None:
    assert sampled_partitions(24, 40 * 75, budget_per_s=3000) == list(range(24))
    assert sampled_partitions(24, 0) == list(range(24))


def test_many_meetings_read_an_even_share() -> None:
    picked = sampled_partitions(24, 300 * 75, budget_per_s=3000)
    assert picked == [0, 6, 12, 18]  # ceil(24 * 3000 / 22500) = 4, spread over the range
    assert 3000 <= len(picked) / 24 * 300 * 75 < 2 * 3000


def test_at_least_one_partition() -> None:
    assert sampled_partitions(24, 10**9) == [0]
    assert sampled_partitions(1, 10**6) == [0]
    with pytest.raises(ValueError):
        sampled_partitions(0, 1)
