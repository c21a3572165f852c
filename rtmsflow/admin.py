"""Topic administration: create rtmsflow's topics idempotently, list them, delete a run's topics.

`ensure_topics` creates missing topics, brings existing topics' configs up to date (keeping an operator's
own) and refuses a topic whose partition count differs: co-partitioning (docs/DESIGN.md) depends on it.
Why AlterConfigs and what it replaces: docs/DECISIONS.md, "Runtime"."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import for_code

from rtmsflow.kafka_client import bootstrap_servers
from rtmsflow.logs import get_logger
from rtmsflow.settings import Settings
from schemas.topics import ALL_TOPICS, TopicSpec

log = get_logger(__name__)

_TOPIC_ALREADY_EXISTS = 36
_UNKNOWN_TOPIC = 3
# DescribeConfigs v1+ `config_source`: the value is set on the topic itself (not inherited from the
# broker's static/dynamic config or Kafka's default).
_TOPIC_CONFIG_SOURCE = 1


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
class ConfigChange:
    """One config `ensure_topics` set on an existing topic: its effective value before (None when
    the broker described none) and the value it has now."""

    name: str
    old: str | None
    new: str

    def __str__(self) -> str:
        return f"{self.name} {self.old if self.old is not None else '(unset)'} -> {self.new}"


@dataclass(frozen=True)
class DescribedConfig:
    """A topic config as the broker describes it: the effective value, and whether it is set on
    the topic itself (True) or inherited from the broker or Kafka's default (False)."""

    value: str | None
    on_topic: bool


@dataclass(frozen=True)
class ConfigUpdate:
    """What bringing one topic's configs up to date takes: the changes, for the report, and the
    whole set of topic-level configs to send with AlterConfigs (which replaces the set)."""

    changes: tuple[ConfigChange, ...]
    configs: dict[str, str]


def plan_config_update(current: Mapping[str, DescribedConfig], wanted: Mapping[str, str]) -> ConfigUpdate:
    """The update that gives a topic described as `current` the configs `wanted`; no changes
    (and nothing to send) when every wanted config already has its value, wherever it comes from.

    The configs to send are the topic's own ones (`on_topic`) with `wanted` on top, so configs
    rtmsflow does not manage survive AlterConfigs' replace-all semantics."""
    changes = tuple(
        ConfigChange(name, current[name].value if name in current else None, value)
        for name, value in sorted(wanted.items())
        if name not in current or current[name].value != value
    )
    if not changes:
        return ConfigUpdate((), {})
    configs = {name: d.value for name, d in sorted(current.items()) if d.on_topic and d.value is not None}
    configs.update(wanted)
    return ConfigUpdate(changes, configs)


@dataclass(frozen=True)
class TopicsReport:
    """What `ensure_topics` did: topics it created, topics whose configs it updated (with each
    change), topics that already existed as specified, and what it could not change (by topic)."""

    created: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    updated: dict[str, tuple[ConfigChange, ...]] = field(default_factory=dict)
    unchanged_differences: dict[str, str] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        """True when the broker's topics differ from before the call."""
        return bool(self.created or self.updated)


@asynccontextmanager
async def admin_client(settings: Settings) -> AsyncIterator[AIOKafkaAdminClient]:
    """A started `AIOKafkaAdminClient` for the settings' broker, closed on exit."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers(settings), client_id="rtmsflow-admin")
    await admin.start()
    try:
        yield admin
    finally:
        await admin.close()


async def partition_counts(admin: AIOKafkaAdminClient, names: Iterable[str] | None = None) -> dict[str, int]:
    """Partition count of each existing topic among `names` (all topics if None)."""
    return {name: count for name, (count, _) in (await _layouts(admin, names)).items()}


async def _layouts(admin: AIOKafkaAdminClient, names: Iterable[str] | None) -> dict[str, tuple[int, int]]:
    """(partition count, replication factor) of each existing topic among `names` (all if None);
    the replication factor is the largest replica count of its partitions."""
    wanted = list(names) if names is not None else None
    if wanted == []:
        return {}
    described = await admin.describe_topics(wanted)
    return {
        t["topic"]: (len(t["partitions"]), max((len(p["replicas"]) for p in t["partitions"]), default=0))
        for t in described
        if t["error_code"] == 0 and t["topic"] and not t.get("is_internal", False)
    }


async def describe_topic_configs(
    admin: AIOKafkaAdminClient, names: Iterable[str], *, timeout_s: float = 0.0
) -> dict[str, dict[str, DescribedConfig]]:
    """Every config of each named topic as the broker describes it. A topic created a moment ago
    may not be describable yet (the broker applies the controller's metadata asynchronously), so
    "unknown topic" is retried for up to `timeout_s`; then, or for any other error, TopicError."""
    pending = list(names)
    out: dict[str, dict[str, DescribedConfig]] = {}
    deadline = time.monotonic() + timeout_s
    while pending:
        errors: dict[str, tuple[int, str]] = {}
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, n) for n in pending]
        )
        for response in responses:
            for resource in response.to_object()["resources"]:
                name = resource["resource_name"]
                if resource["error_code"] != 0:
                    errors[name] = (resource["error_code"], resource["error_message"] or "")
                    continue
                out[name] = {
                    entry["config_names"]: DescribedConfig(
                        entry["config_value"],
                        # v0 has no config_source, only is_default (a non-default value is the topic's)
                        entry["config_source"] == _TOPIC_CONFIG_SOURCE
                        if "config_source" in entry
                        else not entry["is_default"],
                    )
                    for entry in resource["config_entries"]
                }
        pending = [n for n in pending if n not in out]
        retry = all(code == _UNKNOWN_TOPIC for code, _ in errors.values())
        if pending and (not retry or time.monotonic() > deadline):
            lines = [
                f"  {n}: {for_code(code).__name__}: {msg}".rstrip(": ") for n, (code, msg) in errors.items()
            ]
            raise TopicError("the broker could not describe topic configs:\n" + "\n".join(sorted(lines)))
        if pending:
            await asyncio.sleep(0.1)
    return out


async def _wait_for_configs(
    admin: AIOKafkaAdminClient, plans: Mapping[str, ConfigUpdate], timeout_s: float
) -> None:
    """Wait until the broker describes every planned change: AlterConfigs is acknowledged by the
    controller before the broker applies it, and a caller (a second `topics create`, a test)
    reading right after must see the new values."""
    deadline = time.monotonic() + timeout_s
    pending = dict(plans)
    while pending:
        described = await describe_topic_configs(admin, pending, timeout_s=timeout_s)
        pending = {
            name: plan
            for name, plan in pending.items()
            if any(
                described[name].get(c.name, DescribedConfig(None, False)).value != c.new for c in plan.changes
            )
        }
        if not pending:
            return
        if time.monotonic() > deadline:
            raise TopicError(f"topic configs not in effect after {timeout_s:.0f} s: {', '.join(pending)}")
        await asyncio.sleep(0.1)


async def _update_configs(admin: AIOKafkaAdminClient, plans: Mapping[str, ConfigUpdate]) -> None:
    """Send the planned config sets; raises TopicError naming each topic the broker refused."""
    resources = [ConfigResource(ConfigResourceType.TOPIC, name, plan.configs) for name, plan in plans.items()]
    if not resources:
        return
    errors: list[str] = []
    for response in await admin.alter_configs(resources):
        for resource in response.to_object()["resources"]:
            if resource["error_code"] != 0:
                errors.append(
                    f"  {resource['resource_name']}: {for_code(resource['error_code']).__name__}: "
                    f"{resource['error_message'] or ''}".rstrip(": ")
                )
    if errors:
        raise TopicError("the broker refused to update topic configs:\n" + "\n".join(errors))


async def ensure_topics(
    settings: Settings,
    specs: Sequence[TopicSpec] = ALL_TOPICS,
    prefix: str | None = None,
    *,
    timeout_s: float = 30.0,
) -> TopicsReport:
    """Create each topic of `specs` (named with `prefix`, default `settings.topic_prefix`) that does
    not exist, with `settings.partitions`, `settings.replication` and the spec's configs
    (`TopicSpec.configs_for(settings.retention_days)`), and wait until every partition has a
    leader. Existing topics whose configs differ from those get them (their data is kept); a
    replication factor that differs is reported in `unchanged_differences`, not changed.

    Raises `TopicMismatch` -- before creating or changing anything -- if an existing topic has
    another partition count, and `TopicError` if the broker refuses to create or update one."""
    prefix = settings.topic_prefix if prefix is None else prefix
    by_name = {spec.full_name(prefix): spec for spec in specs}
    wanted = {name: spec.configs_for(settings.retention_days) for name, spec in by_name.items()}
    async with admin_client(settings) as admin:
        layouts = await _layouts(admin, by_name)
        mismatches = {
            name: (settings.partitions, count)
            for name, (count, _) in layouts.items()
            if count != settings.partitions
        }
        if mismatches:
            raise TopicMismatch(mismatches)
        differences = {
            name: (
                f"replication factor {replicas}, settings say {settings.replication}: not changed "
                "(that takes a partition reassignment, kafka-reassign-partitions.sh)"
            )
            for name, (_, replicas) in sorted(layouts.items())
            if replicas != settings.replication
        }
        missing = [name for name in by_name if name not in layouts]
        created = await _create(admin, settings, missing, wanted, timeout_s) if missing else []
        # Topics another client created while we looked were not ours to create: check them too.
        present = sorted(n for n in by_name if n not in created)
        described = await describe_topic_configs(admin, present, timeout_s=timeout_s)
        plans = {
            name: plan
            for name in present
            if (plan := plan_config_update(described[name], wanted[name])).changes
        }
        await _update_configs(admin, plans)
        await _wait_for_configs(admin, plans, timeout_s)
        report = TopicsReport(
            created=sorted(created),
            existing=sorted(n for n in by_name if n not in created and n not in plans),
            updated={name: plan.changes for name, plan in plans.items()},
            unchanged_differences=differences,
        )
    if report.created:
        log.info("topics created", extra={"topics": report.created, "partitions": settings.partitions})
    for name, changes in report.updated.items():
        log.info("topic configs updated", extra={"topic": name, "changes": [str(c) for c in changes]})
    for name, why in report.unchanged_differences.items():
        log.warning("topic differs from the settings", extra={"topic": name, "difference": why})
    return report


async def _create(
    admin: AIOKafkaAdminClient,
    settings: Settings,
    missing: list[str],
    configs: Mapping[str, dict[str, str]],
    timeout_s: float,
) -> list[str]:
    """Create the missing topics and wait for their leaders; returns those this call created (a
    topic another client created meanwhile is not, and must have the right partition count)."""
    new_topics = [
        NewTopic(
            name=name,
            num_partitions=settings.partitions,
            replication_factor=settings.replication,
            topic_configs=configs[name],
        )
        for name in missing
    ]
    response = await admin.create_topics(new_topics, timeout_ms=int(timeout_s * 1000))
    created: list[str] = []
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
    return created


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
