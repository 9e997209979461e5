"""The database of one service: engine, transactions that write, transactions that only read.

Each service owns one PostgreSQL schema. Its engine pins `search_path` to that schema, so
tables are declared without a schema and the same bus tables (outbox, processed events)
exist once per service.

Who may do what is in the types:
- a command opens a `UnitOfWork`, writes, emits and commits it (it owns the transaction);
- a projection gets a `Transaction`: it writes and emits in the consumer batch's
  transaction, which the consumer loop commits; it has no `commit`;
- a view gets a `ReadTransaction`: PostgreSQL itself refuses any write in it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any, Self

import sqlalchemy as sa
from sqlalchemy import Executable, Result
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel import SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.events import Event
from shared.outbox import append_to_outbox, outbox_row


def make_engine(
    database_url: str, schema: str, pool_size: int = 10, application_name: str = "hotline"
) -> AsyncEngine:
    """An asyncpg engine whose connections see only `schema` (then `public`), named
    `application_name` in `pg_stat_activity` (so an operator sees which service holds what).

    Statement parameters never appear in its errors or logs: they carry citizens' requests.
    """
    return create_async_engine(
        database_url,
        pool_size=pool_size,
        max_overflow=pool_size,
        # No ping before each use (a round trip per request): a connection found broken
        # (PostgreSQL restarted) is invalidated with every older one in the pool, so one
        # request fails (503, Retry-After) and the next ones get new connections.
        hide_parameters=True,
        connect_args={
            "server_settings": {"search_path": schema, "application_name": application_name},
            "timeout": 10,
        },
    )


def make_sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions that keep loaded objects usable after commit (no implicit lazy reloads)."""
    return async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)


def new_id() -> str:
    """A random, URL-safe identifier for tickets, work orders and events."""
    return str(uuid.uuid4())


class ReadTransaction:
    """A read-only transaction: what a view may use. Writes fail in PostgreSQL."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def execute(
        self, statement: Executable, parameters: dict[str, Any] | None = None
    ) -> Result[Any]:
        """Run a Core statement in this transaction (with `parameters` for one built once
        with named bind parameters)."""
        connection = await self.session.connection()
        return await connection.execute(statement, parameters)


class Transaction:
    """An open transaction that writes: what a projection may use. Emitted events go to the
    outbox in the same transaction. Committing it is its owner's job, not the user's."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        source: str,
        topic: str | None,
    ) -> None:
        self._sessions = sessions
        self._source = source
        self._topic = topic
        self._emitted = 0
        self._session: AsyncSession | None = None
        self.event_id: str | None = None
        """The id (`ce_id`) of the event a projection is applying, set by the consumer loop
        before each handler: a projection that keeps the event itself keys it by this."""

    @property
    def session(self) -> AsyncSession:
        """The open session; only valid inside the owner's `async with`."""
        if self._session is None:
            raise RuntimeError("transaction used outside `async with`")
        return self._session

    async def execute(
        self, statement: Executable, parameters: dict[str, Any] | None = None
    ) -> Result[Any]:
        """Run a Core statement (the bus tables are Core, not SQLModel) in this transaction,
        with `parameters` for a statement built once with named bind parameters."""
        connection = await self.session.connection()
        return await connection.execute(statement, parameters)

    async def flush(self) -> None:
        """Write what the batch's projections gathered instead of writing it event by event.

        Nothing by default; the consumer loop calls it before committing, so that a failure
        here is handled like a projection's (see `services.metrics.unit_of_work`)."""

    async def insert_once(
        self, table: sa.Table | type[SQLModel], key: str, **values: object
    ) -> bool:
        """Insert a fact unless one with the same `key` (its id) exists; True if this call
        inserted it. How projections stay idempotent when an event comes twice."""
        statement = (
            pg_insert(table)
            .values(**values)
            .on_conflict_do_nothing(index_elements=[key])
            .returning(sa.literal(True))
        )
        return (await self.execute(statement)).first() is not None

    @asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        """A nested transaction: what fails inside it is undone without losing the rest."""
        async with self.session.begin_nested():
            yield

    async def emit(self, event: Event, event_id: str | None = None) -> str:
        """Add `event` to the outbox of this transaction; returns its CloudEvent id."""
        if self._topic is None:
            raise RuntimeError("this service publishes no events")
        event_id = event_id or new_id()
        await append_to_outbox(
            self.session, event, event_id=event_id, topic=self._topic, source=self._source
        )
        self._emitted += 1
        return event_id


class UnitOfWork(Transaction):
    """A transaction its holder owns: `async with uow: ...; await uow.commit()`.

    Rolls back unless `commit()` was called: a handler that fails halfway leaves nothing.
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        source: str,
        topic: str | None,
        on_commit: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(sessions, source=source, topic=topic)
        self._on_commit = on_commit

    async def __aenter__(self) -> Self:
        self._session = self._sessions()
        self._emitted = 0
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # close() rolls back what was not committed without expiring loaded objects, so
        # results stay readable after the block.
        await self.session.close()
        self._session = None

    async def commit(self) -> None:
        """Commit the state change and its events together, then wake the relay."""
        await self.session.commit()
        if self._emitted and self._on_commit is not None:
            self._on_commit()
        self._emitted = 0

    async def rollback(self) -> None:
        """Drop everything done in this transaction."""
        await self.session.rollback()
        self._emitted = 0


UnitOfWorkFactory = Callable[[], UnitOfWork]
"""A new unit of work each call: what commands and background work are given."""

Queryable = ReadTransaction | Transaction
"""Either kind of transaction, for a read that views and commands share (e.g. "the ticket,
or 409 while its event is on its way")."""


class Database:
    """One service's schema: the engine, units of work, read-only transactions."""

    def __init__(
        self,
        database_url: str,
        schema: str,
        *,
        pool_size: int,
        source: str,
        topic: str | None,
        unit_of_work: type[UnitOfWork] = UnitOfWork,
    ) -> None:
        self.schema = schema
        self.engine = make_engine(
            database_url, schema, pool_size, application_name=source.strip("/").replace("/", "-")
        )
        self._sessions = make_sessions(self.engine)
        self._source = source
        self._topic = topic
        self._unit_of_work = unit_of_work
        self.on_commit: Callable[[], None] | None = None
        """Called after a commit that emitted events (the relay's wake-up)."""

    @property
    def sessions(self) -> async_sessionmaker[AsyncSession]:
        """The session factory (the outbox relay reads and marks rows with it)."""
        return self._sessions

    def unit_of_work(self) -> UnitOfWork:
        """A new unit of work; events it emits wake the relay on commit."""
        return self._unit_of_work(
            self._sessions, source=self._source, topic=self._topic, on_commit=self._wake
        )

    def _wake(self) -> None:
        if self.on_commit is not None:
            self.on_commit()

    async def write_once(
        self, statement: Executable, parameters: dict[str, Any]
    ) -> list[sa.Row[Any]]:
        """Run one statement as its own transaction and return its rows; wake the relay if
        it returned any (a statement of `shared.outbox.insert_with_event` returns the event
        it stored).

        Autocommit: the statement alone is atomic, so there is no BEGIN and no COMMIT to
        wait for, one round trip in all. For a state change and its event that fit in one
        statement; anything that must read first takes a unit of work.
        """
        async with self.engine.connect() as connection:
            autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
            rows = list((await autocommit.execute(statement, parameters)).all())
        if rows:
            self._wake()
        return rows

    async def store_with_event(
        self, statement: Executable, row: dict[str, Any], event: Event
    ) -> bool:
        """Store `row` and `event` with one statement of `shared.outbox.insert_with_event`
        (one round trip); False if the statement stored neither (its unique constraint)."""
        if self._topic is None:
            raise RuntimeError("this service publishes no events")
        stored = outbox_row(event, event_id=new_id(), topic=self._topic, source=self._source)
        parameters = {**row, **{f"outbox_{name}": value for name, value in stored.items()}}
        return bool(await self.write_once(statement, parameters))

    @asynccontextmanager
    async def read(self) -> AsyncIterator[ReadTransaction]:
        """A read-only transaction (`BEGIN READ ONLY`: no extra round trip)."""
        async with self._sessions() as session:
            await session.connection(execution_options={"postgresql_readonly": True})
            yield ReadTransaction(session)

    async def ping(self, timeout: float) -> None:
        """Raise unless the database answers `SELECT 1` within `timeout` seconds."""
        async with self.engine.connect() as connection:
            await asyncio.wait_for(connection.execute(sa.text("SELECT 1")), timeout=timeout)

    async def dispose(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()
