"""`rtmsflow sink media|transcripts`, `rtmsflow replay`, `rtmsflow prune`, `rtmsflow forget`."""

from __future__ import annotations

import asyncio
from typing import Any

import click

from rtmsflow.cli import announce_start, env_help, load_settings, metrics_port_option
from rtmsflow.logs import get_logger
from rtmsflow.settings import Settings

log = get_logger(__name__)


_idle_option = click.option(
    "--idle-timeout-s",
    type=click.FloatRange(min=0),
    default=None,
    help=env_help("Finalize a stream without a marker after this long idle.", "sink_idle_timeout_s"),
)
_data_dir_option = click.option(
    "--data-dir",
    default=None,
    help=env_help("Where the sinks write their files: a directory or s3://bucket/prefix.", "data_dir"),
)


@click.group()
def sink() -> None:
    """Write the ordered topics into files: recordings and transcripts."""


def _sink_command(name: str, group_setting: str, what: str, summary: str) -> click.Command:
    """`rtmsflow sink <name>`: the live sink `sinks.kinds.SINKS[name]` in the consumer group of the
    setting `group_setting`; `what` names it in the start-up log line, `summary` is its help."""

    @click.option("--group", default=None, help=env_help("Consumer group.", group_setting))
    @metrics_port_option()
    @_idle_option
    @_data_dir_option
    def command(
        group: str | None, metrics_port: int | None, idle_timeout_s: float | None, data_dir: str | None
    ) -> None:
        from rtmsflow.service import run_stage, run_until_signal
        from sinks.kinds import SINKS

        settings = load_settings(
            **{group_setting: group},
            metrics_port=metrics_port,
            sink_idle_timeout_s=idle_timeout_s,
            data_dir=data_dir,
        )
        service = SINKS[name].service(settings, getattr(settings, group_setting))
        port = announce_start(log, what, settings, service.group_id)
        run_until_signal(run_stage(service, settings.http_host, port))

    command.__doc__ = summary
    return sink.command(name)(command)


media = _sink_command(
    "media",
    "sink_media_group",
    "media sink",
    "rtms.audio + rtms.video -> audio.wav, audio-<participant>.wav, recording.mp4, deskshare.mp4.",
)
transcripts = _sink_command(
    "transcripts",
    "sink_transcripts_group",
    "transcript sink",
    "rtms.transcript -> transcript.txt (live), .jsonl, .vtt, .srt.",
)


def _ms(text: str | None) -> int | None:
    """An ISO date or date-time (UTC unless it says otherwise) as ms since the epoch."""
    if text is None:
        return None
    import datetime as dt

    value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return int(value.timestamp() * 1000)


@click.command()
@click.option("--meeting", "meeting_uuid", default=None, help="Meeting UUID to rebuild.")
@click.option("--all", "all_meetings", is_flag=True, help="Every meeting of the rtms.meetings index.")
@click.option("--since", default=None, help="With --all: streams started at or after (ISO date/time, UTC).")
@click.option("--until", default=None, help="With --all: streams started before (ISO date/time, UTC).")
@click.option("--out", required=True, help="Directory (or s3://bucket/prefix) to write the files under.")
@click.option("--no-index", is_flag=True, help="Scan the meeting's partition instead of reading the index.")
def replay(
    meeting_uuid: str | None,
    all_meetings: bool,
    since: str | None,
    until: str | None,
    out: str,
    no_index: bool,
) -> None:
    """Rebuild meetings' files from the ordered topics (group-less: the live sinks are not touched)."""
    from pathlib import Path

    from sinks.bucket import parse_target
    from sinks.replay import describe, replay_meeting, replay_window

    if bool(meeting_uuid) == all_meetings:
        raise click.UsageError("give either --meeting <uuid> or --all")
    settings = load_settings()
    target: Path | str = out if parse_target(out) is not None else Path(out)

    async def main() -> list[str]:
        if meeting_uuid:
            with click.progressbar(
                length=1, label=f"replay {meeting_uuid}", file=click.get_text_stream("stderr")
            ) as bar:

                def total(n: int) -> None:
                    bar.length = max(n, 1)

                result = await replay_meeting(
                    settings,
                    meeting_uuid,
                    target,
                    use_index=not no_index,
                    progress=bar.update,
                    on_total=total,
                )
            return describe([result])
        with click.progressbar(length=0, label="replay", file=click.get_text_stream("stderr")) as bar:
            results = await replay_window(
                settings, target, _ms(since), _ms(until), progress=bar.update,
                on_meeting=lambda m: setattr(bar, "label", f"replay {m}"),
            )  # fmt: skip
        return describe(results)

    for line in asyncio.run(main()):
        click.echo(line)


@click.command()
@click.option("--older-than", required=True, help="Age of a stream's stop past which it goes: 30d, 12h, ...")
@click.option("--yes", is_flag=True, help="Delete (without it: list what would be deleted).")
@_data_dir_option
def prune(older_than: str, yes: bool, data_dir: str | None) -> None:
    """Delete finalized streams' files older than an age (dry run by default)."""
    from pathlib import Path

    from sinks.retention import OutsideDataDir, find_expired, parse_age, remove_tree, today_ms

    settings = load_settings()
    where = data_dir or settings.data_dir
    try:
        age = parse_age(older_than)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--older-than") from exc
    bucket = _bucket(settings, where)
    if bucket is not None:
        _prune_bucket(bucket, age, today_ms(), yes)
        return
    root = Path(where)
    expired = find_expired(root, age, today_ms())
    for stream in expired:
        click.echo(f"{'deleting' if yes else 'would delete'} {stream.path} ({stream.bytes} bytes)")
        if yes:
            try:
                remove_tree(stream.path, root)
            except OutsideDataDir as exc:
                click.echo(f"skipped: {exc}", err=True)
    click.echo(
        f"{len(expired)} stream(s), {sum(s.bytes for s in expired)} bytes{'' if yes else ' (dry run: --yes deletes)'}"
    )


@click.command()
@click.option("--meeting", "meeting_uuid", required=True, help="Meeting UUID to forget.")
@click.option("--yes", is_flag=True, help="Delete and write tombstones (without it: list what would go).")
@_data_dir_option
def forget(meeting_uuid: str, yes: bool, data_dir: str | None) -> None:
    """Delete a meeting's files and tombstone it in the compacted topics (rtms.meetings, rtms.sessions)."""
    from pathlib import Path

    from sinks.retention import OutsideDataDir, meeting_dirs, remove_tree

    settings = load_settings()
    where = data_dir or settings.data_dir
    bucket = _bucket(settings, where)
    root = Path(where)
    if bucket is not None:
        from sinks.bucket_retention import meeting_prefixes, remove_prefix

        dirs: list[Any] = [f"{bucket.target.uri}/{p}" for p in meeting_prefixes(bucket, meeting_uuid)]
    else:
        dirs = meeting_dirs(root, meeting_uuid)
    keys = asyncio.run(_session_keys(settings, meeting_uuid))
    for path in dirs:
        click.echo(f"{'deleting' if yes else 'would delete'} {path}")
    click.echo(f"{'tombstoning' if yes else 'would tombstone'} rtms.meetings key {meeting_uuid}")
    for key in keys:
        click.echo(f"{'tombstoning' if yes else 'would tombstone'} rtms.sessions key {key.decode()}")
    if not yes:
        click.echo("dry run: --yes deletes and writes the tombstones")
        return
    for path in dirs:
        if bucket is not None:
            remove_prefix(bucket, str(path)[len(bucket.target.uri) + 1 :])
            continue
        try:
            remove_tree(path, root)
        except OutsideDataDir as exc:
            click.echo(f"skipped: {exc}", err=True)
    asyncio.run(_tombstones(settings, meeting_uuid, keys))


def _bucket(settings: Settings, where: str) -> Any:
    """The `sinks.bucket.Bucket` of an `s3://` data dir, or None for a directory."""
    from sinks.bucket import Bucket, S3Options, parse_target

    target = parse_target(where)
    return None if target is None else Bucket(target, S3Options.from_settings(settings))


def _prune_bucket(bucket: Any, age_ms: int, now_ms: int, yes: bool) -> None:
    from sinks.bucket_retention import find_expired, remove_prefix

    expired = find_expired(bucket, age_ms, now_ms)
    for stream in expired:
        where = f"{bucket.target.uri}/{stream.prefix}"
        click.echo(f"{'deleting' if yes else 'would delete'} {where} ({stream.bytes} bytes)")
        if yes:
            remove_prefix(bucket, stream.prefix)
    click.echo(
        f"{len(expired)} stream(s), {sum(s.bytes for s in expired)} bytes{'' if yes else ' (dry run: --yes deletes)'}"
    )


async def _session_keys(settings: Settings, meeting_uuid: str) -> list[bytes]:
    """The `rtms.sessions` keys (`<meeting>|<stream>`) of the meeting in its partition, sorted."""
    from aiokafka import TopicPartition

    from schemas.topics import SESSIONS, partition_for
    from sinks.replay import groupless_consumer, partition_count, read_ranges

    topic = SESSIONS.full_name(settings.topic_prefix)
    prefix = f"{meeting_uuid}|".encode()
    keys: set[bytes] = set()
    consumer = groupless_consumer(settings)
    await consumer.start()
    try:
        tp = TopicPartition(topic, partition_for(meeting_uuid, await partition_count(consumer, topic)))
        await read_ranges(
            consumer,
            {tp: None},
            lambda _tp, r: keys.add(r.key) if r.key and r.key.startswith(prefix) else None,
        )
    finally:
        await consumer.stop()
    return sorted(keys)


async def _tombstones(settings: Settings, meeting_uuid: str, session_keys: list[bytes]) -> None:
    """Null-valued records for the meeting's keys in the compacted topics, in its partition."""
    from rtmsflow.kafka_client import make_producer
    from schemas.topics import MEETINGS, SESSIONS, partition_for

    producer = make_producer(settings)
    await producer.start()
    try:
        for spec, keys in ((MEETINGS, [meeting_uuid.encode()]), (SESSIONS, session_keys)):
            topic = spec.full_name(settings.topic_prefix)
            partition = partition_for(meeting_uuid, len(await producer.partitions_for(topic)))
            for key in keys:
                await producer.send_and_wait(topic, value=None, key=key, partition=partition)
    finally:
        await producer.stop()
