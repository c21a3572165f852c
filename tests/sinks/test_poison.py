"""Records that once stopped a sink for every meeting: each is dead-lettered with its meeting named,
the sink stays up, and a meeting running alongside gets the files an undisturbed run gives."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from emulator.media import MeetingSpec, SyntheticMeeting
from rtmsflow.children import die_with_parent
from rtmsflow.settings import Settings
from schemas.codec import Codec
from sinks.kinds import MEDIA_SINK, TRANSCRIPT_SINK
from sinks.stream_sink import SinkCore
from tests.ingest.support import free_port, read_topic
from tests.processors.support import wait_for as wait_for_condition
from tests.sinks.support import OrderedStream, from_meeting, produce, stream_dir, wait_for

pytestmark = pytest.mark.kafka
GOOD, BAD = "gOOd+/mtg==", "bAd+/mtg=="


def files_of(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


def undisturbed(core: SinkCore, settings: Settings, stream: OrderedStream) -> None:
    """Feed one stream's records alone to a core, no broker: the reference files."""
    codec = Codec(settings.schema_registry_url, settings.topic_prefix)
    for base, records in stream.records.items():
        if base not in core.topics:
            continue
        broker = core.topics[base]
        for offset, (value, headers) in enumerate(records):
            data = None if value is None else codec.encode(broker, value)
            core.feed(broker, 0, offset, stream.meeting_uuid.encode(), data, headers)
    assert not core.open, "the reference stream did not finalize"


def bad_start_stream(start_ms: int) -> OrderedStream:
    """A stream whose t = 0 cannot be a date (what a forged or misread `event_ts` becomes)."""
    bad = OrderedStream(BAD, "b1", origin_ms=start_ms)
    for at in range(0, 400, 20):
        bad.audio(at, bytes(640))
    bad.utterance(0, 300, (1, "P1"), "hello")
    bad.end(400)
    return bad


@pytest.mark.parametrize("start_ms", [253_402_300_800_000, -62_135_596_800_001])  # past 9999, before year 1
async def test_an_out_of_range_stream_start_is_dead_lettered_and_both_sinks_go_on(
    settings: Settings, kafka_topics: dict[str, str], tmp_path: Path, start_ms: int
) -> None:
    meeting = SyntheticMeeting(MeetingSpec(seed=4, participants=2, duration_s=3, video="360p", fps=25))
    good = from_meeting(meeting, GOOD, "g1")
    bad = bad_start_stream(start_ms)
    await produce(settings, [bad, good])  # the bad stream first: a sink must get past it
    d = stream_dir(settings, good)
    async with (
        MEDIA_SINK.service(settings, "poison-m") as media,
        TRANSCRIPT_SINK.service(settings, "poison-t") as transcripts,
    ):
        await wait_for(
            lambda: (d / "manifest.json").is_file() and (d / "transcript.manifest.json").is_file(),
            90,
            "the good stream's files",
        )
        for sink in (media, transcripts):  # both sinks still up
            assert sink.run_task is not None and not sink.run_task.done()

    letters = [v for _k, v, _p, _o in await read_topic(settings, kafka_topics["rtms.deadletter"])]
    assert letters and {v["meeting_uuid"] for v in letters} == {BAD}
    assert {v["source"] for v in letters} == {
        "rtms.audio",
        "rtms.video",
        "rtms.transcript",
        "rtms.chat",
    }  # markers too
    assert all(
        "is not a time between 2000 and 2100" in v["reason"] and v["stage"] == "sinks" for v in letters
    )

    reference = tmp_path / "reference"
    ref = dataclasses.replace(settings, data_dir=str(reference))
    for core in (MEDIA_SINK.core(ref, rebuild_all=True), TRANSCRIPT_SINK.core(ref, rebuild_all=True)):
        undisturbed(core, ref, good)
    want = files_of(stream_dir(settings, good, reference))
    assert sorted(want) == sorted(files_of(d)) and "recording.mp4" in want  # positive control
    assert files_of(d) == want


def test_a_sink_dead_letter_carries_at_most_the_head_of_its_input(tmp_path: Path) -> None:
    from schemas.limits import MAX_DEAD_LETTER_PAYLOAD_BYTES

    core = MEDIA_SINK.core(Settings(data_dir=str(tmp_path)))
    broker = core.topics["rtms.audio"]
    core.feed(broker, 0, 5, b"m==", b"\x00" * (3 << 20), None)  # 3 MiB that are not Avro
    core.feed(broker, 0, 6, b"m==", b"\x00" * 10, None)  # positive control: a small one, whole
    big, small = core.dead_letters
    assert big["payload"] == bytes(MAX_DEAD_LETTER_PAYLOAD_BYTES) and f"of {3 << 20} bytes" in big["reason"]
    assert small["payload"] == bytes(10) and "payload:" not in small["reason"]
    assert big["meeting_uuid"] == small["meeting_uuid"] == "m=="


def sink_on_a_full_disk(
    kind: str, env: dict[str, str], data_dir: Path, log_path: Path
) -> subprocess.Popen[bytes]:
    """`rtmsflow sink <kind>` in a mount namespace of its own whose data dir is a 16 MiB tmpfs,
    filled to the last byte before the sink starts. The test reaches the files (and frees the space)
    through /proc/<pid>/root. A user namespace maps us to root where we are not root already."""
    script = (f'mount -t tmpfs -o size=16m tmpfs "{data_dir}" && '
              f'{{ dd if=/dev/zero of="{data_dir}/filler" bs=1M 2>/dev/null; true; }} && '
              f'exec "{sys.executable}" -m rtmsflow.cli sink {kind} --group full-{kind} '
              f'--metrics-port {env[f"PORT_{kind}"]}')  # fmt: skip
    user = [] if os.geteuid() == 0 else ["--map-root-user"]
    with log_path.open("wb") as log_file:
        return subprocess.Popen(["unshare", "--mount", *user, "sh", "-c", script], env=env, stdout=log_file,
                                stderr=subprocess.STDOUT, preexec_fn=die_with_parent)  # fmt: skip


async def health(port: str) -> tuple[int, dict[str, Any]] | None:
    try:
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/health") as r:
            return r.status, await r.json()
    except aiohttp.ClientError:
        return None


async def test_a_full_disk_keeps_both_sinks_up_and_unhealthy_until_space_returns(
    settings: Settings, settings_env: dict[str, str], kafka_topics: dict[str, str], tmp_path: Path
) -> None:
    meeting = SyntheticMeeting(MeetingSpec(seed=6, participants=2, duration_s=3, video="360p", fps=25))
    good = from_meeting(meeting, GOOD, "g1")
    await produce(settings, [good])
    data = Path(settings.data_dir)
    env = {**settings_env, "PORT_media": str(free_port()), "PORT_transcripts": str(free_port())}
    procs = start_full_disk_sinks(env, data, tmp_path)
    manifests = {"media": "manifest.json", "transcripts": "transcript.manifest.json"}
    seen = {
        kind: stream_dir(settings, good, Path(f"/proc/{proc.pid}/root{data}")) for kind, proc in procs.items()
    }
    try:
        for kind, proc in procs.items():
            port = env[f"PORT_{kind}"]
            got = await wait_for_condition(
                partial(health_is, port, 503, "storage_error"), 90, f"the {kind} sink reporting the full disk"
            )
            assert "No space left" in got["error"]
            assert proc.poll() is None and not (seen[kind] / manifests[kind]).exists()
        for proc in procs.values():  # space returns
            os.unlink(f"/proc/{proc.pid}/root{data}/filler")
        for kind, proc in procs.items():
            manifest = seen[kind] / manifests[kind]
            await wait_for(manifest.is_file, 120, f"the {kind} files after space returned")
            await wait_for_condition(
                partial(health_is, env[f"PORT_{kind}"], 200, "ok"), 30, f"the {kind} sink healthy again"
            )
            assert proc.poll() is None
        copies = {kind: files_of(seen[kind]) for kind in procs}
    finally:
        for proc in procs.values():
            proc.terminate()
            proc.wait(30)

    reference = tmp_path / "reference"
    ref = dataclasses.replace(settings, data_dir=str(reference))
    for core in (MEDIA_SINK.core(ref, rebuild_all=True), TRANSCRIPT_SINK.core(ref, rebuild_all=True)):
        undisturbed(core, ref, good)
    want = files_of(stream_dir(settings, good, reference))
    got_files = {**copies["media"], **copies["transcripts"]}
    assert sorted(got_files) == sorted(want) and "recording.mp4" in want and "transcript.vtt" in want
    assert got_files == want  # nothing lost, nothing different
    for kind in procs:
        lines = (tmp_path / f"{kind}.log").read_text().splitlines()
        assert all(line.startswith("{") for line in lines), [ln for ln in lines if not ln.startswith("{")][:5]
        parsed = [json.loads(line) for line in lines]
        failures = [p for p in parsed if p["msg"] == "cannot write files: not committing, retrying"]
        assert 1 <= len(failures) <= 3  # one line per minute, not one per record or retry
        assert any(p["msg"] == "files can be written again: resuming" for p in parsed)


def start_full_disk_sinks(env: dict[str, str], data: Path, logs: Path) -> dict[str, subprocess.Popen[bytes]]:
    data.mkdir(parents=True)
    return {
        kind: sink_on_a_full_disk(kind, env, data, logs / f"{kind}.log") for kind in ("media", "transcripts")
    }


async def health_is(port: str, code: int, status: str) -> dict[str, Any] | None:
    """The sink's /health answer when it is `code` with `status`, else None."""
    got = await health(port)
    return got[1] if got is not None and got[0] == code and got[1]["status"] == status else None
