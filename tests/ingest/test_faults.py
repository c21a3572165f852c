"""Ingest under faults, through the real broker and the emulator: duplicated webhooks, failover,
dropped sockets, malformed frames. After each, the raw topics hold exactly what the emulator sent,
once each, followed by one end-of-stream marker."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter

import pytest

from emulator.faults import Faults, Malformed
from rtmsflow.settings import Settings
from tests.ingest.support import (
    RAW,
    Stack,
    assert_same_frames,
    frames_of,
    ingest_stack,
    read_topic,
    small_meeting,
)

pytestmark = pytest.mark.kafka


def assert_no_duplicates(raw: dict[str, list[dict]]) -> None:
    for name in RAW[:3]:
        ids = Counter(
            (v["stream_kind"], v["participant_id"], v["timestamp_ms"]) for v in frames_of(raw[name])
        )
        assert not [k for k, n in ids.items() if n > 1], name


# Deadlines only catch a hang: generous, so a loaded machine is slow rather than failed. What the
# tests prove never depends on how fast anything ran.
DEADLINE_S = 120
MEDIA_DEADLINE_S = 60


async def finish(stack: Stack, identity, handle, timeout_s: float = DEADLINE_S) -> dict[str, list[dict]]:
    async with asyncio.timeout(timeout_s):
        reason = await handle.wait_done()
    raw = await stack.wait_eos(identity.instance_id, timeout_s=DEADLINE_S)
    for name in RAW:
        assert raw[name][-1]["end_of_stream"] and raw[name][-1]["stop_reason"] == reason
        assert sum(v["end_of_stream"] for v in raw[name]) == 1
    return raw


async def test_duplicated_started_webhook_opens_one_connection(
    settings: Settings, kafka_topics: dict[str, str]
) -> None:
    meeting = await asyncio.to_thread(small_meeting, 2, 3.0)
    async with ingest_stack(settings) as stack:
        worker = await stack.start_worker()
        identity, handle = stack.stream(meeting, speed=2.0)
        deliveries = await stack.hooks.rtms_started(identity, twice=True, twice_after_s=0.3)
        assert [d.delivered for d in deliveries] == [True, True]
        raw = await finish(stack, identity, handle)
        sessions = await read_topic(stack.settings, stack.settings.topic_prefix + "rtms.sessions")
        actions = [v["action"] for _, v, _, _ in sessions]
        # Zoom's two deliveries, one holding (HELD before connecting), ended once the markers were stored
        assert [a for a in actions if a == "STARTED"] == ["STARTED", "STARTED"]
        helds = [v for _, v, _, _ in sessions if v["action"] == "HELD"]
        # one holding: HELD before connecting, then HELD again with t = 0 once the media fixed it
        assert [h["media_origin_ms"] is not None for h in helds] == [False, True]
        assert actions[-1] == "ENDED" and actions.count("ENDED") == 1
        assert worker.connections_opened == 1 and len(stack.backends) == 1
        assert handle.stats.signaling_handshakes == 1
        assert_same_frames(handle.sent, raw)


async def test_failover_to_a_new_url(settings: Settings, kafka_topics: dict[str, str]) -> None:
    meeting = await asyncio.to_thread(small_meeting, 3, 4.0)
    async with ingest_stack(settings) as stack:
        await stack.start_worker()
        identity, handle = stack.stream(meeting, speed=1.5)
        await stack.hooks.rtms_started(identity)
        async with asyncio.timeout(MEDIA_DEADLINE_S):
            await handle.wait_media(1500)
        new_urls = handle.failover()
        assert new_urls != identity.server_urls
        await stack.hooks.rtms_started(dataclasses.replace(identity, server_urls=new_urls))
        raw = await finish(stack, identity, handle)
        assert handle.stats.signaling_handshakes == 2 and len(stack.backends) == 1
        assert stack.backends[0].ready_count == 2
        assert_no_duplicates(raw)
        assert_same_frames(handle.sent, raw)


@pytest.mark.parametrize("channel", ["audio", "video"])
async def test_dropped_media_socket_is_reconnected_without_duplicates(
    settings: Settings, kafka_topics: dict[str, str], channel: str
) -> None:
    meeting = await asyncio.to_thread(small_meeting, 4, 4.0)
    async with ingest_stack(settings) as stack:
        await stack.start_worker()
        identity, handle = stack.stream(meeting, speed=1.5)
        await stack.hooks.rtms_started(identity)
        async with asyncio.timeout(MEDIA_DEADLINE_S):
            await handle.wait_media(1200)
        handle.drop_media(channel, close_frame=False)
        raw = await finish(stack, identity, handle)
        assert handle.stats.signaling_handshakes == 1
        assert handle.stats.media_handshakes == 5  # four sockets (audio, video, transcript, chat), one twice
        assert stack.backends[0].ready_count == 1
        assert_no_duplicates(raw)
        assert_same_frames(handle.sent, raw)
        names = [v["name"] for v in frames_of(raw["rtms.raw.events"])]
        assert "media_interrupted" in names


async def test_dropped_signaling_socket_is_reconnected_without_duplicates(
    settings: Settings, kafka_topics: dict[str, str]
) -> None:
    meeting = await asyncio.to_thread(small_meeting, 5, 4.0)
    async with ingest_stack(settings) as stack:
        await stack.start_worker()
        identity, handle = stack.stream(meeting, speed=1.5)
        webhooks = stack.interrupted_webhooks(identity, handle)
        await stack.hooks.rtms_started(identity)
        async with asyncio.timeout(MEDIA_DEADLINE_S):
            await handle.wait_media(1200)
        handle.drop_signaling(close_frame=False)
        raw = await finish(stack, identity, handle)
        assert webhooks and all(t.done() and t.result().delivered for t in webhooks)
        sessions = await read_topic(stack.settings, stack.settings.topic_prefix + "rtms.sessions")
        webhooks = [v["action"] for _, v, _, _ in sessions if v["action"] in ("STARTED", "INTERRUPTED")]
        assert webhooks == ["STARTED", "INTERRUPTED"]
        assert handle.stats.signaling_handshakes == 2 and stack.backends[0].ready_count == 2
        assert_no_duplicates(raw)
        assert_same_frames(handle.sent, raw)


async def test_malformed_frames_go_to_deadletter_and_the_meeting_goes_on(
    settings: Settings, kafka_topics: dict[str, str]
) -> None:
    meeting = await asyncio.to_thread(small_meeting, 6, 3.0)
    kinds = (Malformed.BAD_JSON, Malformed.BAD_BASE64, Malformed.MISSING_FIELDS, Malformed.UNKNOWN_MSG_TYPE)
    async with ingest_stack(settings) as stack:
        await stack.start_worker()
        identity, handle = stack.stream(meeting, speed=2.0, faults=Faults(malformed=kinds))
        await stack.hooks.rtms_started(identity)
        raw = await finish(stack, identity, handle)
        assert_same_frames(handle.sent, raw)
        letters = await read_topic(stack.settings, stack.settings.topic_prefix + "rtms.deadletter")
        assert [k for k, _, _, _ in letters] == [identity.instance_id.encode()] * 4
        values = [v for _, v, _, _ in letters]
        assert [v["error"] for v in values] == [
            "ProtocolError.bad_json", "ProtocolError.bad_base64", "ProtocolError.missing_field", "ProtocolError.unknown_msg_type"
        ]  # fmt: skip
        assert all(v["stage"] == "ingest" and v["source"].startswith("ws:media/") for v in values)
        assert (
            values[0]["payload"]
            == b'{"msg_type":14,"content":{"user_id":1,"user_name":"x","data":"AAAA","timest'
        )
        assert values[1]["payload"].startswith(
            b'{"msg_type":14,"content":{"user_id":0,"user_name":"","data":"!!not*base64!!"'
        )
        assert all(v["rtms_stream_id"] == identity.rtms_stream_id for v in values)


async def test_what_media_sockets_carry_behind_the_terminated_still_reaches_kafka(
    settings: Settings, kafka_topics: dict[str, str]
) -> None:
    """Zoom writes media and signaling on separate connections, so the end of the stream on
    signaling can overtake the last messages on a media socket. Here one message is written on the
    audio socket right after STREAM_STATE TERMINATED: the client closes media with a handshake and
    still delivers it (a malformed one, so it is easy to find: on the dead-letter topic)."""
    meeting = await asyncio.to_thread(small_meeting, 7, 6.0)
    async with ingest_stack(settings) as stack:
        await stack.start_worker()
        # the server leaves the closing to the client (its own close of leftovers comes far later)
        identity, handle = stack.stream(meeting, speed=1.5, faults=Faults(close_grace_s=600))
        await stack.hooks.rtms_started(identity)
        async with asyncio.timeout(MEDIA_DEADLINE_S):
            await handle.wait_media(4500)  # past the first transcript piece
        handle.stop()
        assert handle.inject(Malformed.BAD_JSON, "audio")  # the socket is still open: written
        raw = await finish(stack, identity, handle)
        # every media socket closed by its handshake (the reader reported it), not given up on
        assert (await stack.backends[0].wait()).detail == "stream terminated"
        assert_same_frames(handle.sent, raw)
        letters = await read_topic(stack.settings, stack.settings.topic_prefix + "rtms.deadletter")
        assert [(k, v["error"]) for k, v, _, _ in letters] == [
            (identity.instance_id.encode(), "ProtocolError.bad_json")
        ]
