"""Topic administration: create rtmsflow's topics idempotently, list them, delete a run's topics.

`ensure_topics` is what `rtmsflow topics create`, the test fixtures and any stage that wants its
topics to exist call. It creates what is missing with the spec's configs and the settings'
partition count and replication, leaves what exists alone, and refuses to pass over an existing
topic whose partition count differs: co-partitioning (DESIGN.md) depends on that count, so a
mismatch is an error the operator must resolve, not something to paper over.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import for_code

from rtmsflow.logs import get_logger
from rtmsflow.settings import Settings
from schemas.topics import ALL_TOPICS, TopicSpec

log = get_logger(__name__)

_TOPIC_ALREADY_EXISTS = 36
_UNKNOWN_TOPIC = 3


class TopicError(RuntimeError):
    """A topic could not be created or does not match its spec."""


class TopicMismatch(TopicError):
    """Existing topics whose partition count differs from the one rtmsflow needs.

    `mismatches` maps topic name -> (expected partitions, actual partitions)."""

    def __init__(self, mismatches: dict[str, tuple[int, int]]) -> None:
        self.mismatches = mismatches
        lines = [
            f"  {name}: has {actual} partitions, expected {expected}"
            for name, (expected, actual) in sorted(mismatches.items())
        ]
        super().__init__(
            "existing topics have a different partition count; records of one meeting would no longer "
            "land in the same partition on every topic. Recreate them (data is lost) or set "
            "RTMSFLOW_PARTITIONS to their count:\n" + "\n".join(lines)
        )


@dataclass(frozen=True)
class TopicsReport:
    """What `ensure_topics` did: topics it created and topics that already existed as specified."""

    created: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.created)


@asynccontextmanager
async def admin_client(settings: Settings) -> AsyncIterator[AIOKafkaAdminClient]:
    """A started `AIOKafkaAdminClient` for the settings' broker, closed on exit."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap(), client_id="rtmsflow-admin")
    await admin.start()
    try:
        yield admin
    finally:
        await admin.close()


async def partition_counts(admin: AIOKafkaAdminClient, names: Iterable[str] | None = None) -> dict[str, int]:
    """Partition count of each existing topic among `names` (all topics if None)."""
    wanted = list(names) if names is not None else None
    if wanted == []:
        return {}
    described = await admin.describe_topics(wanted)
    return {
        t["topic"]: len(t["partitions"])
        for t in described
        if t["error_code"] == 0 and t["topic"] and not t.get("is_internal", False)
    }


async def ensure_topics(
    settings: Settings,
    specs: Sequence[TopicSpec] = ALL_TOPICS,
    prefix: str | None = None,
    *,
    timeout_s: float = 30.0,
) -> TopicsReport:
    """Create each topic of `specs` (named with `prefix`, default `settings.topic_prefix`) that does
    not exist, with `settings.partitions`, `settings.replication` and the spec's configs, and wait
    until every partition has a leader. Existing topics are left unchanged.

    Raises `TopicMismatch` -- before creating anything -- if an existing topic has another partition
    count, and `TopicError` if the broker refuses to create one."""
    prefix = settings.topic_prefix if prefix is None else prefix
    by_name = {spec.full_name(prefix): spec for spec in specs}
    async with admin_client(settings) as admin:
        existing = await partition_counts(admin, by_name)
        mismatches = {
            name: (settings.partitions, count)
            for name, count in existing.items()
            if count != settings.partitions
        }
        if mismatches:
            raise TopicMismatch(mismatches)
        missing = [name for name in by_name if name not in existing]
        created: list[str] = []
        if missing:
            new_topics = [
                NewTopic(
                    name=name,
                    num_partitions=settings.partitions,
                    replication_factor=settings.replication,
                    topic_configs=dict(by_name[name].configs),
                )
                for name in missing
            ]
            response = await admin.create_topics(new_topics, timeout_ms=int(timeout_s * 1000))
            errors: list[str] = []
            for item in response.topic_errors:
                name, code = item[0], item[1]
                message = item[2] if len(item) > 2 else None
                if code == 0:
                    created.append(name)
                elif code == _TOPIC_ALREADY_EXISTS:
                    pass  # created concurrently by someone else; checked below like the others
                else:
                    errors.append(f"  {name}: {for_code(code).__name__}: {message or ''}".rstrip(": "))
            if errors:
                raise TopicError("the broker refused to create topics:\n" + "\n".join(errors))
            await _wait_for_leaders(admin, missing, settings.partitions, timeout_s)
            raced = await partition_counts(admin, [n for n in missing if n not in created])
            bad = {n: (settings.partitions, c) for n, c in raced.items() if c != settings.partitions}
            if bad:
                raise TopicMismatch(bad)
        report = TopicsReport(
            created=sorted(created), existing=sorted(n for n in by_name if n not in created)
        )
    if report.created:
        log.info("topics created", extra={"topics": report.created, "partitions": settings.partitions})
    return report


async def _wait_for_leaders(
    admin: AIOKafkaAdminClient, names: list[str], partitions: int, timeout_s: float
) -> None:
    """Wait until the broker's metadata shows every partition of `names` with a leader, so a
    producer or consumer started right after `ensure_topics` does not see an unknown topic."""
    deadline = time.monotonic() + timeout_s
    pending = list(names)
    while pending:
        described = await admin.describe_topics(pending)
        ready = {
            t["topic"]
            for t in described
            if t["error_code"] == 0
            and len(t["partitions"]) == partitions
            and all(p["leader"] >= 0 and p["error_code"] == 0 for p in t["partitions"])
        }
        pending = [n for n in pending if n not in ready]
        if not pending:
            return
        if time.monotonic() > deadline:
            raise TopicError(f"topics have no leader after {timeout_s:.0f} s: {', '.join(pending)}")
        await asyncio.sleep(0.1)


async def list_topics(settings: Settings, prefix: str | None = None) -> dict[str, int]:
    """Every topic on the broker whose name starts with `prefix` (default `settings.topic_prefix`),
    with its partition count, sorted by name."""
    prefix = settings.topic_prefix if prefix is None else prefix
    async with admin_client(settings) as admin:
        names = [n for n in await admin.list_topics() if n.startswith(prefix)]
        counts = await partition_counts(admin, names)
    return dict(sorted(counts.items()))


async def delete_topics(settings: Settings, names: Iterable[str], *, timeout_s: float = 30.0) -> list[str]:
    """Delete the named topics that exist; returns those deleted. Unknown names are ignored."""
    wanted = list(names)
    if not wanted:
        return []
    async with admin_client(settings) as admin:
        present = set(await admin.list_topics())
        doomed = [n for n in wanted if n in present]
        if not doomed:
            return []
        response = await admin.delete_topics(doomed, timeout_ms=int(timeout_s * 1000))
        deleted: list[str] = []
        errors: list[str] = []
        for item in response.topic_error_codes:
            name, code = item[0], item[1]
            if code in (0, _UNKNOWN_TOPIC):
                deleted.append(name)
            else:
                errors.append(f"  {name}: {for_code(code).__name__}")
        if errors:
            raise TopicError("the broker refused to delete topics:\n" + "\n".join(errors))
    return sorted(deleted)
