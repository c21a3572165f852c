"""`rtmsflow up`: the whole stack as supervised local processes, against a real Zoom app.

Zoom's credentials from the environment, the webhook endpoint on `RTMSFLOW_HTTP_HOST:PORT`, the configured
broker or a local one (stopped on exit only if `up` started it); stages run under `rtmsflow.stack`, the
live view on a terminal, logs to files under `--logs`."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
import time
from pathlib import Path

import click

from rtmsflow.cli import load_settings
from rtmsflow.live import LiveWatch, Screen, split_streams, summary_lines, wants_live
from rtmsflow.logs import get_logger, setup_logging
from rtmsflow.output import open_output
from rtmsflow.stack import Supervisor, free_ports, stack_stages, stage_env
from rtmsflow.view import LiveView

log = get_logger(__name__)


@click.command()
@click.option("--logs", "log_dir", default="logs", show_default=True, type=click.Path(file_okay=False),
              help="Where each stage's log (and up.log, this command's own) goes.")  # fmt: skip
@click.option("--drain-timeout", "drain_timeout_s", default=120.0, show_default=True,
              help="Seconds each stage may take to drain on Ctrl-C before it is stopped anyway.")  # fmt: skip
@click.option("--plain", is_flag=True,
              help="Plain lines instead of the live view (the default when output is not a terminal).")  # fmt: skip
@click.option("--verbose", is_flag=True, help="Also stream every stage's JSON log lines.")
def up(log_dir: str, drain_timeout_s: float, plain: bool, verbose: bool) -> None:
    """Run every stage against a real Zoom app until Ctrl-C, then stop them in order."""
    from rtmsflow.admin import ensure_topics
    from rtmsflow.broker import LocalKafka

    settings = load_settings()
    missing = [
        name
        for name, value in (
            ("ZM_RTMS_CLIENT", settings.zoom_client_id),
            ("ZM_RTMS_SECRET", settings.zoom_client_secret),
            ("ZOOM_SECRET_TOKEN", settings.zoom_webhook_secret),
        )
        if not value
    ]
    if missing:
        raise click.ClickException(f"set {', '.join(missing)} (the Zoom app's credentials) first")
    logs = Path(log_dir).resolve()
    setup_logging(settings.log_level, logs / "up.log")  # the terminal gets the view instead
    metrics = free_ports(4) if not settings.metrics_port else [settings.metrics_port + i for i in range(4)]
    stages = stack_stages(settings, [settings.http_port, *metrics])
    view = LiveView([s.name for s in stages])
    screen = Screen(view, f"rtmsflow up: logs in {logs}", live=wants_live(plain))
    started_wall = time.time()
    output = open_output(settings)  # the data dir: a directory or a bucket
    ours: LocalKafka | None = None
    with screen:
        bootstrap = settings.kafka_bootstrap
        if not bootstrap:
            local = LocalKafka()
            bootstrap = local.status() or ""
            if not bootstrap:
                bootstrap, ours = local.start(), local
        settings = dataclasses.replace(settings, kafka_bootstrap=bootstrap)
        screen.echo(f"Kafka broker: {bootstrap}" + (" (started here)" if ours else ""))
        asyncio.run(ensure_topics(settings))
        sup = Supervisor(settings, stages, stage_env(settings), logs)
        watch = LiveWatch(settings, view, screen, sup, output, started_wall, verbose=verbose)

        async def run() -> None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            await watch.start()
            watching = asyncio.create_task(watch.run())
            try:
                await sup.start()
                for stage in sup.stages:
                    screen.echo(f"  {stage.spec.name:<17} pid {stage.proc.pid if stage.proc else '-':<8} "
                                f"http://127.0.0.1:{stage.spec.port}/health")  # fmt: skip
                screen.echo(
                    f"webhook endpoint: http://{settings.http_host}:{settings.http_port}/webhook; Ctrl-C stops"
                )
                watcher = asyncio.create_task(sup.watch())
                stopper = asyncio.create_task(stop.wait())
                await asyncio.wait([watcher, stopper], return_when=asyncio.FIRST_COMPLETED)
                watcher.cancel()
                stopper.cancel()
                if sup.failed:
                    screen.echo(f"giving up: {sup.failed}")
            finally:
                screen.echo("stopping: webhooks, then ingest (streams closed with their markers), then "
                            "processors and sinks once drained")  # fmt: skip
                await sup.stop(drain_timeout_s=drain_timeout_s)
                watching.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watching
                await watch.scrape_once()

        try:
            asyncio.run(run())
        finally:
            if ours is not None:
                with contextlib.suppress(Exception):
                    ours.stop()
    mine, leftovers = split_streams(output.describe(started_wall), view.this_run)
    click.echo(
        f"\nthis run: {len(view.this_run)} meeting(s) started, {len(mine)} stream directory(ies) written"
    )
    for line in summary_lines(mine, leftovers):
        click.echo(line)
    click.echo(f"logs: {logs}")
    if sup.failed:
        raise SystemExit(1)
