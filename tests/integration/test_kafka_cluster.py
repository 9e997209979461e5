"""The three-broker Apache Kafka cluster: its shape, the topics the services create on it, and
no loss or duplicate when the busiest broker is killed while an idempotent producer sends.

Runs only against that cluster: `HOTLINE_TEST_BROKER=kafka` selects it for the session.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from shared.kafka import ensure_topics, make_producer
from tests.conftest import Infra
from tests.support import eventually, read_topic, settings_for

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        os.environ.get("HOTLINE_TEST_BROKER", "").lower() != "kafka",
        reason="needs the 3-broker Apache Kafka cluster: run with "
        "HOTLINE_TEST_BROKER=kafka .venv/bin/pytest tests/integration/test_kafka_cluster.py",
    ),
]


async def _describe(bootstrap_servers: str, topic: str) -> list[dict[str, Any]]:
    """The partitions of `topic` (leader, replicas, isr), by partition number, once every
    broker knows the topic (a created topic reaches the brokers' metadata a little later)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()

    async def described() -> dict[str, Any] | None:
        (answer,) = await admin.describe_topics([topic])
        ready = answer["error_code"] == 0 and all(p["leader"] >= 0 for p in answer["partitions"])
        return answer if ready else None

    try:
        answer = await eventually(described, message=f"metadata of {topic}")
    finally:
        await admin.close()
    return sorted(answer["partitions"], key=lambda p: p["partition"])


async def _topic_config(bootstrap_servers: str, topic: str) -> dict[str, str]:
    """The effective configuration of `topic` (topic overrides and broker defaults)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    finally:
        await admin.close()
    config: dict[str, str] = {}
    for response in responses:
        for resource in response.resources:
            error_code, _message, _type, name, entries = resource[:5]
            assert error_code == 0, resource
            assert name == topic, resource
            config.update({entry[0]: entry[1] for entry in entries})
    return config


async def test_the_cluster_has_three_brokers(infra: Infra) -> None:
    assert infra.kafka is not None
    admin = AIOKafkaAdminClient(bootstrap_servers=infra.bootstrap_servers)
    await admin.start()
    try:
        cluster = await admin.describe_cluster()
    finally:
        await admin.close()
    brokers = {(b["node_id"], b["port"]) for b in cluster["brokers"]}
    assert brokers == {(n.node_id, n.port) for n in infra.kafka.nodes}
    assert len(brokers) == 3


async def test_the_services_topics_are_replicated_three_times_with_two_in_sync(
    infra: Infra,
) -> None:
    settings = settings_for(infra, infra.database_url)
    assert settings.topic_replication_factor == 3
    assert settings.kafka_idempotent_producer
    topic = settings.topic("intake")
    await ensure_topics(settings, [topic])

    partitions = await _describe(infra.bootstrap_servers, topic)
    assert len(partitions) == settings.topic_partitions
    for partition in partitions:
        assert len(partition["replicas"]) == 3
        assert set(partition["isr"]) == set(partition["replicas"])
    config = await _topic_config(infra.bootstrap_servers, topic)
    assert config["min.insync.replicas"] == "2"
    assert config["retention.ms"] == str(settings.topic_retention_ms)
    assert config["unclean.leader.election.enable"] == "false"


async def _send_until(
    producer: AIOKafkaProducer,
    topic: str,
    sent: dict[str, asyncio.Future[Any]],
    stop: asyncio.Event,
) -> None:
    """Send records with unique keys, 20 every 50 ms, until `stop` is set."""
    n = 0
    while not stop.is_set():
        for _ in range(20):
            key = f"k{n:06d}"
            sent[key] = await producer.send(topic, key=key.encode(), value=b"x" * 100)
            n += 1
        await asyncio.sleep(0.05)


async def test_killing_the_busiest_broker_while_sending_loses_and_doubles_nothing(
    infra: Infra,
) -> None:
    cluster = infra.kafka
    assert cluster is not None
    settings = settings_for(infra, infra.database_url, topic_partitions=6)
    topic = settings.topic("intake")
    await ensure_topics(settings, [topic])
    leaders = Counter(p["leader"] for p in await _describe(infra.bootstrap_servers, topic))
    victim = leaders.most_common(1)[0][0]
    index = next(i for i, n in enumerate(cluster.nodes) if n.node_id == victim)

    producer = make_producer(settings, client_id="kill-test")  # acks=all, idempotent
    await producer.start()
    sent: dict[str, asyncio.Future[Any]] = {}
    stop = asyncio.Event()
    try:
        sending = asyncio.create_task(_send_until(producer, topic, sent, stop))
        await asyncio.sleep(2)
        before = len(sent)
        cluster.kill_node(index)  # SIGKILL: no controlled shutdown
        await asyncio.sleep(10)  # sends go on while it is fenced and its partitions move
        during = len(sent) - before
        # Blocks the loop while the JVM starts: the node must be started from this (the
        # main) thread, whose exit its parent-death signal follows.
        cluster.start_node(index)
        await asyncio.sleep(2)
        stop.set()
        await sending
        results = await asyncio.gather(*sent.values(), return_exceptions=True)
    finally:
        await producer.stop()

    acked = {
        key
        for key, result in zip(sent, results, strict=True)
        if not isinstance(result, BaseException)
    }
    failed = [result for result in results if isinstance(result, BaseException)]
    assert during > 0, "nothing was sent while the broker was down"
    assert len(acked) >= len(sent) * 0.9, f"{len(failed)} sends failed, e.g. {failed[:3]}"

    records = await read_topic(infra.bootstrap_servers, topic, at_least=len(acked), timeout=60)
    counts = Counter(record.key.decode() for record in records if record.key is not None)
    lost = acked - counts.keys()
    doubled = {key: count for key, count in counts.items() if count > 1}
    assert not lost, f"{len(lost)} acknowledged records lost, e.g. {sorted(lost)[:5]}"
    assert not doubled, f"{len(doubled)} records written twice, e.g. {list(doubled.items())[:5]}"
    assert counts.keys() <= sent.keys()

    # The cluster is whole again for the tests after this one.
    partitions = await _describe(infra.bootstrap_servers, topic)
    assert all(len(p["replicas"]) == 3 for p in partitions)
