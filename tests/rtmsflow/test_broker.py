"""`rtmsflow kafka ...` and `rtmsflow topics ...` as a user runs them, against real brokers.

The CLI tests start their own broker in their own state dir (`--state-dir` / RTMSFLOW_KAFKA_STATE),
next to the session's broker, and stop it again."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from rtmsflow.admin import TopicMismatch, delete_topics, ensure_topics, list_topics
from rtmsflow.broker import MANIFEST, LocalKafka, probe, write_manifest
from rtmsflow.settings import Settings
from schemas.topics import ALL_TOPICS, RAW_AUDIO


def rtmsflow(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the `rtmsflow` CLI in a subprocess, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "rtmsflow.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def process_gone(pid: int) -> bool:
    """True if no process has `pid` (a zombie awaiting its parent's wait counts as gone: it runs
    nothing and holds no port or file)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return not stat.parent.exists()


def env_without_broker(**extra: str) -> dict[str, str]:
    """The environment minus any broker address the session set, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in ("RTMSFLOW_KAFKA_BOOTSTRAP", "KAFKA_BOOTSTRAP")}
    env.update(extra)
    return env


@pytest.mark.kafka
def test_kafka_up_is_idempotent_and_down_leaves_no_process(tmp_path: Path) -> None:
    state = tmp_path / "kafka-state"
    env = env_without_broker()
    cli = ("kafka", "--state-dir", str(state))
    try:
        before = rtmsflow(*cli, "status", env=env)
        assert before.returncode == 1 and before.stdout == ""

        t0 = time.monotonic()
        up = rtmsflow(*cli, "up", env=env)
        assert up.returncode == 0, up.stderr
        bootstrap = up.stdout.strip()
        assert bootstrap.startswith("127.0.0.1:") and up.stdout == bootstrap + "\n"
        print(f"kafka up took {time.monotonic() - t0:.1f} s")
        assert probe(bootstrap)
        pid = int((state / "broker.pid").read_text())
        config_mtime = (state / "server.properties").stat().st_mtime_ns

        # The environment variable names the same state dir as --state-dir.
        status = rtmsflow("kafka", "status", env=env_without_broker(RTMSFLOW_KAFKA_STATE=str(state)))
        assert status.returncode == 0 and status.stdout.strip() == bootstrap

        again = rtmsflow(*cli, "up", env=env)
        assert again.returncode == 0 and again.stdout.strip() == bootstrap
        assert "already running" in again.stderr
        assert int((state / "broker.pid").read_text()) == pid
        assert (state / "server.properties").stat().st_mtime_ns == config_mtime
        assert not process_gone(pid)

        # With no address configured, clients find the broker through its state dir.
        topic_env = env_without_broker(RTMSFLOW_KAFKA_STATE=str(state), RTMSFLOW_TOPIC_PREFIX="kept.")
        assert rtmsflow("topics", "create", env=topic_env).returncode == 0

        down = rtmsflow(*cli, "down", env=env)
        assert down.returncode == 0, down.stderr
        assert f"pid {pid}" in down.stderr
        assert process_gone(pid)
        assert not (state / "broker.pid").exists()
        assert rtmsflow(*cli, "status", env=env).returncode == 1
        twice = rtmsflow(*cli, "down", env=env)
        assert twice.returncode == 0 and "not running" in twice.stderr

        # A restart keeps the address (its ports are free) and the data.
        restarted = rtmsflow(*cli, "up", env=env)
        assert restarted.returncode == 0 and restarted.stdout.strip() == bootstrap
        listed = rtmsflow("topics", "list", env=topic_env)
        assert listed.returncode == 0
        assert len(listed.stdout.splitlines()) == len(ALL_TOPICS)
    finally:
        rtmsflow(*cli, "down", env=env)
    assert not (state / "broker.pid").exists()


def test_status_and_stop_ignore_a_pid_file_naming_another_process(tmp_path: Path) -> None:
    broker = LocalKafka(tmp_path)
    (tmp_path / "broker.pid").write_text(f"{os.getpid()}\n")
    (tmp_path / "broker.port").write_text("9\n")
    assert broker.pid() is None
    assert broker.status() is None
    assert broker.stop() is False  # and this test process is still alive to assert it
    assert not (tmp_path / "broker.pid").exists()


def test_stop_kills_a_broker_that_ignores_sigterm(tmp_path: Path) -> None:
    """A stand-in process that ignores SIGTERM and names the state dir's server.properties, like
    the broker does, is killed after the grace period."""
    broker = LocalKafka(tmp_path)
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(600)"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(broker.properties_file)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "up\n"
        broker.pid_file.write_text(f"{proc.pid}\n")
        assert broker.pid() == proc.pid
        t0 = time.monotonic()
        assert broker.stop(timeout=1.0) is True
        # the grace period was waited out (a slow machine only lengthens it), then SIGKILL; the
        # 60 s bound only catches a stop that hangs
        assert 1.0 <= time.monotonic() - t0 < 60
        assert proc.wait(timeout=60) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_verify_libs_detects_a_changed_missing_or_extra_jar(tmp_path: Path) -> None:
    broker = LocalKafka(tmp_path / "state", cache_dir=tmp_path / "cache")
    libs = broker.libs_dir
    libs.mkdir(parents=True)
    assert not broker.verify_libs()  # no manifest
    for name in ("a.jar", "b.jar"):
        (libs / name).write_bytes(name.encode() * 1000)
    write_manifest(libs)
    assert broker.verify_libs()

    (libs / "a.jar").write_bytes(b"tampered")
    assert not broker.verify_libs()
    (libs / "a.jar").write_bytes(b"a.jar" * 1000)
    assert broker.verify_libs()

    (libs / "extra.jar").write_bytes(b"x")
    assert not broker.verify_libs()
    (libs / "extra.jar").unlink()
    (libs / "b.jar").unlink()
    assert not broker.verify_libs()
    (libs / MANIFEST).write_text("{not json")
    assert not broker.verify_libs()


def test_fetch_replaces_a_corrupted_jar_cache(tmp_path: Path) -> None:
    broker = LocalKafka(tmp_path / "state", cache_dir=tmp_path / "cache")
    first = broker.fetch()
    assert first.downloaded and first.jars > 40 and broker.verify_libs()
    assert (tmp_path / "cache" / "pom.xml").exists()
    assert broker.fetch().downloaded is False  # verified, not fetched again

    jar = next(broker.libs_dir.glob("kafka_2.13-*.jar"))
    jar.write_bytes(b"truncated")
    repaired = broker.fetch()
    assert repaired.downloaded and broker.verify_libs()
    assert jar.stat().st_size > 1000


@pytest.fixture
async def prefix_cleanup(settings: Settings) -> AsyncIterator[Settings]:
    """Delete every topic under the test's prefix afterwards, whoever created it."""
    yield settings
    await delete_topics(settings, await list_topics(settings))


@pytest.mark.kafka
def test_topics_create_twice_changes_nothing_the_second_time(
    prefix_cleanup: Settings, settings_env: dict[str, str]
) -> None:
    settings = prefix_cleanup
    first = rtmsflow("topics", "create", env=settings_env)
    assert first.returncode == 0, first.stderr
    names = sorted(spec.full_name(settings.topic_prefix) for spec in ALL_TOPICS)
    assert (
        sorted(line.split()[1] for line in first.stdout.splitlines() if line.startswith("created")) == names
    )

    second = rtmsflow("topics", "create", env=settings_env)
    assert second.returncode == 0, second.stderr
    assert "created" not in second.stdout
    assert sorted(line.split()[1] for line in second.stdout.splitlines()) == names
    assert "nothing to do" in second.stderr

    listed = rtmsflow("topics", "list", env=settings_env)
    assert listed.stdout.splitlines() == [f"{name}\t{settings.partitions}" for name in names]


@pytest.mark.kafka
async def test_topics_create_refuses_an_existing_topic_with_another_partition_count(
    prefix_cleanup: Settings, settings_env: dict[str, str]
) -> None:
    settings = prefix_cleanup
    await ensure_topics(dataclasses.replace(settings, partitions=3), [RAW_AUDIO])

    with pytest.raises(TopicMismatch) as caught:
        await ensure_topics(settings)
    assert caught.value.mismatches == {RAW_AUDIO.full_name(settings.topic_prefix): (settings.partitions, 3)}
    # Nothing was created next to the mismatching topic.
    assert list(await list_topics(settings)) == [RAW_AUDIO.full_name(settings.topic_prefix)]

    result = await _run_cli("topics", "create", env=settings_env)
    assert result.returncode == 1
    assert (
        f"{RAW_AUDIO.full_name(settings.topic_prefix)}: has 3 partitions, expected {settings.partitions}"
        in result.stderr
    )


async def _run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`rtmsflow(...)` off the event loop, for async tests."""
    return await asyncio.to_thread(rtmsflow, *args, env=env)
