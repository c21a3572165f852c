"""`rtmsflow tail --meeting <uuid>`: a meeting's transcript and chat (and `--events`) live, as `transcript.txt` lines.

Reads the meeting's partition of the ordered topics group-less (assign + seek: from the beginning, then
follows). On a terminal the utterance being spoken shows on one caption line from `rtms.transcript.partial`
(`Captions`); elsewhere, or with `--finals-only`, finals only. `--once`/`--until-end` say when to exit."""

from __future__ import annotations

import asyncio
import shutil
import sys
import unicodedata
from collections.abc import Callable
from typing import Any, TextIO

import click
from aiokafka import AIOKafkaConsumer, TopicPartition

from rtmsflow.admin import admin_client, partition_counts
from rtmsflow.cli import load_settings
from rtmsflow.kafka_client import make_consumer
from rtmsflow.settings import Settings
from schemas.codec import Codec, CodecError
from schemas.markers import MarkerError, read_marker
from schemas.topics import CHAT, EVENTS, TRANSCRIPT, TRANSCRIPT_PARTIAL, partition_for
from sinks.chat_files import ChatLine, format_chat_line
from sinks.transcript_files import Utterance, format_txt_line, format_utc_ms

CLEAR_LINE = "\r\x1b[2K"  # back to the line's start, erase it (ANSI EL 2)


def format_event(value: dict[str, Any]) -> str:
    """One `rtms.events` record as a line: `[time] * name: who`."""
    who = ", ".join(p.get("user_name") or str(p["user_id"]) for p in value.get("participants") or [])
    if not who and value.get("participant_id"):
        who = value.get("participant_name") or str(value["participant_id"])
    return f"[{format_utc_ms(value['timestamp_ms'])}] * {value['name']}" + (f": {who}" if who else "") + "\n"


def display_width(text: str) -> int:
    """Terminal columns `text` takes: wide (CJK, fullwidth) characters 2, combining marks 0."""
    return sum(_char_width(c) for c in text)


def _char_width(c: str) -> int:
    if unicodedata.combining(c) or unicodedata.category(c) in ("Mn", "Me", "Cf"):
        return 0
    return 2 if unicodedata.east_asian_width(c) in ("W", "F") else 1


def fit_line(line: str, columns: int) -> str:
    """`line` cut to fewer than `columns` columns (so it never wraps, and `CLEAR_LINE` erases all
    of it): its start up to the first `: ` (time and speaker) kept, then `…` and the text's end."""
    room = max(columns - 1, 1)
    if display_width(line) <= room:
        return line
    cut = line.find(": ") + 2
    head = line[:cut] if cut >= 2 and display_width(line[:cut]) + 2 <= room else ""
    room -= display_width(head) + 1
    tail: list[str] = []
    for c in reversed(line[len(head) :]):
        room -= _char_width(c)
        if room < 0:
            break
        tail.append(c)
    return head + "…" + "".join(reversed(tail))


class Captions:
    """What the caption line shows: the latest partial of the newest open utterance (pure).

    A final (`final` on `rtms.transcript`) closes its utterance and every earlier one of its stream,
    and a stream's end closes them all: a partial of a closed utterance (read after its final: the
    two topics are read side by side), of an utterance older than the one shown, or with fewer pieces
    than the one shown never replaces the line. Utterances are ordered by `seq` within a stream."""

    def __init__(self) -> None:
        self.shown: tuple[str, int, int] | None = None  # (stream, seq, piece_count) of `line`
        self.line: str | None = None  # `transcript.txt` format, without the newline
        self.closed: dict[str, int] = {}  # stream -> highest seq with a final
        self.ended: set[str] = set()

    def partial(self, value: dict[str, Any]) -> bool:
        """An `rtms.transcript.partial` record; True when the line changed."""
        stream, seq, pieces = value["rtms_stream_id"], value["seq"], value.get("piece_count", 1)
        if stream in self.ended or seq <= self.closed.get(stream, -1):
            return False
        if self.shown is not None and self.shown[0] == stream and (seq, pieces) <= self.shown[1:]:
            return False
        self.shown = (stream, seq, pieces)
        self.line = format_txt_line(Utterance.from_record(value)).rstrip("\n")
        return True

    def final(self, value: dict[str, Any]) -> bool:
        """An `rtms.transcript` record; True when the line changed (it was this utterance's)."""
        stream, seq = value["rtms_stream_id"], value["seq"]
        self.closed[stream] = max(seq, self.closed.get(stream, -1))
        return self._drop_if(lambda s: s[0] == stream and s[1] <= seq)

    def end(self, stream: str) -> bool:
        """The stream's end-of-stream marker; True when the line changed."""
        self.ended.add(stream)
        return self._drop_if(lambda s: s[0] == stream)

    def _drop_if(self, closes: Callable[[tuple[str, int, int]], bool]) -> bool:
        if self.shown is None or not closes(self.shown):
            return False
        self.shown = self.line = None
        return True


class Tail:
    """Prints one meeting's records from the ordered topics as they come (pure of I/O but `out`):
    utterances as `[2025-05-15T13:42:21.000Z] John Doe: Hello everyone`, events as
    `[time] * name: who`, and `-- end of stream <id> (<how>)` when a stream has ended.

    A stream has ended once its end-of-stream marker has come on every topic tailed (the
    processors forward one on each ordered topic), so with `--events` the end line follows the
    stream's last event as well as its last utterance, whichever topic is read first.

    With `partial_topic` (live captions) the caption line (`Captions`) is kept last on the screen:
    every printed line first erases it, and it is drawn again below, cut to `columns()`."""

    def __init__(
        self,
        meeting_uuid: str,
        topics: list[str],
        out: TextIO,
        *,
        partial_topic: str | None = None,
        chat_topic: str | None = None,
        columns: Callable[[], int] = lambda: 80,
    ) -> None:
        self.meeting_uuid = meeting_uuid
        self.chat_topic = chat_topic  # one of `topics`: its messages print as chat lines
        self.transcript_topic = topics[0]
        self.topics = frozenset(topics)
        self.out = out
        self.live: set[str] = set()  # streams seen and not ended
        self.ended: set[str] = set()
        self.markers: dict[str, set[str]] = {}  # stream -> topics whose marker has come
        self.partial_topic = partial_topic
        self.captions = Captions() if partial_topic else None
        self.columns = columns
        self.drawn = False  # the caption line is on the screen

    def record(self, topic: str, value: dict[str, Any] | None, headers: Any) -> None:
        """One record of the meeting (its key matched) as read from `topic`."""
        if topic == self.partial_topic:
            if value is not None and self.captions is not None:  # (no markers on partials)
                if value["rtms_stream_id"] not in self.ended:
                    self.live.add(value["rtms_stream_id"])
                if self.captions.partial(value):
                    self._draw()
            return
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
                if self.captions is not None:
                    self.captions.end(stream)
                self.print_line(f"-- end of stream {stream} ({end['ended'].lower()})\n")
            return
        stream = value["rtms_stream_id"]
        if stream not in self.ended:
            self.live.add(stream)
        if topic == self.transcript_topic:
            if value.get("final", True):
                if self.captions is not None:
                    self.captions.final(value)
                self.print_line(format_txt_line(Utterance.from_record(value)))
        elif topic == self.chat_topic:
            self.print_line(format_chat_line(ChatLine.from_record(value)))
        else:
            self.print_line(format_event(value))

    def print_line(self, text: str) -> None:
        """Print a whole line (ending in a newline) above the caption line."""
        if self.drawn:
            self.out.write(CLEAR_LINE)
            self.drawn = False
        self.out.write(text)
        if self.captions is not None and self.captions.line is not None:
            self._draw()
        self.out.flush()

    def _draw(self) -> None:
        caption = self.captions.line if self.captions is not None else None
        if caption is not None:
            self.out.write(CLEAR_LINE + fit_line(caption, self.columns()))
        elif self.drawn:
            self.out.write(CLEAR_LINE)
        self.drawn = caption is not None
        self.out.flush()

    def close(self) -> None:
        """Erase the caption line (an open utterance is not part of the transcript)."""
        if self.drawn:
            self.out.write(CLEAR_LINE)
            self.drawn = False
            self.out.flush()

    @property
    def all_ended(self) -> bool:
        return bool(self.ended) and not self.live


async def run_tail(
    settings: Settings,
    meeting_uuid: str,
    *,
    events: bool,
    once: bool,
    until_end: bool,
    out: TextIO,
    captions: bool = False,
    columns: Callable[[], int] = lambda: 80,
) -> int:
    """Print the meeting's transcript (and events) until cancelled, or as `once`/`until_end` say;
    with `captions`, the open utterance too from `rtms.transcript.partial`. Returns how many records
    of the meeting were printed or skipped as markers."""
    codec = Codec(settings.schema_registry_url, settings.topic_prefix)
    topics = [TRANSCRIPT.full_name(settings.topic_prefix)]
    chat_name = CHAT.full_name(settings.topic_prefix)
    if events:
        topics.append(EVENTS.full_name(settings.topic_prefix))
    partial = TRANSCRIPT_PARTIAL.full_name(settings.topic_prefix) if captions else None
    consumer: AIOKafkaConsumer = make_consumer(group_id=None, settings=settings)
    await consumer.start()
    tail: Tail | None = None
    key = meeting_uuid.encode()
    seen = 0
    try:
        async with admin_client(settings) as admin:
            counts = await partition_counts(admin, [topics[0], chat_name, *([partial] if partial else [])])
        count = counts.get(topics[0])
        if not count:
            raise click.ClickException(f"topic {topics[0]} not found: run `rtmsflow topics create`")
        chat = chat_name if chat_name in counts else None  # a broker from before chat: no chat
        if chat is not None:
            topics.append(chat)
        if partial and partial not in counts:
            click.echo(f"topic {partial} not found: finals only (`rtmsflow topics create`)", err=True)
            partial = None
        reading = [*topics, partial] if partial else topics
        await codec.prepare(reading)
        tail = Tail(meeting_uuid, topics, out, partial_topic=partial, chat_topic=chat, columns=columns)
        part = partition_for(meeting_uuid, count)
        tps = [TopicPartition(t, part) for t in reading]
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
                        tail.print_line(
                            f"-- unreadable record at {tp.topic}[{tp.partition}]@{rec.offset}: {exc}\n"
                        )
            if until_end and tail.all_ended:
                return seen
            if once and all([await consumer.position(tp) >= ends[tp] for tp in tps]):
                return seen
    finally:
        if tail is not None:
            tail.close()
        await consumer.stop()


@click.command()
@click.option("--meeting", "meeting_uuid", required=True, help="The meeting UUID (as Zoom sends it).")
@click.option("--events", is_flag=True, help="Also print the meeting's events (rtms.events).")
@click.option("--once", is_flag=True, help="Exit at the current end of the topic instead of following.")
@click.option("--until-end", is_flag=True, help="Exit when every stream seen has its end-of-stream marker.")
@click.option(
    "--finals-only",
    is_flag=True,
    help="On a terminal too, print final utterances only (no live caption line); always so off a terminal.",
)
def tail(meeting_uuid: str, events: bool, once: bool, until_end: bool, finals_only: bool) -> None:
    """Print a meeting's transcript and chat live from rtms.transcript and rtms.chat (with --events, its
    events too); on a
    terminal, the utterance being spoken is shown on a caption line from rtms.transcript.partial."""
    settings = load_settings()
    captions = not finals_only and sys.stdout.isatty()
    try:
        asyncio.run(
            run_tail(
                settings,
                meeting_uuid,
                events=events,
                once=once,
                until_end=until_end,
                out=sys.stdout,
                captions=captions,
                columns=lambda: shutil.get_terminal_size().columns,
            )
        )
    except KeyboardInterrupt:
        pass
