"""Faults of a three-broker Apache Kafka cluster for `make chaos BROKER=kafka`: SIGKILL of the
broker that leads most of the services' partitions, and its start again later.

Each reports what a person running a cluster asks about: how many partitions the broker led,
how long some partition the services use had no live leader, and how long the restarted broker
took to be back in every in-sync replica set.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from hotline.embedded.kafka_cluster import RunningKafkaCluster
from shared.kafka import connection_options
from shared.names import PUBLISHERS
from shared.settings import Settings

OFFSETS_TOPIC = "__consumer_offsets"
"""Where the consumer groups' coordinators and committed offsets live."""

PartitionState = tuple[int, tuple[int, ...], tuple[int, ...]]
"""A partition's leader (-1: none), replicas and in-sync replicas."""


def service_topics(settings: Settings) -> list[str]:
    """The topics whose leaders the services need: each publisher's, and the group offsets."""
    return [settings.topic(name) for name in PUBLISHERS] + [OFFSETS_TOPIC]


async def partition_states(
    settings: Settings, topics: Sequence[str], timeout: float = 5.0
) -> dict[tuple[str, int], PartitionState]:
    """Every partition of `topics` as the cluster's metadata has it now."""
    admin = AIOKafkaAdminClient(**connection_options(settings), request_timeout_ms=3000)
    async with asyncio.timeout(timeout):
        await admin.start()
        try:
            answers = await admin.describe_topics(list(topics))
        finally:
            await admin.close()
    return {
        (answer["topic"], p["partition"]): (p["leader"], tuple(p["replicas"]), tuple(p["isr"]))
        for answer in answers
        for p in answer["partitions"]
    }


async def _poll(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> float:
    """Seconds until `check()` is true, polling every 0.25 s; a broker that does not answer
    a request meanwhile is asked again (a node that exited raises EmbeddedStartError)."""
    began = time.monotonic()
    while True:
        with contextlib.suppress(KafkaError, OSError, TimeoutError):
            if await check():
                return time.monotonic() - began
        if time.monotonic() - began > timeout:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.25)


@dataclass
class LeaderFaults:
    """Kill the busiest broker of a cluster and start it again, measuring both."""

    cluster: RunningKafkaCluster
    settings: Settings
    victim: int | None = None
    """The index (in `cluster.nodes`) of the node killed and not yet started again."""

    async def kill_busiest(self) -> dict[str, object]:
        """SIGKILL the node that leads most partitions of the services' topics; return once
        every one of them has a live leader again."""
        topics = service_topics(self.settings)
        states = await partition_states(self.settings, topics)
        leaders = Counter(leader for leader, _, _ in states.values() if leader >= 0)
        node_id, led = leaders.most_common(1)[0]
        index = next(i for i, n in enumerate(self.cluster.nodes) if n.node_id == node_id)
        self.cluster.kill_node(index)
        self.victim = index

        async def led_by_the_living() -> bool:
            now = await partition_states(self.settings, topics)
            return len(now) == len(states) and all(
                leader >= 0 and leader != node_id for leader, _, _ in now.values()
            )

        leaderless = await _poll(led_by_the_living, 120, "new leaders for every partition")
        return {
            "node_id": node_id,
            "partitions_led": led,
            "partitions": len(states),
            "seconds_without_a_leader": round(leaderless, 1),
        }

    async def start_again(self) -> dict[str, object]:
        """Start the killed node; return once it is back in the in-sync replica set of every
        partition it holds."""
        if self.victim is None:
            return {"note": "no broker was down"}
        index, self.victim = self.victim, None
        node_id = self.cluster.nodes[index].node_id
        began = time.monotonic()
        ready = self.cluster.launch_node(index)  # from this (the loop's) thread: see its doc

        async def answers() -> bool:
            return await asyncio.to_thread(ready)

        await _poll(answers, 120, f"kafka node {node_id} to answer")
        answered = time.monotonic() - began
        topics = service_topics(self.settings)

        async def in_sync() -> bool:
            now = await partition_states(self.settings, topics)
            return bool(now) and all(
                node_id in isr for _, replicas, isr in now.values() if node_id in replicas
            )

        await _poll(in_sync, 180, f"kafka node {node_id} back in sync")
        return {
            "node_id": node_id,
            "answered_after_seconds": round(answered, 1),
            "in_sync_after_seconds": round(time.monotonic() - began, 1),
        }
