"""`rtmsflow emulator ...`: play Zoom to a local ingest.

`serve` runs an RTMS server and prints its URL; `meeting` also posts a signed `rtms_started`, plays the
meeting once a client connects, stops it and posts `rtms_stopped` (anything else reported as Zoom would).
One JSON line per meeting on stdout; exit 1 on an unacknowledged webhook, no client, or a wrong end."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import signal
import ssl
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import click

from emulator.clips import RESOLUTIONS
from emulator.faults import Faults
from emulator.media import MeetingSpec, SyntheticMeeting
from emulator.server import RTMSServer, StreamHandle
from emulator.streams import Lifecycle
from emulator.webhooks import PRODUCTS, Delivery, Product, StreamIdentity, WebhookSender
from rtms_protocol import StopReason
from rtmsflow.cli import env_help, load_settings
from rtmsflow.logs import get_logger

log = get_logger(__name__)

_LAST_MS_BEFORE_END = 40  # stop a little before the final leave events when the reason is not 6


def _ssl_context(certfile: str | None, keyfile: str | None) -> ssl.SSLContext | None:
    if not certfile:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(certfile, keyfile)
    return ctx


def _server(options: dict[str, Any]) -> RTMSServer:
    """The RTMS server the `serve` and `meeting` commands' options describe."""
    return RTMSServer(
        options["host"],
        options["port"],
        client_id=options["client_id"],
        client_secret=options["client_secret"],
        ssl_context=_ssl_context(options["certfile"], options["keyfile"]),
    )


def _emit(record: dict[str, Any]) -> None:
    click.echo(json.dumps(record, separators=(",", ":")))


def _credentials(options: dict[str, Any], *names: str) -> None:
    """Fill the credentials not given as options from the settings; a usage error if any is missing."""
    settings = load_settings()
    from_settings = {
        "client_id": settings.zoom_client_id,
        "client_secret": settings.zoom_client_secret,
        "secret_token": settings.zoom_webhook_secret,
    }
    for n in names:
        options[n] = options.get(n) or from_settings[n]
    missing = [n for n in names if not options.get(n)]
    if missing:
        env = {
            "client_id": "ZM_RTMS_CLIENT",
            "client_secret": "ZM_RTMS_SECRET",
            "secret_token": "ZOOM_SECRET_TOKEN",
        }
        flags = ", ".join(f"--{n.replace('_', '-')} (or ${env[n]})" for n in missing)
        raise click.UsageError(f"missing credentials: {flags}")


class _Stop:
    """Set by SIGINT/SIGTERM: end every stream now (with the requested reason) and exit."""

    def __init__(self) -> None:
        self.event = asyncio.Event()

    @contextlib.contextmanager
    def installed(self) -> Any:
        loop = asyncio.get_running_loop()
        added = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.event.set)
                added.append(sig)
        try:
            yield self
        finally:
            for sig in added:
                loop.remove_signal_handler(sig)


@click.group()
def emulator() -> None:
    """A Zoom RTMS emulator: RTMS server, signed webhooks and synthetic meetings."""


_credential_options: list[Callable[[Any], Any]] = [
    click.option("--client-id", help=env_help("App client id.", "zoom_client_id", "none")),
    click.option("--client-secret", help=env_help("App client secret.", "zoom_client_secret", "none")),
]
_server_options: list[Callable[[Any], Any]] = [
    click.option(
        "--host", default="127.0.0.1", show_default=True, help="Address to bind (keep it loopback)."
    ),
    click.option("--port", default=0, show_default=True, help="Port (0: any free port)."),
    click.option(
        "--certfile", type=click.Path(exists=True, dir_okay=False), help="TLS certificate: serve wss://."
    ),
    click.option(
        "--keyfile", type=click.Path(exists=True, dir_okay=False), help="TLS key (if not in --certfile)."
    ),
]


def _apply(options: list[Callable[[Any], Any]]) -> Callable[[Any], Any]:
    def decorate(f: Any) -> Any:
        for option in reversed(options):
            f = option(f)
        return f

    return decorate


@emulator.command()
@_apply(_credential_options + _server_options)
def serve(**options: Any) -> None:
    """Run an RTMS server until interrupted and print its URL (streams are added by `meeting`
    or by tests that embed RTMSServer)."""
    _credentials(options, "client_id", "client_secret")

    async def run() -> None:
        server = _server(options)
        async with server:
            _emit({"rtms_url": server.url})
            sys.stdout.flush()
            with _Stop().installed() as stop:
                await stop.event.wait()

    asyncio.run(run())


@dataclass
class _Played:
    """What happened to one meeting, reported as its JSON line."""

    index: int
    identity: StreamIdentity
    handle: StreamHandle
    webhooks: list[asyncio.Task[Any]] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)
    reason: int | None = None
    problem: str | None = None

    def report(self) -> dict[str, Any]:
        stats = self.handle.stats
        return {
            "meeting": self.index,
            "instance_id": self.identity.instance_id,
            "rtms_stream_id": self.identity.rtms_stream_id,
            "server_urls": self.identity.server_urls,
            "stop_reason": self.reason,
            "webhooks": [
                {"event": d.event, "delivered": d.delivered, "attempts": len(d.attempts)}
                for d in self.deliveries
            ],
            "sent": stats.sent,
            "bytes_sent": stats.bytes_sent,
            "late_frames": stats.late,
            "ok": self.problem is None,
            **({"problem": self.problem} if self.problem else {}),
        }


@emulator.command()
@click.option("--participants", default=3, show_default=True, type=click.IntRange(1, 500))
@click.option("--duration", default=60.0, show_default=True, type=click.FloatRange(min=0.1), help="Seconds.")
@click.option("--video/--no-video", default=True, show_default=True, help="Participants' cameras send video.")
@click.option("--video-resolution", default="720p", show_default=True, type=click.Choice(list(RESOLUTIONS)),
              help="Camera resolution (a client's handshake may ask for another).")  # fmt: skip
@click.option("--video-fps", default=30, show_default=True, type=click.IntRange(1, 30),
              help="Camera frame rate (a client's handshake may ask for another).")  # fmt: skip
@click.option("--deskshare/--no-deskshare", default=False, show_default=True, help="Host shares a screen.")
@click.option(
    "--camera-off",
    is_flag=True,
    help="The last participant's camera is off from 40 % to 60 % of the meeting.",
)
@click.option(
    "--individual-videos",
    default=1,
    show_default=True,
    type=click.IntRange(1, 4),
    help="Cameras served at once with individual video (1: Zoom's V1, a new subscription replaces the last).",
)
@click.option("--transcript/--no-transcript", default=True, show_default=True, help="Zoom sends transcripts.")
@click.option("--chat/--no-chat", default=True, show_default=True,
              help="A chat script (public and private messages) for clients that ask for chat.")  # fmt: skip
@click.option("--webhook", "webhook_url", required=True, help="Where to POST signed webhooks.")
@click.option(
    "--speed", default=1.0, show_default=True, type=click.FloatRange(min=0.01), help="Media time / real time."
)
@click.option("--seed", default=1, show_default=True, help="Meeting i uses seed + i.")
@click.option(
    "--meetings", default=1, show_default=True, type=click.IntRange(1, 10_000), help="Meetings at once."
)
@click.option(
    "--stagger", default=0.0, show_default=True, type=click.FloatRange(min=0), help="Seconds between starts."
)
@click.option("--product", default="meeting", show_default=True, type=click.Choice(PRODUCTS))
@click.option(
    "--stop-reason", default=int(StopReason.MEETING_ENDED), show_default=True, type=click.IntRange(0, 26)
)
@click.option(
    "--meeting-uuid", help="Instance id (meeting i > 0 gets '-i' appended); default: random, Zoom-like."
)
@click.option(
    "--stream-id", help="rtms_stream_id (meeting i > 0 gets '-i' appended); default: random 32 hex."
)
@click.option("--secret-token", help=env_help("Webhook secret token.", "zoom_webhook_secret", "none"))
@click.option("--validate-url/--no-validate-url", default=False, help="Send endpoint.url_validation first.")
@click.option("--started-twice", is_flag=True, help="Deliver each rtms_started twice (a Zoom retry).")
@click.option("--connect-timeout", default=60.0, show_default=True, help="Seconds to wait for a client.")
@click.option(
    "--preroll-ms",
    default=0,
    show_default=True,
    type=click.IntRange(0, 60_000),
    help="Zoom's pre-connect buffering: media stamped this long before the connect (and the webhook), sent at once.",
)
@click.option(
    "--first-packet-event/--no-first-packet-event",
    default=True,
    show_default=True,
    help="Send RTMS's first-packet timestamp event (EVENT_UPDATE 1).",
)
@click.option(
    "--webhook-timeout", default=3.0, show_default=True, help="Seconds before a delivery counts as lost."
)
@_apply(_credential_options + _server_options)
def meeting(**options: Any) -> None:
    """Play synthetic meetings to a webhook endpoint: rtms_started, media, rtms_stopped."""
    _credentials(options, "client_id", "client_secret", "secret_token")
    video = options["video_resolution"] if options["video"] else None
    try:
        specs = [
            MeetingSpec(
                seed=options["seed"] + i,
                participants=options["participants"],
                duration_s=options["duration"],
                video=video,
                fps=options["video_fps"],
                transcripts=options["transcript"],
                deskshare=options["deskshare"],
                chat=options["chat"],
                camera_off=options["camera_off"],
            )
            for i in range(options["meetings"])
        ]
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    ok = asyncio.run(_play_meetings(specs, options))
    if not ok:
        sys.exit(1)


def _identity(options: dict[str, Any], index: int) -> StreamIdentity:
    product: Product = options["product"]
    identity = StreamIdentity.generate(product, "", seed=None, index=index)
    suffix = "" if index == 0 else f"-{index}"
    if options["meeting_uuid"]:
        identity = dataclasses.replace(identity, instance_id=options["meeting_uuid"] + suffix)
    if options["stream_id"]:
        identity = dataclasses.replace(identity, rtms_stream_id=options["stream_id"] + suffix)
    return identity


async def _play_meetings(specs: list[MeetingSpec], options: dict[str, Any]) -> bool:
    meetings = [SyntheticMeeting(spec) for spec in specs]

    # Encode or load the clips before anything is announced (blocking work, off the event loop).
    def prepare() -> None:
        for m in meetings:
            m.prepare()

    await asyncio.to_thread(prepare)
    server = _server(options)
    hooks = WebhookSender(
        options["webhook_url"], options["secret_token"], timeout_s=options["webhook_timeout"]
    )
    async with server, hooks:
        _emit({"rtms_url": server.url, "webhook": options["webhook_url"], "meetings": len(meetings)})
        if options["validate_url"]:
            await hooks.validate_url()
        with _Stop().installed() as stop:
            plays = []
            for i, m in enumerate(meetings):
                if i and options["stagger"]:
                    await asyncio.sleep(options["stagger"])
                plays.append(asyncio.create_task(_play_one(i, m, server, hooks, options, stop.event)))
            results = await asyncio.gather(*plays)
    for played in results:
        _emit(played.report())
    return all(p.problem is None for p in results)


async def _play_one(
    index: int,
    meeting: SyntheticMeeting,
    server: RTMSServer,
    hooks: WebhookSender,
    options: dict[str, Any],
    interrupted: asyncio.Event,
) -> _Played:
    identity = _identity(options, index)
    handle = server.add_stream(
        identity.instance_id,
        identity.rtms_stream_id,
        meeting,
        Faults(individual_videos=options["individual_videos"]),
        speed=options["speed"],
        preroll_ms=options["preroll_ms"],
        first_packet_event=options["first_packet_event"],
    )
    identity = dataclasses.replace(identity, server_urls=handle.server_urls)
    played = _Played(index, identity, handle)

    def on_lifecycle(change: Lifecycle) -> None:
        # Zoom tells the app about every change of a stream by webhook.
        nonlocal identity
        if change.kind == "interrupted":
            coro: Any = hooks.rtms_interrupted(identity)
        elif change.kind == "failover":
            identity = dataclasses.replace(identity, server_urls=change.server_urls)
            played.identity = identity
            coro = hooks.rtms_started(identity)
        elif change.kind == "stopped":
            coro = hooks.rtms_stopped(identity, change.stop_reason or 0)
        else:
            return
        played.webhooks.append(asyncio.create_task(coro))

    handle.on_lifecycle(on_lifecycle)
    wanted = options["stop_reason"]
    try:
        started = await hooks.rtms_started(identity, twice=options["started_twice"])
        played.deliveries.extend(started)
        if not started[0].delivered:
            played.problem = "rtms_started was not acknowledged"
            handle.stop(StopReason.CONNECTION_TIMEOUT)
        else:
            await _until_played(played, meeting, options, interrupted)
        played.reason = await handle.wait_done()
        if played.problem is None and played.reason != wanted:
            played.problem = f"stream ended with stop reason {played.reason}, not {wanted}"
    finally:
        if played.reason is None and handle.state != "terminated":
            handle.stop(wanted)
        for task in played.webhooks:
            result = await task
            played.deliveries.extend(result if isinstance(result, list) else [result])
    undelivered = [d.event for d in played.deliveries if not d.delivered]
    if undelivered and played.problem is None:
        played.problem = f"not acknowledged: {', '.join(undelivered)}"
    return played


async def _until_played(
    played: _Played, meeting: SyntheticMeeting, options: dict[str, Any], interrupted: asyncio.Event
) -> None:
    """Wait for a client, then for the meeting to play; end it with the requested reason."""
    handle, wanted = played.handle, options["stop_reason"]
    stop_wait = asyncio.create_task(interrupted.wait())
    try:
        active = asyncio.create_task(handle.wait_active())
        await asyncio.wait(
            [active, stop_wait], timeout=options["connect_timeout"], return_when="FIRST_COMPLETED"
        )
        if not active.done():
            active.cancel()
            if not stop_wait.done():
                played.problem = f"no client connected within {options['connect_timeout']} s"
                handle.stop(StopReason.CONNECTION_TIMEOUT)
            else:
                handle.stop(wanted)
            return
        if wanted == StopReason.MEETING_ENDED:
            finished: asyncio.Future[Any] = asyncio.ensure_future(handle.wait_done())
        else:  # end the stream just before the meeting's own end (participants do not leave)
            finished = asyncio.ensure_future(
                handle.wait_media(max(0, meeting.duration_ms - _LAST_MS_BEFORE_END))
            )
        await asyncio.wait([finished, stop_wait], return_when="FIRST_COMPLETED")
        if not finished.done():
            finished.cancel()
        elif finished.exception() is not None:  # terminated before the end (timeouts, ...)
            return
        handle.stop(wanted)  # no-op when already terminated
    finally:
        stop_wait.cancel()
