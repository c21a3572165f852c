"""Shared fixtures: a real Kafka broker for the session (`KAFKA_BOOTSTRAP`, else testcontainers if
Docker answers, else the local KRaft broker; `RTMSFLOW_TEST_BROKER=local|docker` forces one), and
per-test settings (unique topic prefix, data dir in tmp_path), their environment and topics."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from rtmsflow.admin import delete_topics, ensure_topics
from rtmsflow.broker import KAFKA_VERSION, LocalKafka
from rtmsflow.settings import Settings
from schemas.topics import ALL_TOPICS

log = logging.getLogger("tests.kafka")

# Kafka 3.9 in Confluent's packaging (testcontainers' KafkaContainer expects Confluent's image).
_CONTAINER_IMAGE = "confluentinc/cp-kafka:7.9.1"
_broker_description: list[str] = []


def _announce(config: pytest.Config, line: str) -> None:
    """Show a line on the terminal even under -q and output capture, and log it."""
    log.info(line)
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None:  # pragma: no cover - only without the terminal plugin
        print(line)
    elif capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line(line)
    else:
        reporter.write_line(line)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for line in _broker_description:
        terminalreporter.write_line(line)


def _docker_answers(timeout_s: float = 3.0) -> bool:
    """True if a Docker engine answers a ping within `timeout_s`; any failure means no."""
    try:
        import docker

        client = docker.from_env(timeout=int(timeout_s))
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


@pytest.fixture(scope="session")
def kafka_bootstrap(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The session's real Kafka broker: `KAFKA_BOOTSTRAP` (nothing started), else a testcontainers
    KRaft broker if Docker answers within 3 s, else `rtmsflow.broker.LocalKafka` in a temp state dir
    (`RTMSFLOW_TEST_BROKER=local|docker` forces one). What it started it stops; the choice is printed
    and `RTMSFLOW_KAFKA_BOOTSTRAP` set for subprocesses."""
    choice = os.environ.get("RTMSFLOW_TEST_BROKER", "").lower()
    external = os.environ.get("KAFKA_BOOTSTRAP", "")
    with pytest.MonkeyPatch.context() as env:
        if external and choice not in ("local", "docker"):
            line = f"Kafka broker: external at {external} (KAFKA_BOOTSTRAP)"
            _broker_description.append(line)
            _announce(request.config, line)
            env.setenv("RTMSFLOW_KAFKA_BOOTSTRAP", external)
            yield external
            return

        if choice == "docker" or (choice != "local" and _docker_answers()):
            from testcontainers.community.kafka import KafkaContainer

            t0 = time.monotonic()
            container = KafkaContainer(_CONTAINER_IMAGE).with_kraft()
            for key, value in {
                "KAFKA_AUTO_CREATE_TOPICS_ENABLE": "false",
                "KAFKA_NUM_PARTITIONS": "8",
                "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
                "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
                "KAFKA_MIN_INSYNC_REPLICAS": "1",
            }.items():
                container.with_env(key, value)
            container.start(timeout=180)
            try:
                bootstrap = container.get_bootstrap_server()
                line = (
                    f"Kafka broker: container {_CONTAINER_IMAGE} (KRaft) at {bootstrap} "
                    f"(started by the test session in {time.monotonic() - t0:.1f} s)"
                )
                _broker_description.append(line)
                _announce(request.config, line)
                env.setenv("RTMSFLOW_KAFKA_BOOTSTRAP", bootstrap)
                yield bootstrap
            finally:
                container.stop()
            return

        state_dir = tmp_path_factory.mktemp("kafka-session")
        broker = LocalKafka(state_dir)
        fetched = broker.fetch()
        t1 = time.monotonic()
        bootstrap = broker.start(timeout=120, die_with_caller=True)
        jars = f"jars fetched in {fetched.seconds:.1f} s" if fetched.downloaded else "cached jars"
        line = (
            f"Kafka broker: local KRaft {KAFKA_VERSION} at {bootstrap} (started by the test session in "
            f"{time.monotonic() - t1:.1f} s, {jars}; pid {broker.pid()}, state {state_dir})"
        )
        _broker_description.append(line)
        _announce(request.config, line)
        env.setenv("RTMSFLOW_KAFKA_BOOTSTRAP", bootstrap)
        try:
            yield bootstrap
        finally:
            broker.stop()


@pytest.fixture
def settings(kafka_bootstrap: str, tmp_path: Path) -> Settings:
    """Settings for one test: the session broker, a topic prefix no other test uses, a tmp data dir."""
    return dataclasses.replace(
        Settings(),
        kafka_bootstrap=kafka_bootstrap,
        topic_prefix=f"t{uuid.uuid4().hex[:12]}.",
        data_dir=str(tmp_path / "data"),
        partitions=4,  # the product's default (24) is for fleets; a test broker needs few
    )


@pytest.fixture
def settings_env(settings: Settings) -> dict[str, str]:
    """Environment for a subprocess that should see the same settings as the test."""
    env = dict(os.environ)
    env.update(
        RTMSFLOW_KAFKA_BOOTSTRAP=settings.kafka_bootstrap,
        RTMSFLOW_TOPIC_PREFIX=settings.topic_prefix,
        RTMSFLOW_PARTITIONS=str(settings.partitions),
        RTMSFLOW_REPLICATION=str(settings.replication),
        RTMSFLOW_DATA_DIR=settings.data_dir,
    )
    return env


@pytest.fixture
async def kafka_topics(settings: Settings) -> AsyncIterator[dict[str, str]]:
    """Every rtmsflow topic, created under the test's prefix and deleted after the test."""
    names = {spec.name: spec.full_name(settings.topic_prefix) for spec in ALL_TOPICS}
    await ensure_topics(settings, ALL_TOPICS)
    try:
        yield names
    finally:
        await delete_topics(settings, names.values())


# The local S3 server (s3proxy) for the tests that write to a bucket: started on first use only.
from tests.support.s3 import s3_server, s3_target  # noqa: E402, F401
