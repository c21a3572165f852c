"""`rtmsflow process`: run the processors (raw topics -> ordered topics) as a Faust worker."""

from __future__ import annotations

import click

from rtmsflow.logs import get_logger
from rtmsflow.settings import Settings

log = get_logger(__name__)


@click.command()
@click.option("--group", default="rtmsflow-processors", envvar="RTMSFLOW_PROCESS_GROUP", show_default=True,
              help="Consumer group of the processors (its restart state is kept per group).")  # fmt: skip
@click.option("--web-port", type=int, default=None,
              help="Port of /health, /metrics and /meetings/{uuid} (default RTMSFLOW_METRICS_PORT, else 6066).")  # fmt: skip
@click.option("--session-timeout-ms", type=int, default=10_000, envvar="RTMSFLOW_PROCESS_SESSION_TIMEOUT_MS",
              show_default=True, help="Group session timeout: how soon a dead worker's partitions move.")  # fmt: skip
def process(group: str, web_port: int | None, session_timeout_ms: int) -> None:
    """Reorder, de-duplicate, mark gaps and assemble utterances: rtms.raw.* -> rtms.audio/video/
    transcript/events, rtms.late, rtms.deadletter and the rtms.meetings index."""
    import faust

    from processors.app import logging_config, make_app

    settings = Settings.from_env()
    port = web_port if web_port is not None else (settings.metrics_port or 6066)
    log.info("processors starting", extra={"settings": settings.describe(), "group": group, "web_port": port})
    app = make_app(settings, group=group, web_port=port, session_timeout_ms=session_timeout_ms)
    worker = faust.Worker(
        app,
        loglevel=settings.log_level,
        logging_config=logging_config(settings.log_level),
        quiet=True,
        redirect_stdouts=False,
        override_logging=True,
    )
    worker.execute_from_commandline()
