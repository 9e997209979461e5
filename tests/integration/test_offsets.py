"""Where each partition ends, and the consumer lag the services export
(`hotline_consumer_lag`, from `KafkaSource.lag`): exact on both brokers.

Runs on the session's broker: tansu, or Apache Kafka with HOTLINE_TEST_BROKER=kafka. Asked
plainly, they differ (shared/offsets.py): tansu lists a partition's end short by the other
records of its last batch, and Apache Kafka names no topic to a consumer that subscribed
to none. The figures below are the same on both.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from shared.consumer import KafkaSource
from shared.kafka import KafkaClients, ensure_topics, make_producer
from shared.offsets import end_offsets, topic_partitions
from tests.conftest import Infra
from tests.support import eventually, settings_for

pytestmark = pytest.mark.integration

RECORDS = 60
BATCH = 7


async def test_the_lag_is_the_records_not_yet_fetched_on_each_partition(infra: Infra) -> None:
    settings = settings_for(infra, infra.database_url, topic_partitions=3)
    topic = settings.topic("intake")
    await ensure_topics(settings, [topic])
    producer = make_producer(settings, client_id="lag-test")
    await producer.start()
    try:
        sends = [
            await producer.send(topic, key=f"k{n}".encode(), value=b"{}") for n in range(RECORDS)
        ]
        acknowledged = await asyncio.gather(*sends)
    finally:
        await producer.stop()
    on_partition = Counter(metadata.partition for metadata in acknowledged)
    assert sum(on_partition.values()) == RECORDS
    # The producer sent batches of several records: tansu's listed ends fall short here.
    probe = AIOKafkaConsumer(bootstrap_servers=infra.bootstrap_servers)
    await probe.start()
    try:
        partitions = await topic_partitions(probe, [topic, "no-such-topic"])
        assert partitions == {topic: [TopicPartition(topic, p) for p in range(3)]}
        ends = await end_offsets(probe, partitions[topic])
    finally:
        await probe.stop()
    assert ends == {TopicPartition(topic, p): on_partition[p] for p in range(3)}

    clients = KafkaClients(
        settings,
        client_id="lag-test",
        group_id=f"{settings.topic_prefix}lag-test",
        consumes=[topic],
        topics=[topic],
    )
    await clients.start()
    source = KafkaSource(clients, batch_size=BATCH, poll_ms=200)
    try:
        fetched: Counter[int] = Counter()

        async def first_batch() -> bool:
            batch = await source.fetch()
            fetched.update(delivery.partition for delivery in batch)
            return bool(batch)

        await eventually(first_batch, timeout=60, message="the first batch")
        assert 0 < sum(fetched.values()) <= BATCH

        def left() -> dict[tuple[str, int], int]:
            return {(topic, p): on_partition[p] - fetched[p] for p in range(3)}

        lag = await source.lag()
        assert lag == left()
        assert sum(lag.values()) == RECORDS - sum(fetched.values())

        while sum(fetched.values()) < RECORDS:
            batch = await source.fetch()
            fetched.update(delivery.partition for delivery in batch)
            assert await source.lag() == left()
        assert fetched == on_partition
        assert await source.lag() == {(topic, p): 0 for p in range(3)}
    finally:
        await clients.stop()
