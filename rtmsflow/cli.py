"""`rtmsflow <stage> ...`: one command-line entry point for every stage.

Each stage keeps its own click group in its package (`ingest/cli.py`, `emulator/cli.py`, ...);
this module only registers them, importing each lazily so that `rtmsflow kafka up` does not pay
for PyAV or Faust.
"""

from __future__ import annotations

import importlib

import click

from rtmsflow.logs import setup_logging
from rtmsflow.settings import Settings

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


class LazyGroup(click.Group):
    """A click group whose subcommands are imported only when used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_SUBCOMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = _SUBCOMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        return getattr(importlib.import_module(module_name), attr)


@click.group(cls=LazyGroup)
@click.version_option(package_name="rtmsflow")
def main() -> None:
    """rtmsflow: Zoom Realtime Media Streams into Kafka, recordings and transcripts."""
    setup_logging(Settings.from_env().log_level)


if __name__ == "__main__":  # pragma: no cover
    main()
