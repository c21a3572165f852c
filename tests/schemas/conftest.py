"""A real schema registry for the test session: Apicurio Registry (in-memory storage) serving the
Confluent API, started by `rtmsflow.registry.LocalRegistry` without Docker.

`RTMSFLOW_TEST_REGISTRY_URL` points the tests at a registry you run instead (nothing is started).
The application is fetched once with `mvn` into the shared cache (`$RTMSFLOW_CACHE/registry`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from rtmsflow.registry import LocalRegistry


@pytest.fixture(scope="session")
def schema_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The Confluent-compatible URL of a real, empty schema registry for this session."""
    external = os.environ.get("RTMSFLOW_TEST_REGISTRY_URL")
    if external:
        yield external.rstrip("/")
        return
    registry = LocalRegistry(tmp_path_factory.mktemp("registry"))
    url = registry.start()
    try:
        yield url
    finally:
        registry.stop()
