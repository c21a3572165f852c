"""Helpers shared by the ingest integration tests: settings for the emulator, reading topics back."""

from __future__ import annotations

import dataclasses
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from rtmsflow.settings import Settings
from schemas.codec import Codec

CLIENT_ID = "test_client_id"
CLIENT_SECRET = "test_client_secret"
WEBHOOK_SECRET = "test_webhook_secret"


def ingest_settings(settings: Settings) -> Settings:
    """The test's settings plus Zoom credentials and the emulator's loopback host allowed."""
    return dataclasses.replace(
        settings,
        zoom_client_id=CLIENT_ID,
        zoom_client_secret=CLIENT_SECRET,
        zoom_webhook_secret=WEBHOOK_SECRET,
        allowed_hosts=("127.0.0.1",),
        allow_insecure_ws=True,
    )


async def read_topic(settings: Settings, topic: str) -> list[tuple[bytes | None, dict[str, Any], int, int]]:
    """Every record of `topic` now: (key, decoded value, partition, offset), per partition in offset order."""
    codec = Codec.from_settings(settings)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap(), enable_auto_commit=False, isolation_level="read_committed"
    )
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        if not parts:
            await consumer._client.force_metadata_update()  # new topic: metadata may lag
            parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        await consumer.seek_to_beginning(*tps)
        out: list[tuple[bytes | None, dict[str, Any], int, int]] = []
        remaining = {tp for tp in tps if ends[tp] > 0}
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=1000)
            for tp, records in batch.items():
                for r in records:
                    if r.offset < ends[tp]:
                        out.append((r.key, codec.decode(topic, r.value), tp.partition, r.offset))
                    if r.offset + 1 >= ends[tp]:
                        remaining.discard(tp)
        return out
    finally:
        await consumer.stop()
