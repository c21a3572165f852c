"""The one place Kafka clients are made, so every stage gets the same safe settings.

Producers are idempotent (`enable_idempotence=True`, `acks="all"`); consumers never auto-commit: a
stage commits an offset only after what came before it is durable (commit after write, docs/DESIGN.md).
"""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from rtmsflow.broker import LocalKafka
from rtmsflow.settings import Settings


def bootstrap_servers(settings: Settings) -> str:
    """The broker list: the configured one, else the local broker started by `rtmsflow kafka up`."""
    if settings.kafka_bootstrap:
        return settings.kafka_bootstrap
    running = LocalKafka().status()
    if running is None:
        raise RuntimeError(
            "no Kafka broker configured: set RTMSFLOW_KAFKA_BOOTSTRAP or run `rtmsflow kafka up`"
        )
    return running


def make_producer(settings: Settings | None = None, **overrides: Any) -> AIOKafkaProducer:
    """An idempotent producer. Batching favours throughput without adding latency: a small
    `linger_ms` collects the frames that arrive in the same few milliseconds."""
    settings = settings or Settings.from_env()
    config: dict[str, Any] = {
        "bootstrap_servers": bootstrap_servers(settings),
        "enable_idempotence": True,
        "acks": "all",
        "linger_ms": 5,
        "max_batch_size": 1 << 20,
        "max_request_size": 8 << 20,
        "compression_type": None,
        "request_timeout_ms": 30000,
    }
    config.update(overrides)
    return AIOKafkaProducer(**config)


def make_consumer(
    *topics: str, group_id: str | None, settings: Settings | None = None, **overrides: Any
) -> AIOKafkaConsumer:
    """A consumer with manual commits that starts from the earliest offset of a new group."""
    settings = settings or Settings.from_env()
    config: dict[str, Any] = {
        "bootstrap_servers": bootstrap_servers(settings),
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "isolation_level": "read_committed",
        "max_partition_fetch_bytes": 8 << 20,
        "fetch_max_bytes": 64 << 20,
    }
    config.update(overrides)
    return AIOKafkaConsumer(*topics, **config)
