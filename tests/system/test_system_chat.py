"""In-meeting chat through the whole stack and the real broker: the emulator plays a meeting whose chat
has public and private messages; ingest (private messages kept, RTMSFLOW_CHAT_PRIVATE=keep) writes them
typed to `rtms.raw.chat`, the processors order them onto `rtms.chat`, and the transcript sink, killed
with SIGKILL mid-meeting and restarted, writes `chat.jsonl`, `chat.txt` and a `transcript.txt` with the
chat interleaved, byte for byte what `rtmsflow replay` rebuilds from the topics."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
from pathlib import Path

import pytest

from rtmsflow.settings import Settings
from sinks.replay import replay_meeting
from tests.system.support import (
    assert_kafka_has_what_zoom_sent,
    check_stream,
    files_of,
    finalized_streams,
    meeting_of,
    raw_records,
    running_stack,
    stack_env,
    system_stages,
    wait_until,
)

pytestmark = pytest.mark.kafka


def partial_lines(data: Path, name: str) -> int:
    """Lines the transcript sink has written so far to `name` of the (one) stream being recorded."""
    return sum(len(p.read_bytes().splitlines()) for p in data.glob(f"*/*/*/.{name}.partial"))


async def test_public_and_private_chat_become_files_a_replay_rebuilds_byte_for_byte_despite_kill_9(
    settings: Settings, settings_env: dict[str, str], kafka_topics: dict[str, str], tmp_path: Path
) -> None:
    meeting = await asyncio.to_thread(meeting_of, 6, 16.0, 3)
    script = list(meeting.chat_messages())
    # the script has both kinds of message, and messages before and after the kill below
    assert any(m.recipients for m in script) and any(not m.recipients for m in script)
    kill_after = script[1].offset_ms
    assert any(m.offset_ms > kill_after + 1_000 for m in script)
    data = tmp_path / "data"
    env = {
        **stack_env(settings_env, settings, data),
        "RTMSFLOW_CHAT_PRIVATE": "keep",
        "RTMSFLOW_SINK_CHAT_IN_TRANSCRIPT": "1",
    }
    async with running_stack(settings, env, data, tmp_path / "logs", system_stages(settings)) as stack:
        assert stack.zoom is not None
        played = await stack.zoom.start_meeting(meeting, 6)
        await played.handle.wait_media(kill_after)

        async def two_written() -> bool:
            return partial_lines(data, "chat.txt") >= 2

        await wait_until(two_written, 120)
        assert not finalized_streams(data), "the meeting was finalized before the kill"
        proc = stack.stage("sink-transcripts-0").proc
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait() == -9
        await stack.zoom.end_meeting(played)

        async def finalized() -> dict[str, Path]:
            return await asyncio.to_thread(finalized_streams, data)

        dirs = await wait_until(finalized, 150)
        assert stack.restarts() == {"sink-transcripts-0": 1}
    meeting_uuid = played.meeting_uuid
    raw = await raw_records(settings, dirs)
    assert_kafka_has_what_zoom_sent(played.handle.sent, raw[meeting_uuid], private_chat=True)
    check_stream(dirs[meeting_uuid], raw[meeting_uuid], chat_in_transcript=True)

    stream_dir = dirs[meeting_uuid]
    messages = [json.loads(line) for line in (stream_dir / "chat.jsonl").read_text().splitlines()]
    assert len(messages) == len(script)
    assert [bool(m["recipients"]) for m in messages] == [bool(m.recipients) for m in script]
    txt = (stream_dir / "chat.txt").read_text(encoding="utf-8").splitlines()
    private = next(i for i, m in enumerate(script) if m.recipients)
    assert (
        f"(chat, private to {meeting.participants[script[private].recipients[0]].user_name}): "
        in txt[private]
    )
    assert all(
        line in (stream_dir / "transcript.txt").read_text(encoding="utf-8").splitlines() for line in txt
    )

    # replay rebuilds every file, byte for byte, from the ordered topics
    again = tmp_path / "replay"
    replayed = dataclasses.replace(settings, data_dir=str(tmp_path / "unused"), sink_chat_in_transcript=True)
    result = await replay_meeting(replayed, meeting_uuid, again)
    assert result.used_index
    (replay_dir,) = {p.parent for p in again.glob("*/*/*/transcript.manifest.json")}
    assert replay_dir.relative_to(again) == stream_dir.relative_to(data)
    got, want = files_of(stream_dir), files_of(replay_dir)
    assert sorted(got) == sorted(want) and {"chat.jsonl", "chat.txt", "transcript.txt"} <= set(got)
    for name in want:
        assert got[name] == want[name], f"{name} differs from the replay's"
