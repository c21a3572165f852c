"""CPU per record of aiokafka's two ways to produce, against a real broker.

    python -m benchmarks.producer_bench [--records 40000]

How it measures: BENCHMARKS.md, "How each bench measures", producer_bench.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import uuid

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from rtmsflow.broker import LocalKafka
from rtmsflow.settings import Settings

PARTITIONS = 8
MEETINGS = 100


async def measure(bootstrap: str, records: int) -> dict[str, float]:
    topic = f"bench.producer.{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, enable_idempotence=True, acks="all", linger_ms=5, max_batch_size=1 << 20
    )
    await producer.start()
    value = b"x" * 900  # about an encoded 20 ms audio frame
    keys = [f"meeting-{i}==".encode() for i in range(MEETINGS)]
    try:
        started = time.process_time()
        futures = [await producer.send(topic, value, key=keys[i % MEETINGS]) for i in range(records)]
        await asyncio.gather(*futures)
        per_send = (time.process_time() - started) / records * 1e6

        started = time.process_time()
        shipped = []
        lanes = {}
        for i in range(records):
            partition = i % PARTITIONS
            batch = lanes.get(partition) or lanes.setdefault(partition, producer.create_batch())
            if batch.append(key=keys[i % MEETINGS], value=value, timestamp=None) is None:
                shipped.append(await producer.send_batch(batch, topic, partition=partition))
                lanes[partition] = producer.create_batch()
                lanes[partition].append(key=keys[i % MEETINGS], value=value, timestamp=None)
            if i % 400 == 399:  # ~5 ms of a busy worker's records
                for p, b in lanes.items():
                    shipped.append(await producer.send_batch(b, topic, partition=p))
                lanes.clear()
        for p, b in lanes.items():
            shipped.append(await producer.send_batch(b, topic, partition=p))
        await asyncio.gather(*shipped)
        per_batched = (time.process_time() - started) / records * 1e6
    finally:
        await producer.stop()
    return {
        "records": records,
        "send_us_per_record": round(per_send, 1),
        "batch_us_per_record": round(per_batched, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=40_000)
    args = parser.parse_args()
    bootstrap = Settings.from_env().kafka_bootstrap
    if bootstrap:
        print(json.dumps(asyncio.run(measure(bootstrap, args.records))))
        return
    with tempfile.TemporaryDirectory() as state:
        broker = LocalKafka(state_dir=state)
        try:
            print(json.dumps(asyncio.run(measure(broker.start(), args.records))))
        finally:
            broker.stop()


if __name__ == "__main__":
    main()
