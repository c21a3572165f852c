"""`rtmsflow kafka ...`: the local single-node Kafka broker (see `rtmsflow.broker`).

`up` prints only the bootstrap address on stdout, so `export RTMSFLOW_KAFKA_BOOTSTRAP=$(rtmsflow
kafka up)` works; everything else goes to stderr.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from rtmsflow.broker import KAFKA_VERSION, BrokerError, LocalKafka
from rtmsflow.cli import env_help
from rtmsflow.jvm import JavaNotFound


@click.group()
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help=env_help(
        "The broker's data, config, pid and log files.", "kafka_state_dir", "<cache>/kafka/<version>/state"
    ),
)
@click.pass_context
def kafka(ctx: click.Context, state_dir: Path | None) -> None:
    """A real single-node Kafka (KRaft) on 127.0.0.1, from jars fetched once from Maven Central."""
    ctx.obj = LocalKafka(state_dir)


@kafka.command()
@click.option("--timeout", default=90.0, show_default=True, help="Seconds to wait for the broker to answer.")
@click.pass_obj
def up(broker: LocalKafka, timeout: float) -> None:
    """Start the broker (if it is not running) and print its bootstrap address."""
    running = broker.status()
    if running is not None:
        click.echo(f"Kafka already running at {running} (pid {broker.pid()})", err=True)
        click.echo(running)
        return
    t0 = time.monotonic()
    try:
        bootstrap = broker.start(timeout=timeout)
    except (BrokerError, JavaNotFound) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(
        f"Kafka {KAFKA_VERSION} started at {bootstrap} in {time.monotonic() - t0:.1f} s "
        f"(pid {broker.pid()}, state {broker.state_dir}, log {broker.log_file})",
        err=True,
    )
    click.echo(bootstrap)


@kafka.command()
@click.pass_obj
def down(broker: LocalKafka) -> None:
    """Stop the broker (SIGTERM, then SIGKILL if it does not exit). Its data is kept."""
    pid = broker.pid()
    try:
        stopped = broker.stop()
    except (BrokerError, JavaNotFound) as exc:
        raise click.ClickException(str(exc)) from exc
    if stopped:
        click.echo(f"Kafka stopped (pid {pid})", err=True)
    else:
        click.echo(f"Kafka was not running (state {broker.state_dir})", err=True)


@kafka.command()
@click.pass_obj
def status(broker: LocalKafka) -> None:
    """Print the bootstrap address and exit 0 if the broker runs and answers, else exit 1."""
    running = broker.status()
    if running is None:
        pid = broker.pid()
        detail = f"pid {pid} alive but not answering" if pid else "not running"
        click.echo(f"Kafka {detail} (state {broker.state_dir})", err=True)
        sys.exit(1)
    click.echo(running)


@kafka.command()
@click.option("--force", is_flag=True, help="Fetch again even if the cached jars verify.")
@click.pass_obj
def fetch(broker: LocalKafka, force: bool) -> None:
    """Fetch the Kafka jars into the cache (once; verified against their SHA-256 manifest)."""
    try:
        result = broker.fetch(force=force)
    except (BrokerError, JavaNotFound) as exc:
        raise click.ClickException(str(exc)) from exc
    what = "fetched" if result.downloaded else "verified"
    click.echo(
        f"Kafka {KAFKA_VERSION}: {result.jars} jars {what} in {result.seconds:.1f} s ({result.libs})",
        err=True,
    )
