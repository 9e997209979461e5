"""Kafka clients and topics, configured from Settings in one place."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAlreadyExistsError
from aiokafka.helpers import create_ssl_context

from shared.names import SERVICE_NAMES
from shared.settings import Settings

log = logging.getLogger(__name__)


PRODUCER_MAX_REQUEST_BYTES = 1024 * 1024
"""The largest record (key, value, headers and batch overhead) a producer sends; it refuses
larger ones. aiokafka's default, named because the dead-letter sink cuts copies to fit it."""

DLQ_SUFFIX = ".dlq"
DLQ_HEADER_PREFIX = "dlq_"
"""Headers a dead letter carries beside the original record's; a replay strips them."""


class DlqHeader:
    """Names of the headers a dead letter carries beside the original record's headers."""

    REASON = "dlq_reason"
    TOPIC = "dlq_topic"
    PARTITION = "dlq_partition"
    OFFSET = "dlq_offset"
    SERVICE = "dlq_service"
    TRUNCATED = "dlq_truncated"
    """`true` when the copy is not the whole record (value cut, key cut or headers dropped)."""
    ORIGINAL_BYTES = "dlq_original_bytes"
    """The size of the original record's value."""
    ORIGINAL_KEY_BYTES = "dlq_original_key_bytes"
    HEADERS_DROPPED = "dlq_headers_dropped"
    """Names of original headers left out of a truncated copy."""
    SEND_ERROR = "dlq_send_error"
    """Why the whole (or truncated) copy was refused, on the minimal copy sent instead."""
    REPLAYED_FROM = "dlq_replayed_from"
    """On a replayed record: the dead letter it came from (`topic/partition/offset`)."""


def dlq_topic(topic: str) -> str:
    """Where records of `topic` that can never be processed go."""
    return f"{topic}{DLQ_SUFFIX}"


def all_topics(settings: Settings) -> list[str]:
    """Every topic the system uses: one per publishing service, and its dead-letter topic."""
    topics = [settings.topic(name) for name in SERVICE_NAMES if name != "metrics"]
    return topics + [dlq_topic(topic) for topic in topics]


def connection_options(settings: Settings) -> dict[str, Any]:
    """Where the brokers are and how to talk to them (TLS, SASL): every Kafka client of the
    project is made with these, so a secured broker needs its settings in one place."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        "security_protocol": settings.kafka_security_protocol,
    }
    if settings.kafka_security_protocol in ("SSL", "SASL_SSL"):
        cafile = str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None
        options["ssl_context"] = create_ssl_context(cafile=cafile)
    if settings.kafka_security_protocol.startswith("SASL_"):
        password = settings.kafka_sasl_password
        options.update(
            sasl_mechanism=settings.kafka_sasl_mechanism,
            sasl_plain_username=settings.kafka_sasl_username,
            sasl_plain_password=password.get_secret_value() if password else None,
        )
    return options


def make_producer(
    settings: Settings, *, client_id: str, idempotent: bool | None = None
) -> AIOKafkaProducer:
    """A producer that waits for every in-sync replica and keeps per-partition order;
    idempotent unless `idempotent` or the setting says false (`start_producer` handles a
    broker that refuses it).

    aiokafka keeps one request in flight per broker, so order within a partition holds
    even without the idempotent producer, which tansu (the embedded broker) lacks.
    """
    if idempotent is None:
        idempotent = settings.kafka_idempotent_producer is not False
    return AIOKafkaProducer(
        **connection_options(settings),
        client_id=client_id,
        acks="all",
        linger_ms=5,
        compression_type=None
        if settings.kafka_compression == "none"
        else settings.kafka_compression,
        request_timeout_ms=settings.relay_request_timeout_ms,
        enable_idempotence=idempotent,
        retry_backoff_ms=200,
        max_request_size=PRODUCER_MAX_REQUEST_BYTES,
    )


async def start_producer(settings: Settings, *, client_id: str) -> AIOKafkaProducer:
    """A started producer, idempotent as `Settings.kafka_idempotent_producer` says: with
    `auto`, a broker's refusal (not its absence: that is raised) falls back to a plain one."""
    producer = make_producer(settings, client_id=client_id)
    try:
        await producer.start()
        return producer
    except KafkaConnectionError:
        await close_client(producer, client_id)
        raise
    except KafkaError as exc:
        await close_client(producer, client_id)
        if settings.kafka_idempotent_producer != "auto":
            raise
        log.warning(
            "the broker refused an idempotent producer; sending without broker-side "
            "de-duplication (consumers skip duplicates by event id)",
            extra={"client_id": client_id, "error": repr(exc)},
        )
    producer = make_producer(settings, client_id=client_id, idempotent=False)
    try:
        await producer.start()
    except BaseException:
        await close_client(producer, client_id)
        raise
    return producer


async def close_client(
    client: AIOKafkaProducer | AIOKafkaConsumer, client_id: str, timeout: float = 10.0
) -> None:
    """Stop a client (also one that never connected) within `timeout` seconds: with the
    broker gone, aiokafka's `stop()` would retry without end."""
    try:
        async with asyncio.timeout(timeout):
            await client.stop()
    except TimeoutError:
        log.warning(
            "Kafka client did not close in time (broker away?); abandoning it",
            extra={"client_id": client_id, "timeout_seconds": timeout},
        )
    except Exception as exc:  # closing a client that never connected
        log.debug("client stop failed", extra={"error": repr(exc)})


async def ensure_topics(settings: Settings, topics: list[str] | None = None) -> None:
    """Create the topics that do not exist yet, with the configured partitions and retention."""
    admin = AIOKafkaAdminClient(**connection_options(settings), client_id="hotline-admin")
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


def make_consumer(
    settings: Settings, *, client_id: str, group_id: str, topics: Sequence[str]
) -> AIOKafkaConsumer:
    """A consumer-group member that commits offsets only when told to (after its effects are
    stored) and starts a new group from the beginning of each topic."""
    return AIOKafkaConsumer(
        *topics,
        **connection_options(settings),
        group_id=group_id,
        client_id=client_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=settings.consumer_session_timeout_ms,
        heartbeat_interval_ms=max(1000, settings.consumer_session_timeout_ms // 3),
        max_poll_records=settings.consumer_batch_size,
    )


class KafkaClients:
    """The producer and, for a service that consumes, the consumer of one process.

    An aiokafka client that failed to start cannot be started again, so a failed `start()`
    makes new ones; whatever sends or fetches asks this holder for the current client, and
    nothing else keeps a reference to one.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        client_id: str,
        group_id: str | None = None,
        consumes: Sequence[str] = (),
        topics: Sequence[str] = (),
    ) -> None:
        self._settings = settings
        self._client_id = client_id
        self._group_id = group_id
        self._consumes = tuple(consumes)
        self._topics = list(topics)
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self.connected = asyncio.Event()
        """Set once both clients have started."""

    @property
    def producer(self) -> AIOKafkaProducer:
        """The started producer."""
        if self._producer is None:
            raise RuntimeError("the Kafka clients have not been started")
        return self._producer

    @property
    def max_request_bytes(self) -> int:
        """The largest record the producer sends (it refuses larger ones at once)."""
        return PRODUCER_MAX_REQUEST_BYTES

    @property
    def consumer(self) -> AIOKafkaConsumer:
        """The started consumer (only for a service that consumes)."""
        if self._consumer is None:
            raise RuntimeError("no Kafka consumer: not started, or this service consumes nothing")
        return self._consumer

    async def start(self) -> None:
        """Create the topics this process uses if missing, then start new clients; on failure
        close what was made and raise (the caller retries)."""
        if self._consumes and self._group_id is not None:
            self._consumer = make_consumer(
                self._settings,
                client_id=self._client_id,
                group_id=self._group_id,
                topics=self._consumes,
            )
        try:
            await ensure_topics(self._settings, self._topics)
            self._producer = await start_producer(self._settings, client_id=self._client_id)
            if self._consumer is not None:
                await self._consumer.start()
        except BaseException:
            await self.stop()
            raise
        self.connected.set()

    async def stop(self, timeout: float = 10.0) -> None:
        """Close the clients (also ones that never connected), each within `timeout` seconds.

        With the broker gone, aiokafka's `stop()` retries to reach it without end (leaving
        the group, flushing the producer): a process asked to exit would then never do so.
        Whatever it still held is not lost: offsets are committed only after their effects,
        and outbox rows are marked published only after the broker acknowledged them.
        """
        for client in (self._consumer, self._producer):
            if client is not None:
                await close_client(client, self._client_id, timeout)
