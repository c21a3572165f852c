"""The processors' pure path per raw record, without Kafka: decode, `PartitionCore.feed`, output bytes.

    python -m benchmarks.processor_core_bench                  # 40 streams x 10 s, best of 5
    python -m benchmarks.processor_core_bench --profile FILE   # plus a cProfile of one pass

The same synthetic streams as `benchmarks/processor_bench.py` (audio every 20 ms, 25 fps video,
transcript pieces, events), encoded once in single-object encoding and interleaved in media time as
one partition would hold them; then, timed, one process does what the worker does per record short
of the broker: `Codec.decode` through the core's `feed`, and each output spliced
(`processors/frame_splice.py`) or encoded. µs per raw record is the floor of the worker's CPU per
event (the rest is aiokafka's fetcher, batch builder and the event loop); it moves less with the
machine's load than the end-to-end benchmark does, though a loaded machine still raises it.
"""

from __future__ import annotations

import argparse
import cProfile
import time

from benchmarks.processor_bench import RAW, T0, Mix, stream_frames
from processors.batch_loop import output_value
from processors.frame_splice import FrameSplicer
from processors.lanes import LaneConfig, PartitionCore
from schemas.codec import Codec
from schemas.markers import marker_headers

Raw = tuple[str, int, bytes, bytes | None, list[tuple[str, bytes]]]


def raw_records(codec: Codec, mix: Mix) -> list[Raw]:
    """Every stream's raw records interleaved in media time, then the markers (topic, offset, key,
    value, headers), offsets counted per raw topic."""
    offsets = dict.fromkeys(RAW, 0)
    counts: list[dict[str, dict[str, int]]] = [{} for _ in range(mix.streams)]
    out: list[Raw] = []
    steps = int(mix.seconds * 50)
    for frame in range(steps):
        for i in range(mix.streams):
            for base, value in stream_frames(mix, i, frame):
                out.append((base, offsets[base], mix.meeting(i).encode(), codec.encode(base, value), []))
                offsets[base] += 1
                c = counts[i].setdefault(base, {})
                c[value["stream_kind"]] = c.get(value["stream_kind"], 0) + 1
    last = T0 + (steps - 1) * 20
    for i in range(mix.streams):
        for base in RAW:
            end = {"meeting_uuid": mix.meeting(i), "rtms_stream_id": "s1", "topic": base, "ended": "STOPPED",
                   "stop_reason": 6, "stream_started_ms": T0, "last_timestamp_ms": last,
                   "ingest_epoch": 1, "counts": counts[i].get(base, {}), "complete": True}  # fmt: skip
            out.append((base, offsets[base], mix.meeting(i).encode(), None, marker_headers(end)))
            offsets[base] += 1
    return out


def one_pass(codec: Codec, splicer: FrameSplicer, records: list[Raw]) -> tuple[int, int]:
    """Feed every record to a fresh core and make every output's bytes as the worker does
    (`output_value`; a marker's headers); (outputs, output bytes)."""
    core = PartitionCore(0, codec.decode, LaneConfig())
    n_out = size = 0
    for topic, offset, key, value, headers in records:
        for o in core.feed(topic, offset, key, value, headers):
            data = output_value(o, splicer, codec, o.topic, _no_clock)
            size += len(data) if data is not None else 0
            if o.end is not None:
                size += sum(len(v) for _, v in marker_headers(o.end))
            n_out += 1
    return n_out, size


def _no_clock() -> int:
    return 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", type=int, default=40)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--profile", metavar="FILE", help="write a cProfile of one more pass to FILE")
    args = ap.parse_args()
    codec = Codec()
    splicer = FrameSplicer.for_codec(codec)
    records = raw_records(codec, Mix(args.streams, args.seconds))
    times = []
    outputs = 0
    for _ in range(args.repeat):
        t0 = time.process_time()
        outputs, _size = one_pass(codec, splicer, records)
        times.append(time.process_time() - t0)
    best = min(times)
    print(f"{len(records):,} raw records -> {outputs:,} outputs; spliced topics {sorted(splicer.topics)}")
    print(f"pure path: best {best * 1e6 / len(records):.1f} µs per raw record "
          f"({len(records) / best:,.0f} per CPU-s), median {sorted(times)[len(times) // 2] * 1e6 / len(records):.1f} µs; "
          f"load {open('/proc/loadavg').read().split()[0]}")  # fmt: skip
    if args.profile:
        cProfile.runctx("one_pass(codec, splicer, records)", globals(), locals(), args.profile)
        print(f"profile written to {args.profile}")


if __name__ == "__main__":
    main()
