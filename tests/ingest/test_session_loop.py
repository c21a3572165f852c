"""The session loop's deadlines (`WebSocketBackend._next_notice`): the machine's next deadline is
kept across turns that only took a media frame, asked again after anything else, and a deadline
that passes while frames flow still ends in a tick."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from typing import Any

from benchmarks.ingest_core_bench import AckingProducer, ready_backend
from ingest.producer import FrameProducer
from ingest.rtms_client import SIGNALING, ClientConfig, Disconnect
from rtmsflow.settings import Settings

SETTINGS = Settings(kafka_bootstrap="unused:9092", topic_prefix="p.")


def audio_frame(i: int) -> str:
    content = {"user_id": 7, "user_name": "Ann", "data": "AAAA" * 40, "timestamp": 1_765_000_000_000 + 20 * i}
    return json.dumps({"msg_type": 14, "content": content})


async def test_the_deadline_is_kept_across_media_frames_and_asked_again_after_anything_else() -> None:
    frames = FrameProducer(SETTINGS, producer=AckingProducer())  # type: ignore[arg-type]
    await frames.start()
    backend, conns = ready_backend(frames, SETTINGS, 0)
    machine = backend.machine
    assert machine is not None
    asked = 0
    next_deadline = machine.next_deadline

    def counted() -> float | None:
        nonlocal asked
        asked += 1
        return next_deadline()

    machine.next_deadline = counted  # type: ignore[method-assign]
    loop = asyncio.get_running_loop()

    async def turn(channel: str, text: str) -> None:
        backend._received(channel, conns[channel], text)
        notice = await backend._next_notice(machine, loop)
        assert notice is not None and notice.kind == "message"
        await backend._turn(machine, notice)

    for i in range(50):
        await turn("audio", audio_frame(i))
    assert asked == 1  # once, before the first frame
    await turn(SIGNALING, json.dumps({"msg_type": 12, "timestamp": 1}))  # a keep-alive: answered
    await turn("audio", audio_frame(50))
    assert asked == 2  # the answer's turn may have brought a deadline nearer: asked again
    await turn("audio", "{not json")  # a dead letter is not a media frame either
    await turn("audio", audio_frame(51))
    assert asked == 3
    await frames.stop()


async def test_a_deadline_that_passes_while_frames_flow_ends_in_a_tick() -> None:
    """Only the audio socket hears anything; the signaling socket's idle deadline passes meanwhile
    and the loop takes it before the next frame (a tick), though every turn before took a frame."""
    frames = FrameProducer(SETTINGS, producer=AckingProducer())  # type: ignore[arg-type]
    await frames.start()
    idle_s = 1.0
    config = ClientConfig("cid", "csecret", idle_timeout_s=idle_s)
    backend, conns = ready_backend(frames, SETTINGS, 0, config)
    machine = backend.machine
    assert machine is not None
    loop = asyncio.get_running_loop()
    silent_since = time.monotonic()
    for sock in machine.sockets.values():  # every socket heard from now: the first frame comes well before
        sock.last_rx = silent_since
    ticked_at: float | None = None
    async with asyncio.timeout(30):  # only catches a hang
        for i in itertools.count():
            backend._received("audio", conns["audio"], audio_frame(i))
            notice = await backend._next_notice(machine, loop)
            if notice is None:
                ticked_at = time.monotonic()
                actions: list[Any] = machine.on_tick(ticked_at)
                break
            await backend._turn(machine, notice)
            await asyncio.sleep(0.001)  # frames keep coming, spaced out (no result depends on it)
    assert ticked_at is not None and ticked_at >= silent_since + idle_s  # not before the deadline
    assert i > 0  # frames were taken on the way
    assert any(isinstance(a, Disconnect) and a.channel == SIGNALING for a in actions)
    await frames.stop()
