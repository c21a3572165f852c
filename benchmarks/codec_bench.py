"""Codec hot path: µs per record to encode and decode 640 B audio and 20 KB video frames, both wire formats.

    python benchmarks/codec_bench.py [--registry URL] [--n 20000]

How it measures: BENCHMARKS.md, "How each bench measures", codec_bench.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import platform
import tempfile
import timeit
from collections.abc import Callable
from typing import Any

from rtmsflow.registry import LocalRegistry
from schemas.codec import Codec

T0 = 1_732_400_000_000


def _frame(kind: str, payload_size: int) -> dict[str, Any]:
    media: dict[str, Any] = (
        {"codec": "L16", "sample_rate": 16000, "channels": 1, "send_rate_ms": 20, "mixed": False}
        if kind == "AUDIO"
        else {"codec": "H264", "width": 1280, "height": 720, "fps": 30, "mode": "ACTIVE_SPEAKER"}
    )
    return {
        "meeting_uuid": "4Rk/ZbJyQ0+Xh2fNpm3xUA==",
        "rtms_stream_id": "03db704592624398931a588dd78200cb",
        "stream_kind": kind,
        "participant_id": 16778240,
        "participant_name": "Ada Lovelace",
        "timestamp_ms": T0 + 20,
        "stream_started_ms": T0 - 1000,
        "ingest_epoch": 7_021_931_772_144_187_317,
        "ingest_seq": 4242,
        "received_at_ms": T0 + 45,
        "seq": 4241,
        "offset_ms": 1020,
        "payload": bytes(payload_size),
        "media": media,
    }


def _best_us(fn: Callable[[], object], n: int) -> float:
    return min(timeit.repeat(fn, number=n, repeat=5)) / n * 1e6


def measure(codec: Codec, n: int, prefix: str = "") -> dict[str, dict[str, float]]:
    out = {}
    for topic, record in (("rtms.audio", _frame("AUDIO", 640)), ("rtms.video", _frame("VIDEO", 20_000))):
        data = codec.encode(prefix + topic, record)
        out[topic] = {
            "value_bytes": len(data),
            "encode_us": round(_best_us(functools.partial(codec.encode, prefix + topic, record), n), 2),
            "decode_us": round(_best_us(functools.partial(codec.decode, prefix + topic, data), n), 2),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registry", help="a Confluent-compatible registry URL (default: start a local one)")
    parser.add_argument("--n", type=int, default=20_000, help="records per timing run (best of 5 runs)")
    args = parser.parse_args()
    result: dict[str, Any] = {"python": platform.python_version(), "machine": platform.machine()}
    result["single_object"] = measure(Codec(), args.n)
    registry = None
    url = args.registry
    if url is None:
        registry = LocalRegistry(tempfile.mkdtemp(prefix="rtmsflow-bench-registry-"))
        url = registry.start()
    try:
        codec = Codec(url, prefix="bench.")
        asyncio.run(codec.prepare(["bench.rtms.audio", "bench.rtms.video"]))
        result["confluent"] = measure(codec, args.n, prefix="bench.")
    finally:
        if registry is not None:
            registry.stop()
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
