"""The live parts of one service process: its database, its Kafka clients, the outbox relay,
the consumer loop and its other background work, started and stopped in order.

A service describes itself in a `ServiceSpec` (what it publishes and consumes, its
projections, its background work, where its migrations are); `Runtime` does the rest, the
same for all four. Building a `Runtime` does no I/O: `start()` does.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import APIRouter

from shared.auth.http import Authenticator
from shared.auth.store import AUTH_MIGRATIONS, KeyStore
from shared.background import BackgroundWork, Runner
from shared.consumer import ConsumerLoop, KafkaDeadLetterSink, KafkaSource
from shared.db import Database, ReadTransaction, UnitOfWork, UnitOfWorkFactory
from shared.kafka import KafkaClients, dlq_topic
from shared.migrations import upgrade
from shared.names import ServiceName
from shared.outbox import KafkaPublisher, OutboxRelay, OutboxStatus, SqlOutboxStore
from shared.projections import Projections
from shared.settings import Settings

log = logging.getLogger(__name__)

BROKER_CONNECT_MAX_BACKOFF_SECONDS = 5.0


@dataclass(frozen=True)
class WorkContext:
    """What a service's background work is given: settings, units of work to write with,
    read-only transactions to read with. Not the runtime."""

    service: ServiceName
    settings: Settings
    new_uow: UnitOfWorkFactory
    read: Callable[[], AbstractAsyncContextManager[ReadTransaction]]


BackgroundWorkFactory = Callable[[WorkContext], BackgroundWork]


@dataclass(frozen=True)
class ServiceSpec:
    """What makes a service itself; the rest is the same for all four."""

    name: ServiceName
    title: str
    migrations: Path
    """The service's Alembic folder (`Path(__file__).parent / "migrations"`)."""
    routers: Sequence[APIRouter]
    publishes: bool
    consumes: Sequence[ServiceName] = ()
    projections: Projections[Any] = field(default_factory=Projections)
    background: Sequence[BackgroundWorkFactory] = ()
    """Loops besides the relay and the consumer (a deadline sweeper, a refresher)."""
    unit_of_work: type[UnitOfWork] = UnitOfWork


@dataclass
class BrokerConnection:
    """Background work that starts the Kafka clients, retrying while the broker is away,
    then hands over to the relay and the consumer."""

    clients: KafkaClients
    on_connected: Callable[[], None]
    name: str = "broker-connect"
    max_backoff: float = BROKER_CONNECT_MAX_BACKOFF_SECONDS

    async def step(self) -> None:
        """Connect once; finished when it worked."""
        await self.clients.start()
        self.on_connected()


@dataclass(frozen=True)
class Readiness:
    """What `/readyz` says: each check ("ok" or what is wrong), and how the outbox stands
    (for a service that publishes)."""

    checks: dict[str, str]
    outbox: OutboxStatus | None = None

    @property
    def ready(self) -> bool:
        """True when every check is "ok"."""
        return all(value == "ok" for value in self.checks.values())


class Runtime:
    """The live objects of one service process, started and stopped in order."""

    def __init__(self, spec: ServiceSpec, settings: Settings) -> None:
        self.spec = spec
        self.settings = settings
        self.topic = settings.topic(spec.name) if spec.publishes else None
        self.database = Database(
            settings.database_url,
            settings.schema_of(spec.name),
            pool_size=settings.db_pool_size,
            source=f"/hotline/{spec.name}",
            topic=self.topic,
            unit_of_work=spec.unit_of_work,
        )
        self.auth = Authenticator(
            KeyStore(self.database.engine, settings.auth_schema(), settings.auth_cache_seconds),
            settings.rate_limit,
            settings.auth_failure_limit,
        )
        consumed = [settings.topic(owner) for owner in spec.consumes]
        self.kafka = KafkaClients(
            settings,
            client_id=f"hotline-{spec.name}",
            group_id=settings.group_of(spec.name),
            consumes=consumed,
            topics=self._topics(consumed),
        )
        self._stopping = asyncio.Event()
        self.runner = Runner(spec.name)
        self.relay: OutboxRelay | None = None
        if spec.publishes:
            self.relay = OutboxRelay(
                SqlOutboxStore(self.database.engine, self.database.schema),
                KafkaPublisher(self.kafka),
                service=spec.name,
                batch_size=settings.relay_batch_size,
                idle_seconds=settings.relay_idle_seconds,
                linger_seconds=settings.relay_linger_seconds,
                max_backoff_seconds=settings.relay_max_backoff_seconds,
                keep_published_seconds=settings.keep_published_seconds,
            )
            self.database.on_commit = self.relay.wake
        self.consumer: ConsumerLoop | None = None
        if spec.consumes:
            self.consumer = ConsumerLoop(
                service=spec.name,
                source=KafkaSource(
                    self.kafka,
                    batch_size=settings.consumer_batch_size,
                    poll_ms=settings.consumer_poll_ms,
                ),
                projections=spec.projections,
                new_uow=self.database.unit_of_work,
                dead_letters=KafkaDeadLetterSink(self.kafka),
                max_backoff_seconds=settings.consumer_max_backoff_seconds,
                stopping=self._stopping,
                topics=consumed,
            )

    @property
    def broker_connected(self) -> asyncio.Event:
        """Set once the Kafka clients have started."""
        return self.kafka.connected

    def work_context(self) -> WorkContext:
        """What this service's background work is given."""
        return WorkContext(
            service=self.spec.name,
            settings=self.settings,
            new_uow=self.database.unit_of_work,
            read=self.database.read,
        )

    def migrate(self) -> None:
        """Bring this service's schema, and the keys' schema, to the newest revision
        (blocking)."""
        upgrade(AUTH_MIGRATIONS, self.settings.database_url, self.settings.auth_schema())
        upgrade(self.spec.migrations, self.settings.database_url, self.database.schema)

    async def start(self) -> None:
        """Migrate, then start the loops. The broker may be down: the relay and the consumer
        start once it answers."""
        if self.settings.migrate_on_start:
            await asyncio.to_thread(self.migrate)
        # Connecting is not bounded by `stopping`: a service asked to stop while still
        # connecting finishes connecting first (within the drain bound), so events that
        # reached the broker before it joined its group are not left behind.
        self.runner.start(BrokerConnection(self.kafka, self._start_bus), until=None)
        context = self.work_context()
        for make in self.spec.background:
            self.run_in_background(make(context))
        if self.relay is not None:
            # Measured from the start, broker or not: a relay that cannot publish shows.
            self.run_in_background(self.relay.measuring(self.settings.relay_measure_seconds))

    def run_in_background(
        self, work: BackgroundWork, wakeup: asyncio.Event | None = None
    ) -> asyncio.Task[None]:
        """Run `work` until the service stops."""
        return self.runner.start(work, until=self._stopping, wakeup=wakeup)

    def _start_bus(self) -> None:
        if self._stopping.is_set():
            return
        if self.relay is not None:
            self.run_in_background(self.relay, wakeup=self.relay.wakeup)
        if self.consumer is not None:
            self.run_in_background(self.consumer)

    async def stop(self) -> None:
        """Stop the loops, then drain: consume what is left, publish what is left (bounded)."""
        self._stopping.set()
        drain = self.settings.shutdown_drain_seconds
        # A loop stuck on an unreachable broker is cancelled; its batch stays unpublished or
        # uncommitted and is picked up again at the next start.
        await self.runner.stop(timeout=drain)
        if self.kafka.connected.is_set():
            if self.consumer is not None and not await self.consumer.drain(drain):
                log.warning("consumer not drained at shutdown", extra={"service": self.spec.name})
            if self.relay is not None and not await self.relay.drain(drain):
                log.warning("outbox not drained at shutdown", extra={"service": self.spec.name})
        await self.kafka.stop(timeout=drain)
        await self.database.dispose()

    def _topics(self, consumed: list[str]) -> list[str]:
        own = [self.topic] if self.topic else []
        return own + [dlq_topic(t) for t in own + consumed] + consumed

    async def readiness(self) -> Readiness:
        """Whether the database and the broker answer now, whether every loop is well, and
        whether the relay gets the outbox out; how the outbox stands."""
        checks: dict[str, str] = {}
        try:
            await self.database.ping(timeout=2)
            checks["database"] = "ok"
        except Exception as exc:
            checks["database"] = f"unreachable: {type(exc).__name__}"
        if not self.kafka.connected.is_set():
            checks["broker"] = "connecting"
        else:
            try:
                await asyncio.wait_for(self.kafka.producer.client.fetch_all_metadata(), timeout=2)
                checks["broker"] = "ok"
            except Exception as exc:
                checks["broker"] = f"unreachable: {type(exc).__name__}"
        outbox = await self._outbox_readiness(checks)
        problems = self.runner.problems()
        if problems and not self._stopping.is_set():
            # A relay, consumer or sweeper that fails would otherwise go unnoticed.
            checks["loops"] = "; ".join(f"{name}: {why}" for name, why in sorted(problems.items()))
        return Readiness(checks, outbox)

    async def _outbox_readiness(self, checks: dict[str, str]) -> OutboxStatus | None:
        """Add the `outbox` check: "stuck" while an event the relay may publish has waited
        longer than `relay_stuck_seconds`. Events set aside (or held behind one) are in the
        status, not a failed check: the relay goes on without them."""
        if self.relay is None:
            return None
        if checks["database"] != "ok":
            checks["outbox"] = "unknown: the database is unreachable"
            return None
        try:
            status = await asyncio.wait_for(self.relay.measure(), timeout=2)
        except Exception as exc:
            checks["outbox"] = f"unknown: {type(exc).__name__}"
            return None
        stuck = (
            status.pending > 0 and status.oldest_pending_seconds > self.settings.relay_stuck_seconds
        )
        checks["outbox"] = (
            f"stuck: {status.pending} events waiting, oldest {status.oldest_pending_seconds:.0f}s"
            if stuck
            else "ok"
        )
        return status
