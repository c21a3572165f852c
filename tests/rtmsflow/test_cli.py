"""One coherent CLI: every setting through `Settings`, a bad one a one-line error with exit status 2
on every subcommand, `--help` everywhere, and one spelling per option across the stages.

The commands are walked from the root group, so a command added later is covered without editing
this file. They run in-process through click's runner (nothing is started: each invocation stops
at a usage error right after the point under test), plus one real process for the entry point."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import rtmsflow.cli
from rtmsflow.cli import BadSetting, load_settings, main, with_options
from rtmsflow.settings import VIDEO_RESOLUTIONS, SettingError, Settings

ROOT = Path(__file__).resolve().parents[2]

# A valid value, different from the default, for every variable Settings reads (aliases included),
# and the field value it must give.
SAMPLES: dict[str, tuple[str, object]] = {
    "RTMSFLOW_KAFKA_BOOTSTRAP": ("broker-a:9092", "broker-a:9092"),
    "KAFKA_BOOTSTRAP": ("broker-b:9092", "broker-b:9092"),
    "RTMSFLOW_SCHEMA_REGISTRY_URL": ("http://registry:8081", "http://registry:8081"),
    "RTMSFLOW_PARTITIONS": ("12", 12),
    "RTMSFLOW_RETENTION_DAYS": ("7", 7),
    "RTMSFLOW_REPLICATION": ("3", 3),
    "RTMSFLOW_TOPIC_PREFIX": ("t.", "t."),
    "RTMSFLOW_DATA_DIR": ("/srv/data", "/srv/data"),
    "RTMSFLOW_S3_ENDPOINT": ("http://minio:9000", "http://minio:9000"),
    "AWS_ENDPOINT_URL_S3": ("http://s3-a:9000", "http://s3-a:9000"),
    "AWS_ENDPOINT_URL": ("http://s3-b:9000", "http://s3-b:9000"),
    "RTMSFLOW_S3_REGION": ("eu-west-1", "eu-west-1"),
    "AWS_REGION": ("eu-west-2", "eu-west-2"),
    "AWS_DEFAULT_REGION": ("eu-west-3", "eu-west-3"),
    "RTMSFLOW_S3_ACCESS_KEY_ID": ("key-a", "key-a"),
    "AWS_ACCESS_KEY_ID": ("key-b", "key-b"),
    "RTMSFLOW_S3_SECRET_ACCESS_KEY": ("secret-a", "secret-a"),
    "AWS_SECRET_ACCESS_KEY": ("secret-b", "secret-b"),
    "RTMSFLOW_S3_ADDRESSING": ("path", "path"),
    "RTMSFLOW_S3_PART_MB": ("16", 16),
    "RTMSFLOW_SPOOL_DIR": ("/srv/spool", "/srv/spool"),
    "RTMSFLOW_LOG_LEVEL": ("debug", "DEBUG"),
    "RTMSFLOW_CACHE": ("/srv/cache", "/srv/cache"),
    "RTMSFLOW_KAFKA_STATE": ("/srv/kafka", "/srv/kafka"),
    "RTMSFLOW_DEMO_KEEP_BROKER": ("1", True),
    "ZM_RTMS_CLIENT": ("client-id", "client-id"),
    "ZM_RTMS_SECRET": ("client-secret", "client-secret"),
    "ZOOM_SECRET_TOKEN": ("token-a", "token-a"),
    "ZM_RTMS_WEBHOOK_SECRET": ("token-b", "token-b"),
    "RTMSFLOW_HTTP_HOST": ("0.0.0.0", "0.0.0.0"),
    "RTMSFLOW_HTTP_PORT": ("9090", 9090),
    "RTMSFLOW_WEBHOOK_PATH": ("/zoom/events", "/zoom/events"),
    "RTMSFLOW_WEBHOOK_MAX_SKEW_S": ("60", 60),
    "RTMSFLOW_WEBHOOK_HEADER_TIMEOUT_S": ("2.5", 2.5),
    "RTMSFLOW_ALLOWED_HOSTS": ("a.example, b.example", ("a.example", "b.example")),
    "RTMSFLOW_ALLOW_INSECURE_WS": ("yes", True),
    "RTMSFLOW_METRICS_PORT": ("9100", 9100),
    "RTMSFLOW_INGEST_GROUP": ("ingest-b", "ingest-b"),
    "RTMSFLOW_INGEST_SESSION_TIMEOUT_MS": ("20000", 20000),
    "RTMSFLOW_INGEST_BACKEND": ("sdk", "sdk"),
    "RTMSFLOW_INGEST_END_STREAMS_ON_STOP": ("true", True),
    "RTMSFLOW_RTMS_BACKOFF_BASE_S": ("0.5", 0.5),
    "RTMSFLOW_RTMS_AUDIO_MULTI": ("on", True),
    "RTMSFLOW_RTMS_VIDEO": ("0", False),
    "RTMSFLOW_RTMS_VIDEO_RESOLUTION": ("1080p", "1080p"),
    "RTMSFLOW_RTMS_VIDEO_FPS": ("10", 10),
    "RTMSFLOW_RTMS_VIDEO_MODE": ("individual", "individual"),
    "RTMSFLOW_RTMS_VIDEO_PARTICIPANTS": ("3", 3),
    "RTMSFLOW_RTMS_DESKSHARE": ("1", True),
    "RTMSFLOW_RTMS_TRANSCRIPT": ("off", False),
    "RTMSFLOW_RTMS_CHAT": ("off", False),
    "RTMSFLOW_CHAT_PRIVATE": ("keep", "keep"),
    "RTMSFLOW_TRANSCRIPT_LANGUAGE": ("9", 9),
    "RTMSFLOW_SDK_HOME": ("/srv/sdk", "/srv/sdk"),
    "RTMSFLOW_SDK_THREADS": ("2", 2),
    "RTMSFLOW_SDK_POLL_MS": ("5", 5.0),
    "RTMSFLOW_SDK_PYTHON": ("/usr/bin/python3", "/usr/bin/python3"),
    "RTMSFLOW_PROCESS_GROUP": ("proc-b", "proc-b"),
    "RTMSFLOW_PROCESS_SESSION_TIMEOUT_MS": ("15000", 15000),
    "RTMSFLOW_REORDER_WINDOW_MS": ("800", 800),
    "RTMSFLOW_DEDUPE_HORIZON_MS": ("9000", 9000),
    "RTMSFLOW_PROCESS_COMMIT_INTERVAL_MS": ("2500", 2500),
    "RTMSFLOW_MEETINGS_INDEX_INTERVAL_MS": ("1000", 1000),
    "RTMSFLOW_SINK_MEDIA_GROUP": ("media-b", "media-b"),
    "RTMSFLOW_SINK_TRANSCRIPTS_GROUP": ("tr-b", "tr-b"),
    "RTMSFLOW_SINK_IDLE_TIMEOUT_S": ("30", 30.0),
    "RTMSFLOW_SINK_CHAT_IN_TRANSCRIPT": ("yes", True),
    "RTMSFLOW_SINK_BUFFER_BYTES": ("1048576", 1048576),
}

MEDIA_OPTIONS = {
    *("--video", "--no-video", "--video-resolution", "--video-fps"),
    *("--deskshare", "--no-deskshare", "--transcript", "--no-transcript"),
}
OLD_SPELLINGS = {"--fps", "--transcripts", "--no-transcripts", "--web-port"}


def field_of(env_name: str) -> str:
    return next(name for name, envs in Settings.env_names().items() if env_name in envs)


def commands(
    group: click.Group, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    """Every command under `group` with its path, groups included, depth first."""
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None, f"{' '.join((*path, name))} is listed but not built"
        yield (*path, name), command
        if isinstance(command, click.Group):
            yield from commands(command, (*path, name))


ALL = [(path, cmd) for path, cmd in commands(main)]
LEAVES = [path for path, cmd in ALL if not isinstance(cmd, click.Group)]


def option_names(command: click.Command) -> set[str]:
    return {o for p in command.params if isinstance(p, click.Option) for o in (*p.opts, *p.secondary_opts)}


def command(*path: str) -> click.Command:
    return dict(ALL)[path]


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    # The root command sets up JSON logging on stderr; in-process that would hold on to the runner's
    # captured stream after the test, so it is left out here (the real process test keeps it).
    monkeypatch.setattr(rtmsflow.cli, "setup_logging", lambda level: None)
    return CliRunner()


# -- Settings ------------------------------------------------------------------------------------


def test_settings_read_every_variable_they_declare() -> None:
    declared = {env for envs in Settings.env_names().values() for env in envs}
    assert declared == set(SAMPLES), "a variable without a sample here, or a sample of no variable"
    defaults = Settings()
    for env_name, (raw, expected) in SAMPLES.items():
        name = field_of(env_name)
        assert getattr(defaults, name) != expected, f"{env_name}: the sample must differ from the default"
        assert getattr(Settings.from_env({env_name: raw}), name) == expected, env_name


def test_first_named_variable_wins_over_its_alias() -> None:
    both = Settings.from_env({"RTMSFLOW_KAFKA_BOOTSTRAP": "new:1", "KAFKA_BOOTSTRAP": "old:1"})
    assert both.kafka_bootstrap == "new:1"
    assert Settings.from_env({"KAFKA_BOOTSTRAP": "old:1"}).kafka_bootstrap == "old:1"


def test_an_empty_variable_counts_as_unset() -> None:
    assert Settings.from_env({"RTMSFLOW_PARTITIONS": "", "RTMSFLOW_DATA_DIR": ""}) == Settings()
    assert Settings.from_env({"RTMSFLOW_PARTITIONS": "6"}) != Settings()


@pytest.mark.parametrize(
    ("env_name", "raw", "says"),
    [
        ("RTMSFLOW_PARTITIONS", "abc", "must be an integer"),
        ("RTMSFLOW_PARTITIONS", "0", "at least 1"),
        ("RTMSFLOW_METRICS_PORT", "70000", "between 0 and 65535"),
        ("RTMSFLOW_RTMS_VIDEO_FPS", "31", "between 1 and 30"),
        ("RTMSFLOW_RTMS_VIDEO_MODE", "gallery", "one of active, individual"),
        ("RTMSFLOW_RTMS_VIDEO_PARTICIPANTS", "0", "between 1 and 16"),
        ("RTMSFLOW_RTMS_VIDEO_RESOLUTION", "hd", "one of 360p, 720p, 1080p, 1440p"),
        ("RTMSFLOW_LOG_LEVEL", "LOUD", "one of DEBUG"),
        ("RTMSFLOW_ALLOW_INSECURE_WS", "maybe", "true or false"),
        ("RTMSFLOW_SINK_IDLE_TIMEOUT_S", "soon", "must be a number"),
        ("RTMSFLOW_CHAT_PRIVATE", "everything", "one of drop, keep, unaddressed"),
        ("RTMSFLOW_WEBHOOK_PATH", "webhook", "starting with '/'"),
        ("RTMSFLOW_INGEST_BACKEND", "grpc", "one of websocket, sdk"),
    ],
)
def test_a_bad_value_is_an_error_naming_its_variable(env_name: str, raw: str, says: str) -> None:
    with pytest.raises(SettingError) as caught:
        Settings.from_env({env_name: raw})
    assert (
        caught.value.env == env_name and str(caught.value).startswith(env_name) and says in str(caught.value)
    )


def test_describe_masks_secrets_and_shows_the_rest() -> None:
    described = Settings.from_env(
        {"ZM_RTMS_CLIENT": "id-1", "ZM_RTMS_SECRET": "s3cret", "ZOOM_SECRET_TOKEN": "t0ken"}
    ).describe()
    assert described["zoom_client_secret"] == "***" and described["zoom_webhook_secret"] == "***"
    assert described["zoom_client_id"] == "id-1"
    assert set(described) == {f.name for f in dataclasses.fields(Settings)}
    assert Settings().describe()["zoom_client_secret"] == ""  # nothing to mask when unset


def test_an_option_given_replaces_its_setting_and_one_not_given_keeps_it() -> None:
    settings = Settings(ingest_group="from-env", rtms_video=True)
    out = with_options(settings, ingest_group="from-option", rtms_video=None)
    assert out.ingest_group == "from-option" and out.rtms_video is True


def test_load_settings_turns_a_bad_variable_into_exit_status_2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RTMSFLOW_REPLICATION", "two")
    with pytest.raises(BadSetting) as caught:
        load_settings()
    assert caught.value.exit_code == 2 and "RTMSFLOW_REPLICATION" in caught.value.message
    monkeypatch.setenv("RTMSFLOW_REPLICATION", "2")
    assert load_settings().replication == 2


def test_only_settings_reads_the_environment() -> None:
    """Every `os.environ`/`getenv`/click `envvar=` in the packages is in settings.py, or one of the
    places that pass the environment on to a child process or read the platform's JAVA_HOME."""
    allowed = {
        "rtmsflow/settings.py",
        "rtmsflow/stack.py",  # stage_env: the children's environment
        "rtmsflow/jvm.py",  # JAVA_HOME, as every Java tool reads it
        "ingest/sdk_pool.py",  # HostHandle.start: the SDK host child's environment
        "sinks/mux_process.py",  # MuxProcess.open: the muxer child's environment
    }
    pattern = re.compile(r"os\.environ|getenv\(|envvar=")
    readers = {
        str(path.relative_to(ROOT))
        for package in ("rtmsflow", "ingest", "processors", "sinks", "emulator", "schemas")
        for path in (ROOT / package).rglob("*.py")
        if pattern.search(path.read_text())
    }
    assert "rtmsflow/settings.py" in readers  # the pattern finds a reader where there is one
    assert readers <= allowed, sorted(readers - allowed)


# -- the commands --------------------------------------------------------------------------------


@pytest.mark.parametrize("path", LEAVES, ids=" ".join)
def test_a_bad_setting_stops_every_command_with_one_line_and_exit_2(
    runner: CliRunner, path: tuple[str, ...]
) -> None:
    # `--no-such-option` makes the command stop right after the point under test: with a bad setting
    # the root refuses first; with a good one the command gets as far as parsing its options.
    bad = runner.invoke(main, [*path, "--no-such-option"], env={"RTMSFLOW_PARTITIONS": "abc"})
    assert bad.exit_code == 2, bad.output
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and "RTMSFLOW_PARTITIONS" in lines[0] and "'abc'" in lines[0], bad.stderr
    assert bad.exception is None or isinstance(bad.exception, SystemExit)

    good = runner.invoke(main, [*path, "--no-such-option"], env={"RTMSFLOW_PARTITIONS": "24"})
    assert "No such option: --no-such-option" in good.stderr, good.stderr
    assert "RTMSFLOW_PARTITIONS" not in good.stderr


def test_the_installed_entry_point_exits_2_with_one_line_not_a_traceback() -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(ROOT), "RTMSFLOW_RTMS_VIDEO_FPS": "sixty"}
    bad = subprocess.run([sys.executable, "-m", "rtmsflow.cli", "ingest", "worker"], env=env,
                         capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert bad.returncode == 2, bad.stderr
    assert bad.stderr.strip().splitlines() == [
        "Error: RTMSFLOW_RTMS_VIDEO_FPS must be an integer, got 'sixty' (see rtmsflow/settings.py)"
    ]
    good = subprocess.run([sys.executable, "-m", "rtmsflow.cli", "ingest", "worker", "--video-fps", "99"],
                          env={**env, "RTMSFLOW_RTMS_VIDEO_FPS": "10"},
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert good.returncode == 2 and "'--video-fps'" in good.stderr and "RTMSFLOW_" not in good.stderr


@pytest.mark.parametrize("path", [(), *(p for p, _ in ALL)], ids=lambda p: " ".join(p) or "rtmsflow")
def test_help_works_everywhere_even_with_a_bad_setting_and_lists_only_built_commands(
    runner: CliRunner, path: tuple[str, ...]
) -> None:
    result = runner.invoke(main, [*path, "--help"], env={"RTMSFLOW_PARTITIONS": "abc"}, prog_name="rtmsflow")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"Usage: rtmsflow {' '.join(path)}".rstrip())
    assert not re.search(r"not (built|implemented)|next wave|coming soon|TODO", result.stdout, re.I)
    _, _, listing = result.stdout.partition("Commands:")
    listed = re.findall(r"^  (\S+)  ", listing, re.M)
    target = command(*path) if path else main
    if isinstance(target, click.Group):
        assert listed and sorted(listed) == target.list_commands(click.Context(target))
        for name in listed:
            assert target.get_command(click.Context(target), name) is not None


def test_emulator_demo_and_ingest_worker_spell_the_media_options_alike() -> None:
    emulator, demo, worker = command("emulator", "meeting"), command("demo"), command("ingest", "worker")
    for cmd in (emulator, demo, worker):
        assert MEDIA_OPTIONS <= option_names(cmd), (cmd.name, MEDIA_OPTIONS - option_names(cmd))

    def resolutions(cmd: click.Command) -> list[str]:
        (param,) = [p for p in cmd.params if p.name == "video_resolution"]
        assert isinstance(param.type, click.Choice)
        return [str(c) for c in param.type.choices]

    from emulator.clips import RESOLUTIONS

    assert resolutions(emulator) == resolutions(demo) == list(RESOLUTIONS)
    assert resolutions(worker) == list(VIDEO_RESOLUTIONS) and set(RESOLUTIONS) < set(VIDEO_RESOLUTIONS)


def test_no_command_keeps_an_old_spelling_and_every_stage_names_its_port_and_group_alike() -> None:
    for path, cmd in ALL:
        assert not option_names(cmd) & OLD_SPELLINGS, (path, option_names(cmd) & OLD_SPELLINGS)
    for path in (("ingest", "worker"), ("process",), ("sink", "media"), ("sink", "transcripts")):
        assert {"--metrics-port", "--group"} <= option_names(command(*path)), path
    assert {"--host", "--port", "--path"} <= option_names(command("ingest", "http"))
