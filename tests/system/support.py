"""Helpers of the system tests: `running_stack` (every stage a process under the Supervisor, which
restarts one that dies), `Zoom` (the emulator's server and webhook sender in the test's process,
recording what it sends), `check_stream` (a stream's files against its raw records), and `copy_raw`
(the same raw records under another prefix: the undisturbed reference a disturbed run must equal)."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import time
import uuid
import wave
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import av
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from emulator.media import MeetingSpec, SyntheticMeeting
from emulator.server import RTMSServer, StreamHandle
from emulator.webhooks import StreamIdentity, WebhookSender
from rtmsflow.kafka_client import bootstrap_servers
from rtmsflow.settings import Settings
from rtmsflow.stack import StageSpec, Supervisor, free_ports
from schemas import topics as t
from schemas.topics import partition_for
from sinks.manifest import read_manifest, verify_files
from sinks.transcript_files import iter_jsonl
from tests.ingest.support import (
    CLIENT_ID,
    CLIENT_SECRET,
    RAW,
    WEBHOOK_SECRET,
    frames_of,
    read_topic,
    worker_env,
)

SESSION_TIMEOUT_MS = "6000"  # the broker's minimum: a killed member's partitions move soonest
WORKER_ARGS = ("--session-timeout-ms", SESSION_TIMEOUT_MS, "--backoff-base-s", "0.3",
               "--video-resolution", "360p", "--video-fps", "10")  # fmt: skip
BYTES_PER_MS = 32  # 16 kHz mono L16


def stack_env(settings_env: dict[str, str], settings: Settings, data_dir: Path) -> dict[str, str]:
    """The stages' environment: the test's settings (this prefix, this broker, this data dir) and the
    emulator's credentials."""
    return {
        **worker_env(settings_env),
        "ZOOM_SECRET_TOKEN": WEBHOOK_SECRET,
        "RTMSFLOW_KAFKA_BOOTSTRAP": bootstrap_servers(settings),
        "RTMSFLOW_TOPIC_PREFIX": settings.topic_prefix,
        "RTMSFLOW_DATA_DIR": str(data_dir),
        "RTMSFLOW_INGEST_END_STREAMS_ON_STOP": "1",
        "RTMSFLOW_LOG_LEVEL": "INFO",
    }


def system_stages(
    settings: Settings, *, ingest: bool = True, workers: int = 1, processors: int = 1, sinks: int = 1
) -> list[StageSpec]:
    """The pipeline's stages in flow order, `n` of a kind sharing one consumer group (groups named
    after the topic prefix, so no two tests share one)."""
    tag = settings.topic_prefix.rstrip(".")
    groups = {k: f"{tag}-{k}" for k in ("ingest", "processors", "sink-media", "sink-transcripts")}
    raw = tuple(spec.full_name(settings.topic_prefix) for spec in t.RAW_TOPICS)
    media = (t.AUDIO.full_name(settings.topic_prefix), t.VIDEO.full_name(settings.topic_prefix))
    text = (t.TRANSCRIPT.full_name(settings.topic_prefix), t.CHAT.full_name(settings.topic_prefix))
    ports = iter(free_ports((1 + workers if ingest else 0) + processors + 2 * sinks))
    stages = []
    if ingest:
        stages.append(StageSpec("ingest-http", ("ingest", "http"), next(ports)))
        stages += [
            StageSpec(
                f"ingest-worker-{i}",
                ("ingest", "worker", "--group", groups["ingest"], *WORKER_ARGS),
                next(ports),
            )  # fmt: skip
            for i in range(workers)
        ]
    g = groups["processors"]
    stages += [
        StageSpec(
            f"processor-{i}",
            ("process", "--group", g, "--session-timeout-ms", SESSION_TIMEOUT_MS),
            next(ports),
            g,
            raw,
        )  # fmt: skip
        for i in range(processors)
    ]
    for i in range(sinks):
        g = groups["sink-media"]
        stages.append(StageSpec(f"sink-media-{i}", ("sink", "media", "--group", g), next(ports), g, media))
    for i in range(sinks):
        g = groups["sink-transcripts"]
        stages.append(
            StageSpec(f"sink-transcripts-{i}", ("sink", "transcripts", "--group", g), next(ports), g, text)
        )
    return stages


@dataclass
class Played:
    """One emulated meeting: its webhook identity and its emulator handle (every frame sent)."""

    identity: StreamIdentity
    handle: StreamHandle
    hooks: list[asyncio.Task[Any]] = field(default_factory=list)

    @property
    def meeting_uuid(self) -> str:
        return self.identity.instance_id


@dataclass
class Zoom:
    """The emulator's RTMS server and webhook sender, aimed at the stack's webhook endpoint."""

    server: RTMSServer
    hooks: WebhookSender

    async def start_meeting(
        self, meeting: SyntheticMeeting, seed: int, partition: tuple[int, int] | None = None
    ) -> Played:
        """Register the stream, post `rtms_started` (acknowledged: stored in Kafka) and report every
        interruption of its signaling by `rtms_interrupted`, as Zoom does. `partition` = (p, count):
        a meeting UUID that falls in partition p of `count`."""
        while True:
            index = int(uuid.uuid4().int % 10**6)
            identity = StreamIdentity.generate("meeting", "", seed=seed, index=index)
            if partition is None or partition_for(identity.instance_id, partition[1]) == partition[0]:
                break
        handle = self.server.add_stream(identity.instance_id, identity.rtms_stream_id, meeting, record=True)
        identity = dataclasses.replace(identity, server_urls=handle.server_urls)
        played = Played(identity, handle)

        def on_change(event: Any) -> None:
            if event.kind == "interrupted":
                played.hooks.append(asyncio.ensure_future(self.hooks.rtms_interrupted(identity)))

        handle.on_lifecycle(on_change)
        (delivery,) = await self.hooks.rtms_started(identity)
        assert delivery.delivered, delivery
        return played

    async def end_meeting(self, played: Played, timeout_s: float = 120.0) -> int:
        """Until the emulator has played the whole meeting; then `rtms_stopped` with its reason."""
        async with asyncio.timeout(timeout_s):
            reason = await played.handle.wait_done()
        await asyncio.gather(*played.hooks, return_exceptions=True)
        delivery = await self.hooks.rtms_stopped(played.identity, reason)
        assert delivery.delivered, delivery
        return reason


def meeting_of(seed: int, duration_s: float, participants: int = 2) -> SyntheticMeeting:
    """A meeting of small video (360p, 10 fps, what the workers ask for), beeps every second."""
    meeting = SyntheticMeeting(MeetingSpec(seed=seed, participants=participants, duration_s=duration_s,
                                           video="360p", fps=10, beep_every_ms=1000))  # fmt: skip
    meeting.prepare()
    return meeting


@dataclass
class Stack:
    """A running stack: its supervisor (stages by name), data dir and, with ingest, `zoom`."""

    settings: Settings
    sup: Supervisor
    data_dir: Path
    zoom: Zoom | None

    def stage(self, name: str) -> Any:
        return self.sup.stage(name)

    def restarts(self) -> dict[str, int]:
        return {s.spec.name: len(s.restarts) for s in self.sup.stages if s.restarts}


@asynccontextmanager
async def running_stack(
    settings: Settings, env: dict[str, str], data_dir: Path, log_dir: Path, stages: list[StageSpec]
) -> AsyncIterator[Stack]:
    """The stages started together (each until its /health answers) and watched; stopped on exit."""
    sup = Supervisor(settings, stages, env, log_dir, max_restarts=5, restart_window_s=120)
    await asyncio.to_thread(log_dir.mkdir, parents=True, exist_ok=True)
    zoom: Zoom | None = None
    watcher: asyncio.Task[None] | None = None
    try:
        for stage in sup.stages:  # all at once: imports overlap; the stages meet only in Kafka
            stage.start()
        await asyncio.gather(*(stage.wait_healthy(120) for stage in sup.stages))
        watcher = asyncio.create_task(sup.watch())
        if any(s.spec.name == "ingest-http" for s in sup.stages):
            server = RTMSServer(client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
            await server.start()
            webhook = f"http://127.0.0.1:{sup.stage('ingest-http').spec.port}/webhook"
            hooks = WebhookSender(webhook, WEBHOOK_SECRET, retries=3, timeout_s=10)
            await hooks.start()
            zoom = Zoom(server, hooks)
        yield Stack(settings, sup, data_dir, zoom)
        assert sup.failed is None, sup.failed
    finally:
        if watcher is not None:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        await asyncio.gather(*(stage.terminate() for stage in reversed(sup.stages)))
        if zoom is not None:
            await zoom.hooks.stop()
            await zoom.server.stop()


async def health(port: int) -> dict[str, Any] | None:
    """A stage's /health body, or None while it does not answer 200."""
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1)) as http:
            async with http.get(f"http://127.0.0.1:{port}/health") as resp:
                return dict(await resp.json()) if resp.status == 200 else None
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None


async def finalized_by(port: int) -> int:
    """How many streams a sink process has finalized (its `rtmsflow_sink_streams_finalized` counter)."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
        async with http.get(f"http://127.0.0.1:{port}/metrics") as resp:
            text = await resp.text()
    return sum(
        int(float(line.rsplit(" ", 1)[1]))
        for line in text.splitlines()
        if line.startswith("rtmsflow_sink_streams_finalized_total{")
    )


# --- waiting for files ---------------------------------------------------------------------------


def finalized_streams(data_dir: Path) -> dict[str, Path]:
    """Meeting UUID -> stream directory, for every stream both sinks have finalized."""
    out = {}
    for manifest in data_dir.glob("*/*/*/manifest.json"):
        if (manifest.parent / "transcript.manifest.json").is_file():
            out[json.loads(manifest.read_text())["meeting_uuid"]] = manifest.parent
    return out


async def wait_finalized(
    data_dir: Path, meetings: Iterable[str], timeout_s: float = 120.0
) -> dict[str, Path]:
    """Until both sinks have finalized a stream of each of `meetings`; their directories."""
    wanted = set(meetings)
    async with asyncio.timeout(timeout_s):
        while True:
            done = finalized_streams(data_dir)
            if wanted <= set(done):
                return {m: done[m] for m in wanted}
            await asyncio.sleep(0.3)


async def wait_until(condition: Any, timeout_s: float = 60.0) -> Any:
    """Poll an async condition until it returns something truthy (a deadline, never a verdict)."""
    async with asyncio.timeout(timeout_s):
        while True:
            got = await condition()
            if got:
                return got
            await asyncio.sleep(0.3)


# --- the meeting's raw records -------------------------------------------------------------------


async def raw_records(
    settings: Settings, meetings: Iterable[str]
) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Meeting -> raw topic (base name) -> the meeting's records in offset order (markers too)."""
    wanted = set(meetings)
    out: dict[str, dict[str, list[dict[str, Any]]]] = {m: {name: [] for name in RAW} for m in wanted}
    for name in RAW:
        for key, value, _, _ in await read_topic(settings, settings.topic_prefix + name):
            meeting = (key or b"").decode()
            if meeting in wanted:
                out[meeting][name].append(value)
    return out


def assert_kafka_has_what_zoom_sent(
    sent: list[Any], raw: dict[str, list[dict[str, Any]]], *, private_chat: bool = False
) -> None:
    """Every frame the emulator sent is on the raw topics exactly once, in the order it was sent;
    chat too with `private_chat` (RTMSFLOW_CHAT_PRIVATE=keep), else its public messages only."""
    chat_sent = [(f.timestamp, f.user_id, f.data) for f in sent if f.channel == "chat"]
    chat = frames_of(raw["rtms.raw.chat"])
    chat_got = [(v["timestamp_ms"], v["participant_id"], v["text"]) for v in chat]
    if private_chat:
        assert chat_sent, "the emulator sent no chat"
        assert chat_got == chat_sent and any(v["private"] and v["recipients"] for v in chat)
    else:
        assert not any(v["private"] for v in chat)
        rest = iter(chat_sent)
        assert all(g in rest for g in chat_got), "chat on rtms.raw.chat not as sent, in order, once"
    for channel, topic in (("audio", "rtms.raw.audio"), ("video", "rtms.raw.video"),
                           ("transcript", "rtms.raw.transcript")):  # fmt: skip
        want = [(f.timestamp, f.user_id, f.data) for f in sent if f.channel == channel]
        got = [(v["timestamp_ms"], v["participant_id"], v.get("payload", v.get("text")))
               for v in frames_of(raw[topic])]  # fmt: skip
        assert want, f"the emulator sent no {channel}"
        if got != want:
            missing = sorted({w[:2] for w in want} - {g[:2] for g in got})
            extra = sorted({g[:2] for g in got} - {w[:2] for w in want})
            twice = len(got) - len(set(got))
            changed = [w[:2] for w, g in zip(want, got, strict=False) if w[:2] == g[:2] and w != g]
            raise AssertionError(
                f"{topic}: {len(want)} sent, {len(got)} in Kafka; missing {missing[:5]} ({len(missing)}), "
                f"unexpected {extra[:5]} ({len(extra)}), {twice} twice, payload differs at {changed[:5]}"
            )


def identity_of(v: dict[str, Any]) -> tuple[Any, ...]:
    """A raw frame's identity (what makes two records the same frame)."""
    body = v.get("payload", v.get("text"))
    return (v["stream_kind"], v.get("participant_id"), v["timestamp_ms"], body)


def distinct(raw: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The frames of a raw topic, each identity once, in timestamp order."""
    seen: dict[tuple[Any, ...], dict[str, Any]] = {}
    for v in frames_of(raw):
        seen.setdefault(identity_of(v), v)
    return sorted(seen.values(), key=lambda v: v["timestamp_ms"])


# --- what a stream's files must hold ----------------------------------------------------------------


def check_stream(
    stream_dir: Path, raw: dict[str, list[dict[str, Any]]], *, chat_in_transcript: bool = False
) -> dict[str, Any]:
    """Check a finalized stream directory against the meeting's raw records; returns its manifest.

    * both manifests list exactly the files on disk, each with its size and SHA-256, and agree on
      the meeting and stream;
    * the media manifest counts each distinct raw audio and video frame once;
    * `audio.wav` is 16 kHz mono, and holds every raw audio frame's PCM at its place in stream time
      (`timestamp_ms - stream_started_ms`), zeros everywhere else (gaps are silence);
    * `recording.mp4` has one H.264 and one AAC stream, decodes one picture per raw video frame,
      each at its stream time (the same clock as the audio: A/V sync), and lasts as long as the WAV;
    * the transcript holds every word of the raw transcript pieces once, in order, in utterances
      numbered 0, 1, 2, ... without a repeat; the chat files every raw chat message once, in order.
    """
    manifest = read_manifest(stream_dir / "manifest.json")
    text_manifest = read_manifest(stream_dir / "transcript.manifest.json")
    for m in (manifest, text_manifest):
        assert verify_files(m, stream_dir) == [], m["files"]
    listed = {f["name"] for m in (manifest, text_manifest) for f in m["files"]}
    on_disk = {p.name for p in stream_dir.iterdir() if p.is_file()} - {
        "manifest.json",
        "transcript.manifest.json",
    }
    assert listed == on_disk, (listed, on_disk)
    assert {"audio.wav", "recording.mp4", "transcript.txt", "transcript.jsonl"} <= listed, listed
    (stream,) = manifest["streams"]
    (text_stream,) = text_manifest["streams"]
    assert manifest["meeting_uuid"] == text_manifest["meeting_uuid"]
    assert stream["rtms_stream_id"] == text_stream["rtms_stream_id"]
    assert stream["ended"]["how"] == "marker" and text_stream["ended"]["how"] == "marker"

    audio = distinct(raw["rtms.raw.audio"])
    video = distinct(raw["rtms.raw.video"])
    pieces = distinct(raw["rtms.raw.transcript"])
    assert audio and video and pieces
    origin = audio[0]["stream_started_ms"]
    assert stream["frame_counts"]["AUDIO"] == len(audio)
    assert stream["frame_counts"]["VIDEO"] == len(video)

    with wave.open(str(stream_dir / "audio.wav")) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (16000, 1, 2)
        pcm = wav.readframes(wav.getnframes())
    expected = bytearray(len(pcm))
    for v in audio:
        at = (v["timestamp_ms"] - origin) * BYTES_PER_MS
        assert at + len(v["payload"]) <= len(pcm), "an audio frame lies past the WAV's end"
        expected[at : at + len(v["payload"])] = v["payload"]
    assert pcm == bytes(expected), "the WAV is not every frame at its stream time with silence between"
    wav_ms = len(pcm) // BYTES_PER_MS

    times = [v["timestamp_ms"] - origin for v in video]
    with av.open(str(stream_dir / "recording.mp4")) as mp4:
        assert sorted(s.codec_context.name for s in mp4.streams) == ["aac", "h264"]
        samples = [round(float(p.pts * p.time_base) * 1000) for p in mp4.demux(video=0)
                   if p.size and p.pts is not None and p.time_base is not None]  # fmt: skip
        mp4_ms = round(float(mp4.duration or 0) / av.time_base * 1000)
    with av.open(str(stream_dir / "recording.mp4")) as mp4:
        pictures = [round(float(f.time or 0) * 1000) for f in mp4.decode(video=0)]
    assert samples == times, "the MP4 does not hold every video frame at its stream time"
    # every picture decodes, except frames that follow a hole before the next keyframe: their
    # reference frames were never received (a new RTMS connection does not start with one)
    orphans: set[int] = set()
    orphaned = False
    for before, v in itertools.pairwise([video[0], *video]):
        orphaned = (orphaned or v["ingest_epoch"] != before["ingest_epoch"]) and not v["keyframe"]
        if orphaned:
            orphans.add(v["timestamp_ms"] - origin)
    assert set(pictures) <= set(times) and pictures == sorted(pictures)
    assert set(times) - set(pictures) <= orphans, sorted(set(times) - set(pictures) - orphans)
    assert abs(mp4_ms - wav_ms) <= 100, (mp4_ms, wav_ms)

    utterances = list(iter_jsonl(stream_dir / "transcript.jsonl"))
    ids = [u.utterance_id for u in utterances]
    assert ids == [f"{stream['rtms_stream_id']}/{n}" for n in range(len(ids))], (
        "an utterance missing or doubled"
    )
    assert all(u.final for u in utterances)
    words = " ".join(u.text for u in utterances).split()
    assert words == " ".join(p["text"] for p in pieces).split(), "transcript words missing, doubled or moved"
    # the chat: each message ingest kept once, in the order sent, numbered 0, 1, 2, ...
    messages = [json.loads(line) for line in (stream_dir / "chat.jsonl").read_text().splitlines()]
    kept = distinct(raw["rtms.raw.chat"])
    assert [m["chat_id"] for m in messages] == [f"{stream['rtms_stream_id']}/{n}" for n in range(len(kept))]
    assert [(m["timestamp_ms"], m["sender_id"], m["text"], m["private"]) for m in messages] == [
        (v["timestamp_ms"], v["participant_id"], v["text"], v["private"]) for v in kept
    ], "chat messages missing, doubled or moved"
    assert len((stream_dir / "chat.txt").read_text().splitlines()) == len(messages)
    txt = (stream_dir / "transcript.txt").read_text().splitlines()
    assert len(txt) == len(utterances) + (len(messages) if chat_in_transcript else 0)
    return manifest


def gaps_of(manifest: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    (stream,) = manifest["streams"]
    return [g for g in stream["gaps"] if g["kind"] == kind]


def files_of(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


# --- the same raw records under another prefix (for the undisturbed reference run) ------------------


async def copy_raw(source: Settings, target: Settings) -> int:
    """Copy every raw topic of `source` to `target`'s prefix, partition for partition, in offset order,
    bytes and headers as they are (markers included); returns the records copied."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers(source), enable_auto_commit=False,
                                auto_offset_reset="earliest", max_partition_fetch_bytes=8 << 20)  # fmt: skip
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers(target), enable_idempotence=True,
                                max_request_size=8 << 20, linger_ms=5)  # fmt: skip
    await consumer.start()
    await producer.start()
    copied = 0
    try:
        for name in RAW:
            tps = [TopicPartition(source.topic_prefix + name, p) for p in range(source.partitions)]
            consumer.assign(tps)
            ends = await consumer.end_offsets(tps)
            remaining = {tp for tp in tps if ends[tp] > 0}
            futures = []
            while remaining:
                batch = await consumer.getmany(*remaining, timeout_ms=500)
                for tp, records in batch.items():
                    for r in records:
                        if r.offset < ends[tp]:
                            futures.append(await producer.send(
                                target.topic_prefix + name, r.value, key=r.key, partition=tp.partition,
                                headers=list(r.headers)))  # fmt: skip
                for tp in list(remaining):
                    if await consumer.position(tp) >= ends[tp]:
                        remaining.discard(tp)
            await asyncio.gather(*futures)
            copied += len(futures)
    finally:
        await producer.stop()
        await consumer.stop()
    return copied


async def reference_files(
    settings: Settings, settings_env: dict[str, str], tmp: Path, meetings: Iterable[str], *,
    processors: int = 1, sinks: int = 1,
) -> dict[str, Path]:  # fmt: skip
    """Processors and sinks run undisturbed over a copy of `settings`' raw topics (another prefix,
    another data dir): meeting -> stream directory of what that run wrote."""
    from rtmsflow.admin import delete_topics, ensure_topics
    from schemas.topics import ALL_TOPICS

    ref = dataclasses.replace(settings, topic_prefix=f"r{uuid.uuid4().hex[:12]}.")
    await ensure_topics(ref, ALL_TOPICS)
    try:
        assert await copy_raw(settings, ref) > 0
        data = tmp / "reference-data"
        env = stack_env(settings_env, ref, data)
        stages = system_stages(ref, ingest=False, processors=processors, sinks=sinks)
        t0 = time.monotonic()
        async with running_stack(ref, env, data, tmp / "reference-logs", stages):
            dirs = await wait_finalized(data, meetings, timeout_s=180)
        print(f"reference run ({processors} processor(s), {sinks} sink(s) of a kind): "
              f"{time.monotonic() - t0:.1f} s")  # fmt: skip
        return dirs
    finally:
        await delete_topics(ref, [spec.full_name(ref.topic_prefix) for spec in ALL_TOPICS])


def assert_same_files(
    got: dict[str, Path], want: dict[str, Path], *, but: frozenset[str] = frozenset()
) -> None:
    """Each meeting's stream directory holds the same files, byte for byte, in both runs (files
    named in `but` only exist in both)."""
    assert sorted(got) == sorted(want)
    for meeting in want:
        a, b = files_of(got[meeting]), files_of(want[meeting])
        assert sorted(a) == sorted(b), (meeting, sorted(a), sorted(b))
        assert not [n for n in a if n.endswith(".partial")]
        for name in set(b) - but:
            assert a[name] == b[name], f"{name} of {meeting} differs from the undisturbed run"
