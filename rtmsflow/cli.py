"""`rtmsflow <stage> ...`: one command-line entry point for every stage.

Registers each stage's own click group lazily (so `rtmsflow kafka up` does not import PyAV or Faust) and
reads the settings once first: a bad environment variable is one line naming it, exit status 2."""

from __future__ import annotations

import dataclasses
import importlib
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import click

from rtmsflow.jvm import free_port
from rtmsflow.logs import setup_logging
from rtmsflow.settings import SettingError, Settings

# name -> "module:attribute" of a click command or group
_SUBCOMMANDS: dict[str, str] = {
    "kafka": "rtmsflow.broker_cli:kafka",
    "topics": "rtmsflow.topics_cli:topics",
    "emulator": "emulator.cli:emulator",
    "ingest": "ingest.cli:ingest",
    "demo": "rtmsflow.demo:demo",
    "process": "processors.cli:process",
    "sink": "sinks.cli:sink",
    "replay": "sinks.cli:replay",
    "prune": "sinks.cli:prune",
    "forget": "sinks.cli:forget",
    "tail": "sinks.tail:tail",
    "up": "rtmsflow.up:up",
}


class BadSetting(click.ClickException):
    """A setting that cannot be used: click prints `Error: <message>` and exits with status 2, the
    status click gives a bad command-line option (a setting is an option given another way)."""

    exit_code = 2


def load_settings(**options: Any) -> Settings:
    """`Settings.from_env()` for a command, with each of its `options` that was given in place of its
    setting (`with_options`): a bad variable becomes `BadSetting` (one line, exit 2)."""
    try:
        settings = Settings.from_env()
    except SettingError as exc:
        raise BadSetting(f"{exc} (see rtmsflow/settings.py)") from None
    return with_options(settings, **options)


def with_options(settings: Settings, **options: Any) -> Settings:
    """`settings` with each command-line option that was given (not None) in place of its setting."""
    return dataclasses.replace(settings, **{k: v for k, v in options.items() if v is not None})


def env_help(text: str, setting: str, default: str | None = None) -> str:
    """An option's help that names the setting it overrides: `text [env VAR; default D]`."""
    env = Settings.env_names()[setting][0]
    if default is None:
        value = getattr(Settings(), setting)
        default = ("on" if value else "off") if isinstance(value, bool) else str(value)
    return f"{text} [env {env}; default {default}]"


_Command = TypeVar("_Command", bound=Callable[..., Any])


def metrics_port_option(served: str = "/health and /metrics") -> Callable[[_Command], _Command]:
    """A stage's `--metrics-port` option (the `metrics_port` setting); `served` names its endpoints."""
    return click.option(
        "--metrics-port",
        type=click.IntRange(0, 65535),
        default=None,
        help=env_help(f"Port of {served} (0 = a free port, logged at start).", "metrics_port"),
    )


def session_timeout_option(moved: str, setting: str) -> Callable[[_Command], _Command]:
    """A consumer group member's `--session-timeout-ms` option; `moved` names what goes to the other
    members when one dies."""
    return click.option(
        "--session-timeout-ms",
        type=click.IntRange(min=1),
        default=None,
        help=env_help(f"Group session timeout: how soon a dead worker's {moved} move.", setting),
    )


def serving_port(port: int) -> int:
    """The port a stage serves /health and /metrics on: `port`, or a free one when it is 0 (so every
    stage serves them; the start-up log line names the port)."""
    return port or free_port()


def announce_start(log: logging.Logger, what: str, settings: Settings, group: str) -> int:
    """Log a stage's start-up line (`<what> starting`: its settings, secrets masked, its consumer
    group and metrics port) and return that port (`serving_port`)."""
    port = serving_port(settings.metrics_port)
    log.info(
        "%s starting", what, extra={"settings": settings.describe(), "group": group, "metrics_port": port}
    )
    return port


class LazyGroup(click.Group):
    """A click group whose subcommands are imported only when used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_SUBCOMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = _SUBCOMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        command: click.Command = getattr(importlib.import_module(module_name), attr)
        return command

    def invoke(self, ctx: click.Context) -> object:
        # The group's callback runs before the subcommand parses its arguments; note a help
        # request here, while they are still at hand.
        ctx.meta["rtmsflow.help"] = "--help" in ctx.args
        return super().invoke(ctx)


@click.group(
    cls=LazyGroup,
    epilog="Settings are environment variables (RTMSFLOW_*, and Zoom's ZM_RTMS_CLIENT, ZM_RTMS_SECRET, "
    "ZOOM_SECRET_TOKEN), each with its default in rtmsflow/settings.py; every stage logs them at start "
    "(secrets masked), and a command-line option overrides its variable. A bad value stops any "
    "command with exit status 2.",
)
@click.version_option(package_name="rtmsflow")
@click.pass_context
def main(ctx: click.Context) -> None:
    """rtmsflow: Zoom Realtime Media Streams into Kafka, recordings and transcripts."""
    if ctx.meta.get("rtmsflow.help"):  # `rtmsflow <command> --help` shows help whatever the environment
        return
    setup_logging(load_settings().log_level)


if __name__ == "__main__":  # pragma: no cover
    main()
