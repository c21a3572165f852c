"""`rtmsflow topics ...`: create and list rtmsflow's topics (the table is `schemas/topics.py`)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Coroutine
from typing import Any, TypeVar

import click
from aiokafka.errors import KafkaError

from rtmsflow.admin import TopicError, ensure_topics, list_topics
from rtmsflow.settings import Settings

T = TypeVar("T")


def _settings(prefix: str | None, partitions: int | None, replication: int | None) -> Settings:
    """The environment's settings with the command-line options on top."""
    settings = Settings.from_env()
    return dataclasses.replace(
        settings,
        topic_prefix=settings.topic_prefix if prefix is None else prefix,
        partitions=partitions or settings.partitions,
        replication=replication or settings.replication,
    )


def _run(coro: Coroutine[Any, Any, T], settings: Settings) -> T:
    """Run an admin coroutine, turning "no broker" into a message instead of a traceback."""
    try:
        return asyncio.run(coro)
    except KafkaError as exc:
        where = settings.kafka_bootstrap or "the local broker"
        raise click.ClickException(f"cannot talk to Kafka at {where}: {exc!r}") from exc
    except (TopicError, RuntimeError) as exc:
        raise click.ClickException(str(exc)) from exc


_prefix_option = click.option(
    "--prefix", default=None, help="Topic name prefix [env RTMSFLOW_TOPIC_PREFIX; default none]."
)


@click.group()
def topics() -> None:
    """rtmsflow's Kafka topics, on the broker of RTMSFLOW_KAFKA_BOOTSTRAP (or `rtmsflow kafka up`)."""


@topics.command()
@_prefix_option
@click.option(
    "--partitions", type=click.IntRange(min=1), default=None, help="[env RTMSFLOW_PARTITIONS; default 24]"
)
@click.option(
    "--replication", type=click.IntRange(min=1), default=None, help="[env RTMSFLOW_REPLICATION; default 1]"
)
def create(prefix: str | None, partitions: int | None, replication: int | None) -> None:
    """Create every rtmsflow topic that does not exist yet and bring the configs of existing ones up
    to date (retention [env RTMSFLOW_RETENTION_DAYS; default 30], cleanup policy...: see
    `schemas/topics.py`); their data is kept.

    Prints one line a topic: `created`, `updated` (with each config's old -> new value) or
    `existing` (already as specified). Fails (exit 1), changing nothing, if an existing topic has a
    different partition count; a different replication factor is reported, not changed."""
    settings = _settings(prefix, partitions, replication)
    report = _run(ensure_topics(settings), settings)
    for name in report.created:
        click.echo(f"created   {name}")
    for name, changes in report.updated.items():
        click.echo(f"updated   {name}  " + "; ".join(str(change) for change in changes))
    for name in report.existing:
        click.echo(f"existing  {name}")
    for name, why in report.unchanged_differences.items():
        click.echo(f"warning: {name}: {why}", err=True)
    if report.changed:
        click.echo(
            f"{len(report.created)} created, {len(report.updated)} updated, {len(report.existing)} already "
            f"as specified ({settings.partitions} partitions, replication {settings.replication}, "
            f"retention {settings.retention_days} days)",
            err=True,
        )
    else:
        click.echo(f"nothing to do: all {len(report.existing)} topics already exist as specified", err=True)


@topics.command("list")
@_prefix_option
def list_(prefix: str | None) -> None:
    """List the broker's topics (with the prefix, if one is set) and their partition counts."""
    settings = _settings(prefix, None, None)
    counts = _run(list_topics(settings), settings)
    for name, partitions in counts.items():
        click.echo(f"{name}\t{partitions}")
