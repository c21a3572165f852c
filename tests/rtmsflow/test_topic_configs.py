"""`ensure_topics` / `rtmsflow topics create` bring existing topics' configs up to date.

Topics "made by the previous version" (created with the old 7-day retention and nothing else
different) get the settings' retention; a second run changes nothing; configs an operator set on a
topic survive (AlterConfigs replaces a topic's whole config set); a partition-count mismatch is
still an error that changes nothing. Through the session's real broker; each test deletes the
topics under its prefix. The planning core (`plan_config_update`) is tested without a broker."""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import pytest
from aiokafka.admin import NewTopic

from rtmsflow.admin import (
    ConfigChange,
    DescribedConfig,
    TopicMismatch,
    admin_client,
    delete_topics,
    describe_topic_configs,
    ensure_topics,
    list_topics,
    partition_counts,
    plan_config_update,
)
from rtmsflow.settings import Settings
from schemas.topics import ALL_TOPICS, RAW_AUDIO, RETENTION, TopicSpec

OLD_RETENTION_MS = "604800000"  # 7 days: what the previous version created data topics with
DAY_MS = 24 * 3600 * 1000
DATA_TOPICS = [spec for spec in ALL_TOPICS if spec.configs.get("cleanup.policy") == "delete"]
COMPACTED_TOPICS = [spec for spec in ALL_TOPICS if spec.configs.get("cleanup.policy") == "compact"]


# -- the planning core, without a broker ------------------------------------------------------------


def test_plan_changes_only_configs_whose_value_differs() -> None:
    current = {
        "retention.ms": DescribedConfig(OLD_RETENTION_MS, on_topic=True),
        "cleanup.policy": DescribedConfig("delete", on_topic=True),
    }
    plan = plan_config_update(current, {"retention.ms": "2592000000", "cleanup.policy": "delete"})
    assert plan.changes == (ConfigChange("retention.ms", OLD_RETENTION_MS, "2592000000"),)
    assert plan.configs == {"retention.ms": "2592000000", "cleanup.policy": "delete"}


def test_plan_is_empty_when_every_value_matches_even_an_inherited_one() -> None:
    current = {
        "cleanup.policy": DescribedConfig("delete", on_topic=False),  # Kafka's default, not the topic's
        "retention.ms": DescribedConfig("2592000000", on_topic=True),
    }
    plan = plan_config_update(current, {"cleanup.policy": "delete", "retention.ms": "2592000000"})
    assert plan.changes == () and plan.configs == {}
    # Positive control: the same description with one value off does plan a change.
    assert plan_config_update(current, {"retention.ms": "1"}).changes


def test_plan_keeps_the_topics_own_configs_and_leaves_inherited_ones_out() -> None:
    current = {
        "retention.ms": DescribedConfig(OLD_RETENTION_MS, on_topic=True),
        "min.insync.replicas": DescribedConfig("2", on_topic=True),  # an operator's choice
        "segment.bytes": DescribedConfig("1073741824", on_topic=False),  # the broker's default
    }
    plan = plan_config_update(current, {"retention.ms": "2592000000"})
    assert plan.configs == {"retention.ms": "2592000000", "min.insync.replicas": "2"}


def test_plan_reports_a_config_the_broker_did_not_describe_as_unset() -> None:
    plan = plan_config_update({}, {"retention.ms": "5"})
    assert plan.changes == (ConfigChange("retention.ms", None, "5"),)
    assert str(plan.changes[0]) == "retention.ms (unset) -> 5"


# -- through the broker ------------------------------------------------------------------------------


@pytest.fixture
async def clean_settings(settings: Settings) -> AsyncIterator[Settings]:
    """The test's settings; every topic under its prefix is deleted afterwards, whoever made it."""
    yield settings
    await delete_topics(settings, await list_topics(settings))


def _previous_version_configs(spec: TopicSpec) -> dict[str, str]:
    """The configs the previous release created a topic with: today's, but a 7-day retention."""
    configs = dict(spec.configs)
    if configs.get("cleanup.policy") == "delete":
        configs[RETENTION] = OLD_RETENTION_MS
    return configs


async def _create_as_previous_version(
    settings: Settings,
    specs: list[TopicSpec],
    *,
    partitions: int | None = None,
    extra: dict[str, str] | None = None,
) -> None:
    async with admin_client(settings) as admin:
        response = await admin.create_topics(
            [
                NewTopic(
                    name=spec.full_name(settings.topic_prefix),
                    num_partitions=partitions or settings.partitions,
                    replication_factor=settings.replication,
                    topic_configs={**_previous_version_configs(spec), **(extra or {})},
                )
                for spec in specs
            ],
            timeout_ms=30_000,
        )
        assert [item[1] for item in response.topic_errors] == [0] * len(specs), response.topic_errors
        # As an older release's topics would be: visible to every client before ensure_topics runs.
        names = [spec.full_name(settings.topic_prefix) for spec in specs]
        deadline = time.monotonic() + 30
        while len(await partition_counts(admin, names)) < len(names):
            assert time.monotonic() < deadline, f"topics not in the broker's metadata: {names}"
            await asyncio.sleep(0.05)
        await describe_topic_configs(admin, names, timeout_s=30)


async def _configs(settings: Settings, specs: list[TopicSpec]) -> dict[str, dict[str, str | None]]:
    """Each topic's effective configs, by base topic name."""
    names = {spec.full_name(settings.topic_prefix): spec.name for spec in specs}
    async with admin_client(settings) as admin:
        described = await describe_topic_configs(admin, names)
    return {names[name]: {k: d.value for k, d in configs.items()} for name, configs in described.items()}


@pytest.mark.kafka
async def test_previous_versions_topics_get_the_new_retention_and_keep_everything_else(
    clean_settings: Settings,
) -> None:
    settings = clean_settings
    await _create_as_previous_version(settings, list(ALL_TOPICS))
    before = await _configs(settings, list(ALL_TOPICS))
    assert {before[spec.name][RETENTION] for spec in DATA_TOPICS} == {OLD_RETENTION_MS}

    report = await ensure_topics(settings)

    new_retention = str(30 * DAY_MS)
    assert settings.retention_days == 30
    assert report.created == []
    assert report.updated == {
        spec.full_name(settings.topic_prefix): (ConfigChange(RETENTION, OLD_RETENTION_MS, new_retention),)
        for spec in DATA_TOPICS
    }
    assert report.existing == sorted(spec.full_name(settings.topic_prefix) for spec in COMPACTED_TOPICS)
    assert report.changed and report.unchanged_differences == {}

    after = await _configs(settings, list(ALL_TOPICS))
    for spec in ALL_TOPICS:
        expected = {**before[spec.name], **spec.configs_for(30)}
        assert after[spec.name] == expected, spec.name
    assert {after[spec.name][RETENTION] for spec in DATA_TOPICS} == {new_retention}


@pytest.mark.kafka
async def test_a_second_run_changes_nothing_and_says_so(clean_settings: Settings) -> None:
    settings = clean_settings
    await _create_as_previous_version(settings, [RAW_AUDIO])
    first = await ensure_topics(settings, [RAW_AUDIO])
    assert first.changed and list(first.updated) == [RAW_AUDIO.full_name(settings.topic_prefix)]

    second = await ensure_topics(settings, [RAW_AUDIO])
    assert not second.changed
    assert second.updated == {} and second.created == []
    assert second.existing == [RAW_AUDIO.full_name(settings.topic_prefix)]


@pytest.mark.kafka
async def test_a_custom_retention_is_applied_to_existing_and_new_topics(clean_settings: Settings) -> None:
    settings = dataclasses.replace(clean_settings, retention_days=90)
    existing, new = DATA_TOPICS[0], DATA_TOPICS[1]
    await _create_as_previous_version(settings, [existing])

    report = await ensure_topics(settings, [existing, new, *COMPACTED_TOPICS])

    assert report.created == sorted(s.full_name(settings.topic_prefix) for s in [new, *COMPACTED_TOPICS])
    assert report.updated == {
        existing.full_name(settings.topic_prefix): (
            ConfigChange(RETENTION, OLD_RETENTION_MS, str(90 * DAY_MS)),
        )
    }
    configs = await _configs(settings, [existing, new, *COMPACTED_TOPICS])
    assert configs[existing.name][RETENTION] == configs[new.name][RETENTION] == str(90 * DAY_MS)
    # Compacted topics keep their latest record per key for ever: no retention of ours on them.
    for spec in COMPACTED_TOPICS:
        assert configs[spec.name][RETENTION] != str(90 * DAY_MS)
        assert configs[spec.name]["cleanup.policy"] == "compact"


@pytest.mark.kafka
async def test_a_config_an_operator_set_on_the_topic_survives_the_update(clean_settings: Settings) -> None:
    settings = clean_settings
    await _create_as_previous_version(settings, [RAW_AUDIO], extra={"segment.ms": "7200000"})
    assert (await _configs(settings, [RAW_AUDIO]))[RAW_AUDIO.name]["segment.ms"] == "7200000"

    report = await ensure_topics(settings, [RAW_AUDIO])

    assert report.updated  # the retention was changed with AlterConfigs...
    configs = (await _configs(settings, [RAW_AUDIO]))[RAW_AUDIO.name]
    assert configs[RETENTION] == str(30 * DAY_MS)
    assert configs["segment.ms"] == "7200000"  # ...and the operator's config was sent along with it


@pytest.mark.kafka
async def test_a_partition_mismatch_is_still_an_error_and_changes_nothing(clean_settings: Settings) -> None:
    settings = clean_settings
    other = DATA_TOPICS[1]
    await _create_as_previous_version(settings, [RAW_AUDIO], partitions=settings.partitions + 1)
    await _create_as_previous_version(settings, [other])

    with pytest.raises(TopicMismatch) as caught:
        await ensure_topics(settings, [RAW_AUDIO, other])

    assert caught.value.mismatches == {
        RAW_AUDIO.full_name(settings.topic_prefix): (settings.partitions, settings.partitions + 1)
    }
    assert f"has {settings.partitions + 1} partitions, expected {settings.partitions}" in str(caught.value)
    configs = await _configs(settings, [RAW_AUDIO, other])
    assert configs[RAW_AUDIO.name][RETENTION] == configs[other.name][RETENTION] == OLD_RETENTION_MS
    # Positive control: without the mismatching topic the other one is updated.
    report = await ensure_topics(settings, [other])
    assert list(report.updated) == [other.full_name(settings.topic_prefix)]


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rtmsflow.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.kafka
async def test_topics_create_prints_each_config_it_changed_then_nothing_to_do(
    clean_settings: Settings, settings_env: dict[str, str]
) -> None:
    settings = clean_settings
    await _create_as_previous_version(settings, [RAW_AUDIO])
    raw_audio = RAW_AUDIO.full_name(settings.topic_prefix)

    first = await asyncio.to_thread(_cli, "topics", "create", env=settings_env)
    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    assert f"updated   {raw_audio}  retention.ms {OLD_RETENTION_MS} -> {30 * DAY_MS}" in lines
    assert sum(line.startswith("created") for line in lines) == len(ALL_TOPICS) - 1
    assert f"{len(ALL_TOPICS) - 1} created, 1 updated, 0 already as specified" in first.stderr

    second = await asyncio.to_thread(_cli, "topics", "create", env=settings_env)
    assert second.returncode == 0, second.stderr
    assert all(line.startswith("existing  ") for line in second.stdout.splitlines())
    assert len(second.stdout.splitlines()) == len(ALL_TOPICS)
    assert "nothing to do" in second.stderr
