"""Wiring of one service process: database, outbox relay, consumer loop, HTTP app.

`create_service_app(spec, settings)` is every service's `create_app`: the service says what
it publishes, what it consumes and with which handlers, and which routes it serves; this
module starts and stops the rest in order. Nothing is wired at import time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any

import sqlalchemy as sa
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse

from shared.consumer import ConsumerLoop, Handler, KafkaDeadLetterSink, KafkaSource
from shared.db import UnitOfWork, make_engine, make_sessions
from shared.errors import install_error_handlers
from shared.events import Event
from shared.kafka import dlq_topic, ensure_topics, make_producer
from shared.migrations import upgrade_async
from shared.observability import TRANSIENT_ERRORS, instrument
from shared.outbox import KafkaPublisher, OutboxRelay, SqlOutboxStore
from shared.retry import Backoff
from shared.settings import ServiceName, Settings

log = logging.getLogger(__name__)

BackgroundTask = Callable[["Runtime", asyncio.Event], Coroutine[Any, Any, None]]


@dataclass
class ServiceSpec:
    """What makes a service itself; the rest is the same for all four."""

    name: ServiceName
    title: str
    routers: Sequence[APIRouter]
    publishes: bool
    consumes: Sequence[ServiceName] = ()
    handlers: Mapping[type[Event], Handler] = field(default_factory=dict)
    background: Sequence[BackgroundTask] = ()
    """Extra loops (e.g. a deadline sweeper), run until shutdown."""


class Runtime:
    """The live objects of one service process, started and stopped in order."""

    def __init__(self, spec: ServiceSpec, settings: Settings) -> None:
        self.spec = spec
        self.settings = settings
        self.schema = settings.schema_of(spec.name)
        self.engine = make_engine(settings.database_url, self.schema, settings.db_pool_size)
        self.sessions = make_sessions(self.engine)
        self.topic = settings.topic(spec.name) if spec.publishes else None
        self.source = f"/hotline/{spec.name}"
        self.relay: OutboxRelay | None = None
        self.consumer: AIOKafkaConsumer | None = None
        self.loop: ConsumerLoop | None = None
        self._make_clients()
        self.broker_connected = asyncio.Event()
        self._stopping = asyncio.Event()
        self._give_up_connecting = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def _make_clients(self) -> None:
        """New Kafka clients, wired into the relay and the consumer loop (a client that failed
        to start cannot be started again)."""
        settings, spec = self.settings, self.spec
        self.producer: AIOKafkaProducer = make_producer(settings, client_id=f"hotline-{spec.name}")
        if spec.publishes:
            publisher = KafkaPublisher(self.producer)
            if self.relay is None:
                self.relay = OutboxRelay(
                    SqlOutboxStore(self.sessions, lock_name=f"hotline-relay-{self.schema}"),
                    publisher,
                    service=spec.name,
                    batch_size=settings.relay_batch_size,
                    idle_seconds=settings.relay_idle_seconds,
                    max_backoff_seconds=settings.relay_max_backoff_seconds,
                )
            self.relay.publisher = publisher
        if not spec.consumes:
            return
        self.consumer = AIOKafkaConsumer(
            *[settings.topic(owner) for owner in spec.consumes],
            bootstrap_servers=settings.kafka_bootstrap_servers,
            group_id=f"{settings.topic_prefix}hotline-{spec.name}",
            client_id=f"hotline-{spec.name}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=settings.consumer_session_timeout_ms,
            heartbeat_interval_ms=max(1000, settings.consumer_session_timeout_ms // 3),
            max_poll_records=settings.consumer_batch_size,
        )
        source = KafkaSource(
            self.consumer,
            batch_size=settings.consumer_batch_size,
            poll_ms=settings.consumer_poll_ms,
        )
        if self.loop is None:
            self.loop = ConsumerLoop(
                service=spec.name,
                source=source,
                handlers=spec.handlers,
                new_uow=self.uow,
                dead_letters=KafkaDeadLetterSink(self.producer),
                max_backoff_seconds=settings.consumer_max_backoff_seconds,
            )
        self.loop.source = source
        self.loop.dead_letters = KafkaDeadLetterSink(self.producer)

    def uow(self) -> UnitOfWork:
        """A new unit of work; events it emits wake the relay on commit."""
        return UnitOfWork(
            self.sessions,
            source=self.source,
            topic=self.topic,
            on_commit=self.relay.wake if self.relay else None,
        )

    async def start(self) -> None:
        """Migrate, then start the loops. The broker may be down: the loops wait for it."""
        if self.settings.migrate_on_start:
            await upgrade_async(
                f"services.{self.spec.name}", self.settings.database_url, self.schema
            )
        self.spawn(self._run_bus(), f"{self.spec.name}-bus")
        for loop in self.spec.background:
            self.spawn(loop(self, self._stopping), loop.__name__)

    def spawn(self, loop: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """Run a loop until shutdown; should it end before, the service reports not ready."""
        task = asyncio.create_task(loop, name=name)
        task.add_done_callback(self._report_stopped)
        self._tasks.append(task)
        return task

    def _report_stopped(self, task: asyncio.Task[None]) -> None:
        if self._stopping.is_set() or task.cancelled():
            return
        log.critical(
            "a background loop stopped; the service is no longer ready",
            exc_info=task.exception(),
            extra={"service": self.spec.name, "loop": task.get_name()},
        )

    async def stop(self) -> None:
        """Stop the loops, then drain: consume what is left, publish what is left (bounded).

        A service asked to stop while still connecting finishes connecting first (within the
        drain bound), so events that reached the broker before it joined are not left behind.
        """
        self._stopping.set()
        drain = self.settings.shutdown_drain_seconds
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=drain)
            # A loop stuck on an unreachable broker is cancelled; its batch stays unpublished
            # or uncommitted and is picked up again at the next start.
            self._give_up_connecting.set()
            for task in pending:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.broker_connected.is_set():
            if self.loop is not None and not await self.loop.drain(drain):
                log.warning("consumer not drained at shutdown", extra={"service": self.spec.name})
            if self.relay is not None and not await self.relay.drain(drain):
                log.warning("outbox not drained at shutdown", extra={"service": self.spec.name})
        await self._close_clients()
        await self.engine.dispose()

    async def _connect(self) -> bool:
        """Start the clients, retrying while the broker is down; False if told to give up."""
        backoff = Backoff(maximum=5.0)
        while True:
            try:
                await ensure_topics(self.settings, self._topics())
                await self.producer.start()
                if self.consumer is not None:
                    await self.consumer.start()
                return True
            except Exception as exc:
                TRANSIENT_ERRORS.labels(self.spec.name, "connect").inc()
                log.warning(
                    "waiting for the broker",
                    extra={"service": self.spec.name, "error": repr(exc)},
                )
                await self._close_clients()
                self._make_clients()
                if self._give_up_connecting.is_set():
                    return False
                await backoff.wait(self._give_up_connecting)

    async def _run_bus(self) -> None:
        """Connect to the broker, then relay and consume until stopped."""
        if not await self._connect():
            return
        self.broker_connected.set()
        if self._stopping.is_set():
            return
        loops = []
        if self.relay is not None:
            loops.append(self.relay.run(self._stopping))
        if self.loop is not None:
            loops.append(self.loop.run(self._stopping))
        await asyncio.gather(*loops)

    def _topics(self) -> list[str]:
        own = [self.topic] if self.topic else []
        consumed = [self.settings.topic(owner) for owner in self.spec.consumes]
        return own + [dlq_topic(t) for t in own + consumed] + consumed

    async def _close_clients(self) -> None:
        for client in (self.consumer, self.producer):
            if client is None:
                continue
            try:
                await client.stop()
            except Exception as exc:  # closing a client that never connected
                log.debug("client stop failed", extra={"error": repr(exc)})

    async def readiness(self) -> dict[str, str]:
        """Whether the database and the broker answer now."""
        checks: dict[str, str] = {}
        try:
            async with self.engine.connect() as connection:
                await asyncio.wait_for(connection.execute(sa.text("SELECT 1")), timeout=2)
            checks["database"] = "ok"
        except Exception as exc:
            checks["database"] = f"unreachable: {type(exc).__name__}"
        if not self.broker_connected.is_set():
            checks["broker"] = "connecting"
        else:
            try:
                await asyncio.wait_for(self.producer.client.fetch_all_metadata(), timeout=2)
                checks["broker"] = "ok"
            except Exception as exc:
                checks["broker"] = f"unreachable: {type(exc).__name__}"
        stopped = [task for task in self._tasks if task.done()]
        if stopped and not self._stopping.is_set():
            # A relay, consumer or sweeper that died would otherwise go unnoticed.
            checks["loops"] = f"stopped: {', '.join(task.get_name() for task in stopped)}"
        return checks


def get_uow(request: Request) -> UnitOfWork:
    """FastAPI dependency: a fresh unit of work of the running service."""
    runtime: Runtime = request.app.state.runtime
    return runtime.uow()


UowDep = Annotated[UnitOfWork, Depends(get_uow)]
"""A route's unit of work: `async def route(..., uow: UowDep)`."""


def create_service_app(spec: ServiceSpec, settings: Settings) -> FastAPI:
    """The FastAPI app of a service, with health, readiness, metrics and error mapping."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = Runtime(spec, settings)
        app.state.runtime = runtime
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    app = FastAPI(title=spec.title, lifespan=lifespan)
    app.state.settings = settings
    install_error_handlers(app, settings.retry_after_seconds)
    instrument(app, spec.name)

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, str]:
        """Alive: the process answers."""
        return {"status": "ok", "service": spec.name}

    @app.get("/readyz", tags=["ops"], responses={503: {"description": "Not ready"}})
    async def readyz() -> Any:
        """Ready: the database and the broker are reachable."""
        runtime: Runtime = app.state.runtime
        checks = await runtime.readiness()
        ready = all(value == "ok" for value in checks.values())
        return JSONResponse(
            status_code=200 if ready else 503,
            content={"status": "ready" if ready else "not ready", "checks": checks},
        )

    for router in spec.routers:
        app.include_router(router)
    return app
