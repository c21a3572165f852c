"""How the processors' and the sinks' groups share their topics out: every topic a member reads holds
a meeting in the same partition number, so each member must get the same partition numbers of all
of them (the processors: the four raw topics; the media sink: audio and video), whatever the member
and partition counts."""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from aiokafka.coordinator.assignors.sticky.sticky_assignor import StickyPartitionAssignor
from aiokafka.coordinator.protocol import ConsumerProtocolMemberMetadata

from processors.batch_loop import PROCESSOR_ASSIGNORS
from sinks.stream_sink import SINK_ASSIGNORS

SINK_TOPICS = ("p.rtms.audio", "p.rtms.video")
RAW_TOPICS = ("p.rtms.raw.audio", "p.rtms.raw.events", "p.rtms.raw.transcript", "p.rtms.raw.video")
COUNTS = [(1, 4), (2, 4), (3, 4), (5, 24), (7, 24), (4, 3)]


class Cluster:
    """The only part of ClusterMetadata an assignor reads: each topic's partition numbers."""

    def __init__(self, partitions: int, topics: tuple[str, ...] = ()) -> None:
        self.partitions = partitions
        self._topics = set(topics)

    def topics(self) -> set[str]:
        return self._topics

    def partitions_for_topic(self, topic: str) -> set[int]:
        return set(range(self.partitions))


def partition_numbers(
    assignor: Any, topics: tuple[str, ...], members: int, partitions: int
) -> dict[str, dict[str, list[int]]]:
    """member -> topic -> partition numbers, as the group leader would assign them."""
    metadata = {f"m{i}": ConsumerProtocolMemberMetadata(0, list(topics), b"") for i in range(members)}
    out = assignor.assign(Cluster(partitions, topics), metadata)
    return {member: dict(a.assignment) for member, a in out.items()}


def co_partitioned(assignment: dict[str, dict[str, list[int]]], topics: tuple[str, ...]) -> bool:
    return all(
        len({tuple(sorted(mine.get(topic, []))) for topic in topics}) == 1 for mine in assignment.values()
    )


@pytest.mark.parametrize(
    ("assignors", "topics"),
    [(SINK_ASSIGNORS, SINK_TOPICS), (PROCESSOR_ASSIGNORS, RAW_TOPICS)],
    ids=["sinks", "processors"],
)
@pytest.mark.parametrize(("members", "partitions"), COUNTS)
def test_each_member_gets_the_same_partition_numbers_of_every_topic_it_reads(
    assignors: tuple[Any, ...], topics: tuple[str, ...], members: int, partitions: int
) -> None:
    (assignor,) = assignors
    assignment = partition_numbers(assignor, topics, members, partitions)
    assert co_partitioned(assignment, topics), assignment
    every = sorted(p for mine in assignment.values() for p in mine.get(topics[0], []))
    assert every == list(range(partitions))  # each partition once, none left out


def test_the_assignors_used_before_split_a_meeting_across_members() -> None:
    # the controls: aiokafka's default round robin (the sinks before) breaks with 3 members on 4
    # partitions; the sticky assignor (the processors before) with 2 members on 4 raw topics
    assert co_partitioned(partition_numbers(RoundRobinPartitionAssignor, SINK_TOPICS, 2, 4), SINK_TOPICS)
    assert not co_partitioned(partition_numbers(RoundRobinPartitionAssignor, SINK_TOPICS, 3, 4), SINK_TOPICS)
    # sticky, when a second processor joins the first, which held everything: it keeps whole topics
    held = [TopicPartition(topic, p) for topic in RAW_TOPICS for p in range(4)]
    metadata = {
        "m0": StickyPartitionAssignor._metadata(list(RAW_TOPICS), held, 1),
        "m1": StickyPartitionAssignor._metadata(list(RAW_TOPICS), None, -1),
    }
    out = StickyPartitionAssignor.assign(Cluster(4, RAW_TOPICS), metadata)  # type: ignore[arg-type]
    sticky = {member: dict(a.assignment) for member, a in out.items()}
    assert not co_partitioned(sticky, RAW_TOPICS), sticky
    assert co_partitioned(partition_numbers(PROCESSOR_ASSIGNORS[0], RAW_TOPICS, 2, 4), RAW_TOPICS)
