"""Which partitions a topic has and where each ends, asked so that tansu and Apache Kafka
give the same, right answer (they differ in two places):

- Metadata: a consumer that subscribes to nothing asks for no topic; Apache Kafka then
  answers none (`partitions_for_topic` stays None), tansu answers all of them. So the
  partitions of a topic are read from a whole-cluster metadata request.
- End offsets: tansu answers ListOffsets(latest) with the base offset of the partition's last
  record *batch* plus one, short by that batch's other records (a relay sends batches). A
  fetch's high watermark is right on both, so probes read it from a fetch (`end_offsets`),
  and a group member takes the larger of the two (`member_end_offsets`).

tests/integration/test_offsets.py checks both on both brokers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence

from aiokafka import AIOKafkaConsumer, TopicPartition


async def topic_partitions(
    consumer: AIOKafkaConsumer, topics: Iterable[str]
) -> dict[str, list[TopicPartition]]:
    """The partitions of each of `topics` that exists on the cluster (others are left out)."""
    # aiokafka has no public call for a whole-cluster metadata answer; its client's is it.
    cluster = await consumer._client.fetch_all_metadata()
    known = cluster.topics()
    return {
        topic: [TopicPartition(topic, p) for p in sorted(cluster.partitions_for_topic(topic) or ())]
        for topic in topics
        if topic in known
    }


async def end_offsets(
    consumer: AIOKafkaConsumer, partitions: Sequence[TopicPartition], timeout: float = 30.0
) -> dict[TopicPartition, int]:
    """The offset after the last record of each partition, now (TimeoutError if the broker
    does not answer a fetch within `timeout`). For a probe, not a group member: it assigns
    `consumer` to the partitions and moves its positions."""
    listed: dict[TopicPartition, int] = await consumer.end_offsets(list(partitions))
    holding = [tp for tp in partitions if listed[tp] > 0]
    if not holding:
        return listed
    consumer.assign(holding)
    for tp in holding:
        # At or below the last record on both brokers (below the log start after retention
        # emptied it: the consumer resets to the end, whose fetch answers the same).
        consumer.seek(tp, listed[tp] - 1)
    ends = dict(listed)
    waiting = set(holding)
    async with asyncio.timeout(timeout):
        while waiting:
            await consumer.getmany(*waiting, timeout_ms=200)
            for tp in list(waiting):
                highwater = consumer.highwater(tp)
                if highwater is not None:
                    ends[tp] = max(listed[tp], highwater)
                    waiting.discard(tp)
    return ends


async def member_end_offsets(
    consumer: AIOKafkaConsumer, partitions: Sequence[TopicPartition]
) -> dict[TopicPartition, int]:
    """End offsets for a group member, without moving its positions: the larger of the
    listed end and the high watermark of its last fetch of the partition."""
    listed: dict[TopicPartition, int] = await consumer.end_offsets(list(partitions))
    return {tp: max(listed[tp], consumer.highwater(tp) or 0) for tp in partitions}
