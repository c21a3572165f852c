"""`rtmsflow tail` live captions: the caption model alone, then tail on a pseudo-terminal and a pipe."""

from __future__ import annotations

import asyncio
import fcntl
import io
import os
import pty
import struct
import subprocess
import sys
import termios
import threading
import tty
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rtmsflow.kafka_client import make_producer
from rtmsflow.settings import Settings
from schemas.codec import Codec
from schemas.markers import marker_headers
from schemas.topics import partition_for
from sinks.tail import CLEAR_LINE, Captions, Tail, display_width, fit_line

MEETING = "4Rk/ZbJyQ0+Xh2fNpm3xUA=="
STREAM = "03db704592624398931a588dd78200cb"
OTHER_STREAM = "9f1e0c7a2b3d4e5f60718293a4b5c6d7"
T0 = 1_747_316_541_000  # 2025-05-15T13:42:21.000Z
LINE0 = "[2025-05-15T13:42:21.000Z] John Doe: "
LINE1 = "[2025-05-15T13:42:23.000Z] Ada: "
LINE2 = "[2025-05-15T13:42:25.000Z] John Doe: "
WAIT_S = 60  # a guard against hanging only: every wait ends on its condition


def utterance(
    seq: int, text: str, *, pieces: int = 1, final: bool = True, stream: str = STREAM
) -> dict[str, Any]:
    return {
        "meeting_uuid": MEETING,
        "rtms_stream_id": stream,
        "utterance_id": f"{stream}/{seq}",
        "seq": seq,
        "participant_id": 16778240,
        "participant_name": ["John Doe", "Ada"][seq % 2],
        "start_ms": T0 + 2000 * seq,
        "end_ms": T0 + 2000 * seq + 1500,
        "stream_started_ms": T0 - 5000,
        "text": text,
        "language": "fr",
        "final": final,
        "piece_count": pieces,
    }


def partial(seq: int, text: str, pieces: int, stream: str = STREAM) -> dict[str, Any]:
    return utterance(seq, text, pieces=pieces, final=False, stream=stream)


END = {
    "meeting_uuid": MEETING,
    "rtms_stream_id": STREAM,
    "topic": "rtms.transcript",
    "ended": "STOPPED",
    "stream_started_ms": T0 - 5000,
    "ingest_epoch": 1,
    "counts": {"TRANSCRIPT": 2},
    "complete": True,
}


# --- the caption model, pure ------------------------------------------------------------------------


def test_partials_replace_each_other_and_the_final_replaces_them() -> None:
    c = Captions()
    assert c.line is None
    assert c.partial(partial(0, "Hello", 1)) and c.line == LINE0 + "Hello"
    assert c.partial(partial(0, "Hello every", 2)) and c.line == LINE0 + "Hello every"
    assert c.final(utterance(0, "Hello everyone", pieces=3))
    assert c.line is None
    # a newer utterance opens the line again (the control for the stale cases below)
    assert c.partial(partial(1, "Ça va", 1)) and c.line == LINE1 + "Ça va"


def test_stale_partials_never_overwrite() -> None:
    c = Captions()
    c.partial(partial(0, "Hello every", 2))
    c.final(utterance(0, "Hello everyone", pieces=3))
    # read after its final (the two topics are read side by side): ignored
    assert not c.partial(partial(0, "Hello every", 2)) and c.line is None
    c.partial(partial(2, "third", 2))
    assert not c.partial(partial(1, "an older utterance", 5))  # older than the one shown
    assert not c.partial(partial(2, "th", 1))  # fewer pieces than the one shown
    assert not c.partial(partial(2, "third", 2))  # the same again
    assert c.line == LINE2 + "third"
    # a final of an older utterance leaves the open one; its own final closes it
    assert not c.final(utterance(1, "second")) and c.line == LINE2 + "third"
    assert c.partial(partial(2, "third one", 3)) and c.line == LINE2 + "third one"
    # finals can be read before their partials: a final closes its utterance and the earlier ones
    c.final(utterance(4, "fifth"))
    assert not c.partial(partial(3, "fourth", 1)) and not c.partial(partial(4, "fifth", 1))
    assert c.line is None
    assert c.partial(partial(5, "sixth", 1))  # control: the next one shows


def test_a_streams_end_closes_its_caption_and_other_streams_go_on() -> None:
    c = Captions()
    c.partial(partial(0, "Hello", 1))
    assert c.end(STREAM) and c.line is None
    assert not c.partial(partial(1, "after the end", 1))
    assert c.partial(partial(0, "a restarted stream", 1, stream=OTHER_STREAM))
    assert c.line == LINE0 + "a restarted stream"
    assert not c.end(STREAM) and c.line is not None  # another stream's end leaves it


def test_multi_byte_text_is_kept_and_cut_by_columns_not_bytes() -> None:
    text = "Ça va? 你好, très bien 🙂 e\u0301"
    c = Captions()
    c.partial(partial(1, text, 1))
    assert c.line == LINE1 + text
    assert display_width("你好") == 4 and display_width("e\u0301") == 1 and display_width("Ça") == 2
    assert fit_line(c.line, 200) == c.line  # control: room enough, unchanged
    cut = fit_line(c.line, 48)
    assert display_width(cut) <= 47, cut  # one column spare: the cursor never wraps
    assert cut.startswith(LINE1 + "…") and cut.endswith("bien 🙂 e\u0301")
    assert fit_line(LINE1 + "你好你好", display_width(LINE1) + 5) == LINE1 + "…好"  # the text's end kept
    tiny = fit_line(c.line, 10)  # too narrow for time and speaker: the text's end alone
    assert display_width(tiny) <= 9 and tiny.startswith("…") and tiny.endswith("🙂 e\u0301")


def test_tail_keeps_the_caption_line_last_and_prints_finals_over_it() -> None:
    out = io.StringIO()
    tail = Tail(
        MEETING, ["p.rtms.transcript", "p.rtms.events"], out, partial_topic="p.rtms.transcript.partial"
    )
    tail.record("p.rtms.transcript.partial", partial(0, "Hello", 1), [])
    tail.record("p.rtms.events", {"name": "participant_join", "timestamp_ms": T0 + 500,
                                  "participants": [{"user_id": 7, "user_name": "Ada"}], "rtms_stream_id": STREAM}, [])  # fmt: skip
    tail.record("p.rtms.transcript.partial", partial(0, "Hello every", 2), [])
    tail.record("p.rtms.transcript", utterance(0, "Hello everyone", pieces=3), [])
    tail.record("p.rtms.transcript.partial", partial(0, "Hello (stale)", 2), [])
    tail.close()
    assert out.getvalue() == (
        f"{CLEAR_LINE}{LINE0}Hello"
        f"{CLEAR_LINE}[2025-05-15T13:42:21.500Z] * participant_join: Ada\n{CLEAR_LINE}{LINE0}Hello"
        f"{CLEAR_LINE}{LINE0}Hello every"
        f"{CLEAR_LINE}{LINE0}Hello everyone\n"
    )
    # without a partial topic (finals only) the same records print as a file holds them
    plain = io.StringIO()
    tail = Tail(MEETING, ["p.rtms.transcript"], plain)
    tail.record("p.rtms.transcript", utterance(0, "Hello everyone", pieces=3), [])
    tail.close()
    assert plain.getvalue() == f"{LINE0}Hello everyone\n"


# --- through the broker, on a pseudo-terminal -------------------------------------------------------


class Screen:
    """What a program wrote to a pseudo-terminal (raw mode: bytes as written), read on a thread."""

    def __init__(self, master: int) -> None:
        self.master = master
        self.data = b""
        self.closed = False
        self.changed = threading.Condition()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 4096)
            except OSError:  # EIO: every writer closed the terminal
                chunk = b""
            with self.changed:
                self.data += chunk
                self.closed = not chunk
                self.changed.notify_all()
            if not chunk:
                return

    async def wait_for(self, what: Callable[[bytes], bool]) -> bytes:
        """Block (on a thread) until `what(bytes so far)` holds; the program's exit fails it."""

        def wait() -> bytes:
            with self.changed:
                self.changed.wait_for(lambda: what(self.data) or self.closed, WAIT_S)
                assert what(self.data), f"not on the screen: {self.data!r}"
                return self.data

        return await asyncio.to_thread(wait)


def start_in_pty(
    args: list[str], env: dict[str, str], stderr: Path
) -> tuple[subprocess.Popen[bytes], Screen]:
    master, slave = pty.openpty()
    tty.setraw(slave)  # no output processing: the screen holds the program's bytes as written
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 200, 0, 0))
    env = {k: v for k, v in env.items() if k not in ("COLUMNS", "LINES")}
    with stderr.open("wb") as err:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=slave, stderr=err, env=env)
    os.close(slave)
    return proc, Screen(master)


async def finish(proc: subprocess.Popen[bytes], screen: Screen, stderr: Path) -> bytes:
    try:
        code = await asyncio.to_thread(proc.wait, WAIT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
    data = await screen.wait_for(lambda _: screen.closed)
    os.close(screen.master)
    if code != 0:
        raise AssertionError((await asyncio.to_thread(stderr.read_text))[-2000:])
    return data


class Writer:
    def __init__(self, settings: Settings, topics: dict[str, str]) -> None:
        self.codec = Codec(settings.schema_registry_url, settings.topic_prefix)
        self.topics = topics
        self.part = partition_for(MEETING, settings.partitions)
        self.producer = make_producer(settings)

    async def send(self, base: str, value: dict[str, Any] | None, headers: Any = None) -> None:
        topic = self.topics[base]
        data = None if value is None else self.codec.encode(topic, value)
        await self.producer.send_and_wait(
            topic, data, key=MEETING.encode(), partition=self.part, headers=headers
        )


def tail_args(*extra: str) -> list[str]:
    return [sys.executable, "-m", "rtmsflow.cli", "tail", "--meeting", MEETING, *extra]


@pytest.mark.kafka
async def test_tail_on_a_terminal_rewrites_the_open_utterance_and_prints_its_final(
    settings: Settings, settings_env: dict[str, str], kafka_topics: dict[str, str], tmp_path: Path
) -> None:
    w = Writer(settings, kafka_topics)
    await w.producer.start()
    try:
        await w.send("rtms.transcript.partial", partial(0, "Hello", 1))
        await w.send("rtms.transcript.partial", partial(0, "Hello every", 2))
        proc, screen = start_in_pty(tail_args("--until-end"), settings_env, tmp_path / "stderr")
        try:
            await screen.wait_for(lambda s: f"{LINE0}Hello every".encode() in s)
            await w.send("rtms.transcript", utterance(0, "Hello everyone", pieces=3))
            await screen.wait_for(lambda s: f"{LINE0}Hello everyone\n".encode() in s)
            # a partial of utterance 0 read after its final must not overwrite it; the next
            # utterance's partial, written after it on the same partition, shows it was read
            await w.send("rtms.transcript.partial", partial(0, "(stale) Hello every", 2))
            await w.send("rtms.transcript.partial", partial(1, "Ça va? 你好", 1))
            await screen.wait_for(lambda s: f"{LINE1}Ça va? 你好".encode() in s)
            await w.send("rtms.transcript", utterance(1, "Ça va? 你好, très bien", pieces=2))
            await w.send("rtms.transcript", None, marker_headers(END))
            # the processors forward the stream's marker on rtms.chat too: the stream ends with both
            await w.send("rtms.chat", None, marker_headers({**END, "topic": "rtms.chat", "counts": {}}))
            data = await finish(proc, screen, tmp_path / "stderr")
        finally:
            if proc.poll() is None:
                proc.kill()
    finally:
        await w.producer.stop()
    clear = CLEAR_LINE.encode()
    assert b"(stale)" not in data
    assert (
        data
        == (
            f"{CLEAR_LINE}{LINE0}Hello{CLEAR_LINE}{LINE0}Hello every"
            f"{CLEAR_LINE}{LINE0}Hello everyone\n"
            f"{CLEAR_LINE}{LINE1}Ça va? 你好"
            f"{CLEAR_LINE}{LINE1}Ça va? 你好, très bien\n"
            f"-- end of stream {STREAM} (stopped)\n"
        ).encode()
    ), data
    # the partial, then the carriage-return rewrite, then the final line
    first = data.index(f"{LINE0}Hello every".encode())
    assert data.index(clear + f"{LINE0}Hello everyone\n".encode(), first) > first


@pytest.mark.kafka
async def test_tail_prints_finals_only_to_a_pipe_and_with_finals_only(
    settings: Settings, settings_env: dict[str, str], kafka_topics: dict[str, str], tmp_path: Path
) -> None:
    w = Writer(settings, kafka_topics)
    await w.producer.start()
    try:
        await w.send("rtms.transcript.partial", partial(0, "Hello", 1))
        await w.send("rtms.transcript.partial", partial(0, "Hello every", 2))
        await w.send("rtms.transcript", utterance(0, "Hello everyone", pieces=3))
        await w.send("rtms.transcript.partial", partial(1, "Ça va", 1))  # open when the stream ends
        await w.send("rtms.transcript", utterance(1, "Ça va? 你好, très bien", pieces=2))
        await w.send("rtms.transcript", None, marker_headers(END))
        await w.send("rtms.chat", None, marker_headers({**END, "topic": "rtms.chat", "counts": {}}))
        # a stream still open: captions would surely show this one, whatever order the topics are read in
        await w.send("rtms.transcript.partial", partial(0, "still speaking", 1, stream=OTHER_STREAM))
    finally:
        await w.producer.stop()
    finals = f"{LINE0}Hello everyone\n{LINE1}Ça va? 你好, très bien\n-- end of stream {STREAM} (stopped)\n"

    piped = await asyncio.to_thread(
        subprocess.run, tail_args("--once"), env=settings_env, capture_output=True, timeout=60, check=False
    )
    assert piped.returncode == 0, piped.stderr[-2000:]
    assert piped.stdout.decode() == finals  # the finals are there, and nothing else

    proc, screen = start_in_pty(tail_args("--once", "--finals-only"), settings_env, tmp_path / "stderr")
    data = await finish(proc, screen, tmp_path / "stderr")
    assert data.decode() == finals
    assert CLEAR_LINE.encode() not in data
