"""A consumer that commits after write, run as a real process so a test can `kill -9` it.

For each record it appends "<partition> <offset> <value>" to the output file, fsyncs, and only then
commits offset + 1 -- the order every rtmsflow sink follows (STYLE.md, commit order). Killed at any
instant, it has therefore written every committed record, and at most one record per partition
beyond its commits. Runs until SIGTERM/SIGINT, then leaves its group cleanly.

Usage: python commit_after_write_consumer.py BOOTSTRAP TOPIC GROUP OUT [--delay-ms N]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal

from rtmsflow.kafka_client import make_consumer
from rtmsflow.settings import Settings


async def run(bootstrap: str, topic: str, group: str, out: str, delay_ms: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    consumer = make_consumer(
        topic,
        group_id=group,
        settings=Settings(kafka_bootstrap=bootstrap),
        # The broker's minimum: a killed member's partitions are handed over within 6 s.
        session_timeout_ms=6000,
        heartbeat_interval_ms=500,
    )
    await consumer.start()
    fd = os.open(out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        print("consuming", flush=True)
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=200, max_records=100)
            for tp, records in batches.items():
                for record in records:
                    value = record.value.decode() if record.value is not None else ""
                    os.write(fd, f"{record.partition} {record.offset} {value}\n".encode())
                    os.fsync(fd)
                    await consumer.commit({tp: record.offset + 1})
                    if delay_ms:
                        await asyncio.sleep(delay_ms / 1000)
    finally:
        os.close(fd)
        await consumer.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("bootstrap")
    parser.add_argument("topic")
    parser.add_argument("group")
    parser.add_argument("out")
    parser.add_argument("--delay-ms", type=int, default=0)
    args = parser.parse_args()
    asyncio.run(run(args.bootstrap, args.topic, args.group, args.out, args.delay_ms))


if __name__ == "__main__":
    main()
