"""Engine, sessions and the unit of work: a state change and its events in one transaction.

Each service owns one PostgreSQL schema. Its engine pins `search_path` to that schema, so
tables are declared without a schema and the same shared tables (outbox, processed events)
exist once per service.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any, Protocol, Self, TypeVar, cast

from sqlalchemy import Executable, Result
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.events import Event
from shared.outbox import append_to_outbox


def make_engine(database_url: str, schema: str, pool_size: int = 10) -> AsyncEngine:
    """An asyncpg engine whose connections see only `schema` (then `public`)."""
    return create_async_engine(
        database_url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        connect_args={"server_settings": {"search_path": schema}, "timeout": 10},
    )


def make_sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions that keep loaded objects usable after commit (no implicit lazy reloads)."""
    return async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)


def new_id() -> str:
    """A random, URL-safe identifier for tickets, work orders and events."""
    return str(uuid.uuid4())


class Accumulator(Protocol):
    """Changes gathered across a transaction and written once, just before it commits
    (e.g. aggregate rows many events add to: written once per batch, not once per event)."""

    def merge(self, other: Self) -> None:
        """Take in what a savepoint that succeeded gathered."""

    async def flush(self, uow: UnitOfWork) -> None:
        """Write what was gathered, inside the transaction."""


A = TypeVar("A", bound=Accumulator)


class UnitOfWork:
    """One transaction. Emitted events go to the outbox in that same transaction.

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
        self._sessions = sessions
        self._source = source
        self._topic = topic
        self._on_commit = on_commit
        self._emitted = 0
        self._session: AsyncSession | None = None
        self._accumulators: list[dict[str, Accumulator]] = [{}]

    @property
    def session(self) -> AsyncSession:
        """The open session; only valid inside `async with`."""
        if self._session is None:
            raise RuntimeError("UnitOfWork used outside `async with`")
        return self._session

    async def __aenter__(self) -> Self:
        self._session = self._sessions()
        self._emitted = 0
        self._accumulators = [{}]
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

    async def execute(self, statement: Executable) -> Result[Any]:
        """Run a Core statement (shared tables are Core, not SQLModel) in this transaction."""
        connection = await self.session.connection()
        return await connection.execute(statement)

    @asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        """A nested transaction: what fails inside it is undone without losing the rest,
        including what it gathered in accumulators."""
        self._accumulators.append({})
        try:
            async with self.session.begin_nested():
                yield
        except BaseException:
            self._accumulators.pop()
            raise
        gathered = self._accumulators.pop()
        outer = self._accumulators[-1]
        for key, accumulator in gathered.items():
            if key in outer:
                outer[key].merge(accumulator)
            else:
                outer[key] = accumulator

    def accumulator(self, key: str, factory: Callable[[], A]) -> A:
        """This transaction's accumulator named `key`, made by `factory` on first use; it is
        flushed by `commit()`."""
        layer = self._accumulators[-1]
        if key not in layer:
            layer[key] = factory()
        found = layer[key]
        return cast(A, found)

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

    async def commit(self) -> None:
        """Write the accumulators, commit the state change and its events together, then
        wake the relay."""
        if len(self._accumulators) != 1:
            raise RuntimeError("commit() inside a savepoint")
        gathered, self._accumulators = self._accumulators[0], [{}]
        for accumulator in gathered.values():
            await accumulator.flush(self)
        await self.session.commit()
        if self._emitted and self._on_commit is not None:
            self._on_commit()
        self._emitted = 0

    async def rollback(self) -> None:
        """Drop everything done in this transaction."""
        await self.session.rollback()
        self._emitted = 0
        self._accumulators = [{}]
