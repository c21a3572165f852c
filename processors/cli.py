"""`rtmsflow process`: run the processors (raw topics -> ordered topics) as a Faust worker."""

from __future__ import annotations

import click

from rtmsflow.cli import announce_start, env_help, load_settings, metrics_port_option, session_timeout_option
from rtmsflow.logs import get_logger

log = get_logger(__name__)


@click.command()
@click.option(
    "--group",
    default=None,
    help=env_help("Consumer group of the processors (its restart state is kept per group).", "process_group"),
)
@session_timeout_option("partitions", "process_session_timeout_ms")
@metrics_port_option("/health, /metrics and /meetings/{uuid}")
def process(group: str | None, session_timeout_ms: int | None, metrics_port: int | None) -> None:
    """Reorder, de-duplicate, mark gaps and assemble utterances: rtms.raw.* -> rtms.audio/video/
    transcript/events, rtms.late, rtms.deadletter and the rtms.meetings index."""
    import faust

    from processors.app import logging_config, make_app

    settings = load_settings(
        process_group=group,
        process_session_timeout_ms=session_timeout_ms,
        metrics_port=metrics_port,
    )
    port = announce_start(log, "processors", settings, settings.process_group)
    app = make_app(settings, web_port=port)
    worker = faust.Worker(
        app,
        loglevel=settings.log_level,
        logging_config=logging_config(settings.log_level),
        quiet=True,
        redirect_stdouts=False,
        override_logging=True,
    )
    worker.execute_from_commandline()
