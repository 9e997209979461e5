"""The outbox relay and the consumer loop against a real broker and a real PostgreSQL."""

import asyncio
import contextlib
import json
import logging
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from shared.background import Runner
from shared.consumer import ConsumerLoop, KafkaDeadLetterSink, KafkaSource
from shared.db import Transaction, UnitOfWork, make_engine, make_sessions
from shared.events import TicketSubmitted, TransferAttempted
from shared.kafka import KafkaClients, dlq_topic, ensure_topics, start_producer
from shared.projections import Projections
from shared.retry import is_transient
from tests.conftest import selected_broker
from tests.support import (
    eventually,
    headers_of,
    local_postgres,
    publish,
    read_topic,
    running_service,
    settings_for,
)

pytestmark = pytest.mark.integration

AT = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)


def transfer(ticket_id: str, n: int) -> TransferAttempted:
    return TransferAttempted(
        ticket_id=ticket_id,
        transfer_id=str(n),
        department="交通局",
        mode="transfer",
        connected=n % 2 == 0,
        at=AT,
    )


async def test_two_relays_of_one_service_publish_each_event_once_in_order_per_ticket(
    settings, infra
):
    """Replicas share the outbox; only one relays at a time, so order per key holds."""
    async with (
        running_service("intake", settings) as one,
        running_service("intake", settings) as two,
    ):
        for n in range(40):
            runtime = (one if n % 2 else two).runtime
            async with runtime.database.unit_of_work() as uow:
                await uow.emit(transfer(f"ticket-{n % 4}", n))
                await uow.commit()
        records = await read_topic(infra.bootstrap_servers, settings.topic("intake"), at_least=40)
    ids = [headers_of(r)["ce_id"] for r in records]
    assert len(ids) == 40
    assert len(set(ids)) == 40
    for ticket in range(4):
        key = f"ticket-{ticket}".encode()
        numbers = [int(json.loads(r.value)["transfer_id"]) for r in records if r.key == key]
        assert numbers == sorted(numbers)
        assert len(numbers) == 10


async def test_the_outbox_marks_rows_published_only_once_the_broker_has_them(settings, infra):
    async with running_service("intake", settings) as intake:
        async with intake.runtime.database.unit_of_work() as uow:
            await uow.emit(transfer("ticket-x", 1))
            await uow.commit()
        await read_topic(infra.bootstrap_servers, settings.topic("intake"), at_least=1)

        async def published() -> bool:
            async with intake.runtime.database.unit_of_work() as uow:
                result = await uow.execute(
                    sa.text("SELECT count(*) FROM outbox WHERE published_at IS NULL")
                )
                return result.scalar_one() == 0

        await eventually(published, message="outbox row marked published")


class Probe:
    """A consumer loop with one visible effect: a row per applied transfer."""

    def __init__(self, settings, schema: str) -> None:
        self.settings = settings
        self.engine = make_engine(settings.database_url, schema)
        self.sessions = make_sessions(self.engine)
        self.schema = schema

    async def create_tables(self) -> None:
        async with self.engine.begin() as connection:
            await connection.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"'))
            await connection.execute(
                sa.text(f'CREATE TABLE "{self.schema}".applied (ticket_id text, transfer_id text)')
            )
            await connection.execute(
                sa.text(
                    f'CREATE TABLE "{self.schema}".processed_events (event_id varchar(64) '
                    "PRIMARY KEY, ce_type varchar(255) NOT NULL, processed_at timestamptz "
                    "NOT NULL DEFAULT now())"
                )
            )

    async def applied(self) -> list[tuple[str, str]]:
        async with self.engine.connect() as connection:
            rows = await connection.execute(sa.text("SELECT ticket_id, transfer_id FROM applied"))
            return sorted((r[0], r[1]) for r in rows)

    def uow(self) -> UnitOfWork:
        return UnitOfWork(self.sessions, source="/probe", topic=None)


PROBE_PROJECTIONS = Projections[Transaction]()


@PROBE_PROJECTIONS.on(TransferAttempted)
async def apply_transfer(tx: Transaction, event: TransferAttempted) -> None:
    await tx.execute(
        sa.text("INSERT INTO applied VALUES (:t, :x)").bindparams(
            t=event.ticket_id, x=event.transfer_id
        )
    )


@contextlib.asynccontextmanager
async def probe_loop(settings, topic: str):
    probe = Probe(settings, schema="probe")
    await probe.create_tables()
    clients = KafkaClients(
        settings,
        client_id="probe",
        group_id=f"{settings.topic_prefix}probe",
        consumes=[topic],
        topics=[topic, dlq_topic(topic)],
    )
    await clients.start()
    loop = ConsumerLoop(
        service="probe",
        source=KafkaSource(clients, batch_size=100, poll_ms=100),
        projections=PROBE_PROJECTIONS,
        new_uow=probe.uow,
        dead_letters=KafkaDeadLetterSink(clients),
        max_backoff_seconds=0.2,
    )
    stopping = asyncio.Event()
    task = Runner("probe").start(loop, until=stopping)
    try:
        yield probe
    finally:
        stopping.set()
        await task
        await clients.stop()
        await probe.engine.dispose()


@contextlib.asynccontextmanager
async def producer_on(settings, topic: str):
    """A producer to `topic` (and the topic and its dead-letter topic)."""
    await ensure_topics(settings, [topic, dlq_topic(topic)])
    producer = await start_producer(settings, client_id="test")
    try:
        yield producer
    finally:
        await producer.stop()


async def test_a_redelivered_event_changes_nothing_and_poison_goes_to_the_dlq(settings):
    topic = settings.topic("dispatch")
    async with producer_on(settings, topic) as producer, probe_loop(settings, topic) as probe:
        await publish(producer, topic, transfer("t-1", 1), "event-1")
        await publish(producer, topic, transfer("t-1", 1), "event-1")  # redelivered copy
        await producer.send_and_wait(topic, b"{not json", key=b"t-2", headers=[("ce_type", b"x")])
        unknown = TicketSubmitted(
            ticket_id="t-3",
            city="大连",
            channel="online",
            scenario="s",
            category="help",
            submitted_at=AT,
            call={"answered": True, "resolved_at_first_contact": True},
        )
        await publish(producer, topic, unknown, "event-3")  # no handler: skipped
        await publish(producer, topic, transfer("t-4", 2), "event-4")  # after the poison
        await eventually(
            lambda: _count(probe.applied(), 2), message="both distinct transfers applied"
        )
        dead = await read_topic(settings.kafka_bootstrap_servers, dlq_topic(topic), at_least=1)
        assert await probe.applied() == [("t-1", "1"), ("t-4", "2")]
    assert len(dead) == 1
    assert dead[0].value == b"{not json"
    assert b"missing header" in headers_of(dead[0])["dlq_reason"]
    assert headers_of(dead[0])["dlq_topic"] == topic.encode()


async def _count(rows_coro, wanted: int) -> bool:
    """Whether `wanted` rows are applied; not yet, while the test's own read finds its pooled
    connection closed by a restarted PostgreSQL (the pool does not ping before each use: the
    first use after a restart fails, and the pool reconnects)."""
    try:
        return len(await rows_coro) == wanted
    except sa.exc.DBAPIError as exc:
        if not is_transient(exc):
            raise
        return False


async def test_a_database_outage_stalls_the_consumer_without_losing_or_doubling_events(infra):
    """PostgreSQL stopped mid-stream: the batch is retried until it is back, then applied once."""
    with local_postgres() as postgres:
        settings = settings_for(infra, postgres.url)
        topic = settings.topic("dispatch")
        async with producer_on(settings, topic) as producer, probe_loop(settings, topic) as probe:
            await publish(producer, topic, transfer("t-1", 1), "event-1")
            await eventually(lambda: _count(probe.applied(), 1), message="first applied")
            postgres.stop()
            for n in range(2, 7):
                await publish(producer, topic, transfer(f"t-{n}", n), f"event-{n}")
                await publish(producer, topic, transfer(f"t-{n}", n), f"event-{n}")  # twice
            postgres.start_again()
            await eventually(lambda: _count(probe.applied(), 6), timeout=30, message="all applied")
            assert await probe.applied() == sorted((f"t-{n}", str(n)) for n in range(1, 7))


def idempotent(producer: AIOKafkaProducer) -> bool:
    """Whether the producer asked the broker for a producer id (aiokafka keeps it there)."""
    return producer._txn_manager is not None


async def test_an_idempotent_producer_when_the_broker_grants_it_and_a_plain_one_when_it_refuses(
    infra, caplog
):
    """`auto` (the default): Apache Kafka grants an idempotent producer; tansu refuses it,
    and the producer falls back to a plain one with a warning. `true` makes a refusal an
    error; `false` never asks."""
    refuses = selected_broker() == "tansu"
    settings = settings_for(infra, infra.database_url, kafka_idempotent_producer="auto")
    topic = settings.topic("intake")
    await ensure_topics(settings, [topic])
    with caplog.at_level(logging.WARNING, logger="shared.kafka"):
        producer = await start_producer(settings, client_id="auto-test")
    try:
        assert idempotent(producer) is not refuses
        refusals = [r for r in caplog.records if "refused an idempotent" in r.getMessage()]
        assert len(refusals) == (1 if refuses else 0)
        metadata = await (await producer.send(topic, key=b"k", value=b"v"))
        assert metadata.offset >= 0
    finally:
        await producer.stop()

    insist = settings.model_copy(update={"kafka_idempotent_producer": True})
    if refuses:
        with pytest.raises(KafkaError):
            await start_producer(insist, client_id="insist-test")
    else:
        producer = await start_producer(insist, client_id="insist-test")
        assert idempotent(producer)
        await producer.stop()
    plain = await start_producer(
        settings.model_copy(update={"kafka_idempotent_producer": False}), client_id="plain"
    )
    assert not idempotent(plain)
    await plain.stop()
