"""Ingest's metrics added in bulk count what per-record calls counted.

`metrics.observe_many` (a batch's records share their produce latency) leaves a histogram as
`count` `observe()` calls do, bucket by bucket; `metrics.QueuedCounts` adds FRAMES and BYTES once
per event-loop turn, so a reader sees every record counted as soon as the loop has turned."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from ingest import metrics

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def exposition(observe: str, value: float, count: int) -> str:
    registry = CollectorRegistry()
    child = Histogram("lat_seconds", "latency", ["topic"], buckets=BUCKETS, registry=registry).labels(
        topic="t"
    )
    if observe == "one by one":
        for _ in range(count):
            child.observe(value)
    else:
        metrics.observe_many(child, value, count)
    return "\n".join(
        line for line in generate_latest(registry).decode().splitlines() if "_created" not in line
    )


@pytest.mark.parametrize(
    "value", [0.0, 0.0004, 0.001, 0.0011, 0.005, 0.3, 5.0, 7.5, float("inf"), float("nan")]
)
@pytest.mark.parametrize("count", [0, 1, 2, 37])
def test_observe_many_leaves_the_histogram_as_count_observations_do(value: float, count: int) -> None:
    one_by_one = exposition("one by one", value, count)
    many = exposition("many", value, count)
    # the sum is one product instead of `count` additions: equal up to float rounding
    assert without_sum(many) == without_sum(one_by_one)
    assert sum_of(many) == pytest.approx(sum_of(one_by_one), rel=1e-12, nan_ok=True)
    if count and value == value:  # positive control: the exposition shows the observations
        assert f'lat_seconds_count{{topic="t"}} {float(count)}' in one_by_one


def without_sum(text: str) -> list[str]:
    return [line for line in text.splitlines() if not line.startswith("lat_seconds_sum")]


def sum_of(text: str) -> float:
    return next(float(line.split()[-1]) for line in text.splitlines() if line.startswith("lat_seconds_sum"))


def frames(kind: str) -> float:
    return metrics.FRAMES.labels(kind=kind)._value.get()


async def test_queued_counts_reach_the_counters_by_the_loops_next_turn() -> None:
    counts = metrics.QueuedCounts()
    before = frames("test-kind"), metrics.BYTES.labels(kind="test-kind")._value.get()
    for size in (10, 20, 30):
        counts.add("test-kind", size)
    assert frames("test-kind") == before[0]  # not yet: pending until the loop turns
    turned = asyncio.Event()
    asyncio.get_running_loop().call_soon(turned.set)  # runs after the report scheduled by add()
    await turned.wait()
    assert frames("test-kind") == before[0] + 3
    assert metrics.BYTES.labels(kind="test-kind")._value.get() == before[1] + 60
    counts.add("test-kind", 5)
    counts.report()  # what a flush does
    assert frames("test-kind") == before[0] + 4
