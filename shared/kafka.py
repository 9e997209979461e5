"""Kafka clients and topics, configured from Settings in one place."""

from __future__ import annotations

import logging

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from shared.settings import SERVICE_NAMES, Settings

log = logging.getLogger(__name__)


def dlq_topic(topic: str) -> str:
    """Where records of `topic` that can never be processed go."""
    return f"{topic}.dlq"


def all_topics(settings: Settings) -> list[str]:
    """Every topic the system uses: one per publishing service, and its dead-letter topic."""
    topics = [settings.topic(name) for name in SERVICE_NAMES if name != "metrics"]
    return topics + [dlq_topic(topic) for topic in topics]


def make_producer(settings: Settings, *, client_id: str) -> AIOKafkaProducer:
    """A producer that waits for every in-sync replica and keeps per-partition order.

    aiokafka keeps one request in flight per broker, so order within a partition holds
    even without the idempotent producer, which tansu (the embedded broker) lacks.
    """
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        client_id=client_id,
        acks="all",
        linger_ms=5,
        compression_type=None
        if settings.kafka_compression == "none"
        else settings.kafka_compression,
        request_timeout_ms=settings.relay_request_timeout_ms,
        enable_idempotence=settings.kafka_idempotent_producer,
        retry_backoff_ms=200,
    )


async def ensure_topics(settings: Settings, topics: list[str] | None = None) -> None:
    """Create the topics that do not exist yet, with the configured partitions and retention."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap_servers, client_id="hotline-admin"
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [t for t in (topics or all_topics(settings)) if t not in existing]
        for topic in wanted:
            try:
                await admin.create_topics(
                    [
                        NewTopic(
                            topic,
                            num_partitions=settings.topic_partitions,
                            replication_factor=settings.topic_replication_factor,
                            topic_configs={"retention.ms": str(settings.topic_retention_ms)},
                        )
                    ]
                )
                log.info("topic created", extra={"topic": topic})
            except TopicAlreadyExistsError:
                pass
    finally:
        await admin.close()
