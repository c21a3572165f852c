"""The raw consumer's fetch pace: batched at the broker while records flow, the first byte when idle."""

from __future__ import annotations

import inspect
from types import SimpleNamespace

from aiokafka.consumer.fetcher import Fetcher

from processors.fetch_pace import IDLE_WAIT_MS, LIVE_MIN_BYTES, LIVE_WAIT_MS, FetchPace


def consumer() -> SimpleNamespace:
    return SimpleNamespace(_fetcher=SimpleNamespace(_fetch_min_bytes=1, _fetch_max_wait_ms=500))


def pace_of(c: SimpleNamespace) -> tuple[int, int]:
    return c._fetcher._fetch_min_bytes, c._fetcher._fetch_max_wait_ms


def test_records_make_the_fetches_wait_for_more_and_an_empty_poll_answers_at_the_first_byte() -> None:
    c = consumer()
    pace = FetchPace(c)
    assert pace_of(c) == (1, IDLE_WAIT_MS)
    pace.polled(True)
    assert pace_of(c) == (LIVE_MIN_BYTES, LIVE_WAIT_MS)
    pace.polled(True)
    assert pace_of(c) == (LIVE_MIN_BYTES, LIVE_WAIT_MS)
    pace.polled(False)
    assert pace_of(c) == (1, IDLE_WAIT_MS)


def test_a_consumer_without_those_fields_keeps_its_own_settings() -> None:
    pace = FetchPace(SimpleNamespace())
    pace.polled(True)
    pace.polled(False)
    assert pace.fetcher is None


def test_aiokafkas_fetcher_builds_each_request_from_the_fields_the_pace_sets() -> None:
    # FetchPace sets private fields of aiokafka's Fetcher: if a release stops reading them per
    # request, the pace silently does nothing (the worker then costs ~2x the CPU at live rates)
    init = inspect.getsource(Fetcher.__init__)
    build = inspect.getsource(Fetcher._get_actions_per_node)
    for field in ("_fetch_min_bytes", "_fetch_max_wait_ms"):
        assert f"self.{field} = " in init
        assert f"self.{field}," in build
