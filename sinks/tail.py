"""`rtmsflow tail --meeting <uuid>`: a meeting's transcript, live, on the terminal (and `--events`).

For data teams and operators: it reads `rtms.transcript` (and `rtms.events`) like any consumer of the
contract would, without a consumer group (assign + seek: it never moves anybody's offsets), only the
meeting's partition (`schemas.topics.partition_for`), from the beginning by default so the
transcript so far comes first, then follows. Lines are the `transcript.txt` format,
`[2025-05-15T13:42:21.000Z] John Doe: Hello everyone`; events print as `[time] * name: who`. An
end-of-stream marker on every topic tailed prints `-- end of stream <id> (<how>)`; `--once` exits
when the partition's current end is reached, and `--until-end` when every stream seen has ended.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any, TextIO

import click
from aiokafka import AIOKafkaConsumer, TopicPartition

from rtmsflow.admin import admin_client, partition_counts
from rtmsflow.cli import load_settings
from rtmsflow.kafka_client import make_consumer
from rtmsflow.settings import Settings
from schemas.codec import Codec, CodecError
from schemas.markers import MarkerError, read_marker
from schemas.topics import EVENTS, TRANSCRIPT, partition_for
from sinks.transcript_files import Utterance, format_txt_line, format_utc_ms


def format_event(value: dict[str, Any]) -> str:
    """One `rtms.events` record as a line: `[time] * name: who`."""
    who = ", ".join(p.get("user_name") or str(p["user_id"]) for p in value.get("participants") or [])
    if not who and value.get("participant_id"):
        who = value.get("participant_name") or str(value["participant_id"])
    return f"[{format_utc_ms(value['timestamp_ms'])}] * {value['name']}" + (f": {who}" if who else "") + "\n"


class Tail:
    """Prints one meeting's records from the ordered topics as they come (pure of I/O but `out`).

    A stream has ended once its end-of-stream marker has come on every topic tailed (the
    processors forward one on each ordered topic), so with `--events` the end line follows the
    stream's last event as well as its last utterance, whichever topic is read first."""

    def __init__(self, meeting_uuid: str, topics: list[str], out: TextIO) -> None:
        self.meeting_uuid = meeting_uuid
        self.transcript_topic = topics[0]
        self.topics = frozenset(topics)
        self.out = out
        self.live: set[str] = set()  # streams seen and not ended
        self.ended: set[str] = set()
        self.markers: dict[str, set[str]] = {}  # stream -> topics whose marker has come

    def record(self, topic: str, value: dict[str, Any] | None, headers: Any) -> None:
        """One record of the meeting (its key matched) as read from `topic`."""
        if value is None:
            end = read_marker(headers)
            if end is None or end["rtms_stream_id"] in self.ended:
                return
            stream = end["rtms_stream_id"]
            seen = self.markers.setdefault(stream, set())
            seen.add(topic)
            if seen >= self.topics:
                del self.markers[stream]
                self.ended.add(stream)
                self.live.discard(stream)
                self.out.write(f"-- end of stream {stream} ({end['ended'].lower()})\n")
                self.out.flush()
            return
        stream = value["rtms_stream_id"]
        if stream not in self.ended:
            self.live.add(stream)
        if topic == self.transcript_topic:
            if value.get("final", True):
                self.out.write(format_txt_line(Utterance.from_record(value)))
        else:
            self.out.write(format_event(value))
        self.out.flush()

    @property
    def all_ended(self) -> bool:
        return bool(self.ended) and not self.live


async def run_tail(
    settings: Settings, meeting_uuid: str, *, events: bool, once: bool, until_end: bool, out: TextIO
) -> int:
    """Print the meeting's transcript (and events) until cancelled, or as `once`/`until_end` say.
    Returns how many records of the meeting were printed or skipped as markers."""
    codec = Codec.from_settings(settings)
    topics = [TRANSCRIPT.full_name(settings.topic_prefix)]
    if events:
        topics.append(EVENTS.full_name(settings.topic_prefix))
    await codec.prepare(topics)
    consumer: AIOKafkaConsumer = make_consumer(group_id=None, settings=settings)
    await consumer.start()
    tail = Tail(meeting_uuid, topics, out)
    key = meeting_uuid.encode()
    seen = 0
    try:
        async with admin_client(settings) as admin:
            count = (await partition_counts(admin, topics[:1])).get(topics[0])
        if not count:
            raise click.ClickException(f"topic {topics[0]} not found: run `rtmsflow topics create`")
        part = partition_for(meeting_uuid, count)
        tps = [TopicPartition(t, part) for t in topics]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps) if once else {}
        while True:
            batch = await consumer.getmany(timeout_ms=500)
            for tp, records in batch.items():
                for rec in records:
                    if rec.key != key:
                        continue
                    seen += 1
                    try:
                        value = None if rec.value is None else await codec.decode_async(tp.topic, rec.value)
                        tail.record(tp.topic, value, rec.headers)
                    except (CodecError, MarkerError) as exc:
                        out.write(f"-- unreadable record at {tp.topic}[{tp.partition}]@{rec.offset}: {exc}\n")
            if until_end and tail.all_ended:
                return seen
            if once and all([await consumer.position(tp) >= ends[tp] for tp in tps]):
                return seen
    finally:
        await consumer.stop()


@click.command()
@click.option("--meeting", "meeting_uuid", required=True, help="The meeting UUID (as Zoom sends it).")
@click.option("--events", is_flag=True, help="Also print the meeting's events (rtms.events).")
@click.option("--once", is_flag=True, help="Exit at the current end of the topic instead of following.")
@click.option("--until-end", is_flag=True, help="Exit when every stream seen has its end-of-stream marker.")
def tail(meeting_uuid: str, events: bool, once: bool, until_end: bool) -> None:
    """Print a meeting's transcript live from rtms.transcript (with --events, its events too)."""
    settings = load_settings()
    try:
        asyncio.run(
            run_tail(settings, meeting_uuid, events=events, once=once, until_end=until_end, out=sys.stdout)
        )
    except KeyboardInterrupt:
        pass
