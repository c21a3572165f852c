"""How a sink group shares the ordered topics out: a meeting's audio and video (same partition number
on both topics) always go to one member, whatever the member and partition counts."""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from aiokafka.coordinator.protocol import ConsumerProtocolMemberMetadata

from sinks.stream_sink import SINK_ASSIGNORS

TOPICS = ("p.rtms.audio", "p.rtms.video")


class Cluster:
    """The only part of ClusterMetadata an assignor reads: each topic's partition numbers."""

    def __init__(self, partitions: int) -> None:
        self.partitions = partitions

    def partitions_for_topic(self, topic: str) -> set[int]:
        return set(range(self.partitions))


def partition_numbers(assignor: Any, members: int, partitions: int) -> dict[str, dict[str, list[int]]]:
    """member -> topic -> partition numbers, as the group leader would assign them."""
    metadata = {f"m{i}": ConsumerProtocolMemberMetadata(0, list(TOPICS), b"") for i in range(members)}
    out = assignor.assign(Cluster(partitions), metadata)
    return {member: dict(a.assignment) for member, a in out.items()}


def co_partitioned(assignment: dict[str, dict[str, list[int]]]) -> bool:
    return all(sorted(t.get(TOPICS[0], [])) == sorted(t.get(TOPICS[1], [])) for t in assignment.values())


@pytest.mark.parametrize(("members", "partitions"), [(1, 4), (2, 4), (3, 4), (5, 24), (7, 24), (4, 3)])
def test_each_sink_member_gets_the_same_partition_numbers_of_audio_and_video(
    members: int, partitions: int
) -> None:
    (assignor,) = SINK_ASSIGNORS
    assignment = partition_numbers(assignor, members, partitions)
    assert co_partitioned(assignment), assignment
    every = sorted(p for topics in assignment.values() for p in topics.get(TOPICS[0], []))
    assert every == list(range(partitions))  # each partition once, none left out


def test_the_default_round_robin_splits_a_meeting_across_members() -> None:
    # the control: aiokafka's default, which the sinks used before, breaks with 3 members on 4 partitions
    assert co_partitioned(partition_numbers(RoundRobinPartitionAssignor, 2, 4))
    assert not co_partitioned(partition_numbers(RoundRobinPartitionAssignor, 3, 4))
