"""Transactional outbox: events are rows written with the state change; a relay publishes them.

The relay publishes rows in `seq` order with `acks=all` and marks them published only
after the broker acknowledged them. While the broker is down it waits and retries: a row
is never dropped. Only one relay per service publishes at a time (a transaction-scoped
advisory lock), so replicas never reorder one ticket's events.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.bus_tables import outbox
from shared.envelope import encode, event_data
from shared.events import Event
from shared.kafka import KafkaClients
from shared.observability import EVENTS_PUBLISHED, OUTBOX_BACKLOG, OUTBOX_OLDEST_SECONDS
from shared.retry import Backoff

log = logging.getLogger(__name__)


async def append_to_outbox(
    session: AsyncSession, event: Event, *, event_id: str, topic: str, source: str
) -> None:
    """Write `event` into the caller's transaction; the relay publishes it after commit."""
    await (await session.connection()).execute(
        outbox.insert().values(
            event_id=event_id,
            topic=topic,
            ce_type=event.ce_type,
            source=source,
            key=event.ticket_id,
            time=event.occurred_at(),
            data=event_data(event),
        )
    )


@dataclass(frozen=True)
class PendingEvent:
    """An outbox row waiting to be published."""

    seq: int
    event_id: str
    topic: str
    ce_type: str
    source: str
    key: str
    time: datetime
    data: dict[str, Any]


@dataclass
class PublishResult:
    """Which rows the broker acknowledged, and the first error if some were not."""

    sent: list[int] = field(default_factory=list)
    error: BaseException | None = None


class Publisher(Protocol):
    """Sends events to the broker; `KafkaPublisher` in production, a fake in unit tests."""

    async def publish(self, events: Sequence[PendingEvent]) -> PublishResult: ...


class OutboxBatch(Protocol):
    """Rows claimed by this relay inside one transaction."""

    events: list[PendingEvent]

    async def mark_published(self, seqs: Sequence[int]) -> None: ...

    async def record_failure(self, seqs: Sequence[int], error: str) -> None: ...


class OutboxStore(Protocol):
    """Where the relay reads pending rows; `SqlOutboxStore` in production."""

    def claim(self, limit: int) -> AbstractAsyncContextManager[OutboxBatch | None]: ...

    async def backlog(self) -> tuple[int, float]: ...

    async def prune_published(self, older_than_seconds: float) -> int: ...


@dataclass
class _SqlBatch:
    session: AsyncSession
    events: list[PendingEvent]

    async def mark_published(self, seqs: Sequence[int]) -> None:
        await (await self.session.connection()).execute(
            outbox.update()
            .where(outbox.c.seq.in_(list(seqs)))
            .values(published_at=sa.func.now(), attempts=outbox.c.attempts + 1, last_error=None)
        )

    async def record_failure(self, seqs: Sequence[int], error: str) -> None:
        await (await self.session.connection()).execute(
            outbox.update()
            .where(outbox.c.seq.in_(list(seqs)))
            .values(attempts=outbox.c.attempts + 1, last_error=error[:2000])
        )


class SqlOutboxStore:
    """The outbox table of one service's schema."""

    def __init__(self, sessions: async_sessionmaker[Any], lock_name: str) -> None:
        self._sessions = sessions
        self._lock_name = lock_name

    @asynccontextmanager
    async def claim(self, limit: int) -> AsyncIterator[_SqlBatch | None]:
        """The oldest pending rows, or None while another replica's relay holds the lock."""
        async with self._sessions() as session, session.begin():
            leader = await session.scalar(
                sa.select(sa.func.pg_try_advisory_xact_lock(sa.func.hashtext(self._lock_name)))
            )
            if not leader:
                yield None
                return
            rows = await (await session.connection()).execute(
                sa.select(outbox)
                .where(outbox.c.published_at.is_(None))
                .order_by(outbox.c.seq)
                .limit(limit)
            )
            events = [
                PendingEvent(
                    seq=row.seq,
                    event_id=row.event_id,
                    topic=row.topic,
                    ce_type=row.ce_type,
                    source=row.source,
                    key=row.key,
                    time=row.time,
                    data=row.data,
                )
                for row in rows
            ]
            yield _SqlBatch(session, events)

    async def backlog(self) -> tuple[int, float]:
        """How many rows wait, and how old the oldest is in seconds."""
        async with self._sessions() as session:
            row = (
                await (await session.connection()).execute(
                    sa.select(
                        sa.func.count(),
                        sa.func.coalesce(
                            sa.func.extract(
                                "epoch", sa.func.now() - sa.func.min(outbox.c.created_at)
                            ),
                            0,
                        ),
                    ).where(outbox.c.published_at.is_(None))
                )
            ).one()
            return int(row[0]), float(row[1])

    async def prune_published(self, older_than_seconds: float) -> int:
        """Delete rows published long ago; the topic and the consumers have them."""
        async with self._sessions() as session, session.begin():
            result = await (await session.connection()).execute(
                sa.delete(outbox).where(
                    outbox.c.published_at
                    < sa.func.now() - sa.func.make_interval(0, 0, 0, 0, 0, 0, older_than_seconds)
                )
            )
            return int(getattr(result, "rowcount", 0) or 0)


class KafkaPublisher:
    """Sends a batch through the process's producer and waits for every acknowledgement."""

    def __init__(self, clients: KafkaClients) -> None:
        self._clients = clients

    async def publish(self, events: Sequence[PendingEvent]) -> PublishResult:
        producer = self._clients.producer
        futures = []
        result = PublishResult()
        for event in events:
            record = encode(
                event_id=event.event_id,
                ce_type=event.ce_type,
                source=event.source,
                time=event.time,
                key=event.key,
                data=event.data,
            )
            try:
                futures.append(
                    await producer.send(
                        event.topic, record.value, key=record.key, headers=record.headers
                    )
                )
            except Exception as exc:
                result.error = exc
                break
        outcomes = await asyncio.gather(*futures, return_exceptions=True)
        for event, outcome in zip(events, outcomes, strict=False):
            if isinstance(outcome, BaseException):
                result.error = result.error or outcome
            else:
                result.sent.append(event.seq)
        return result


class OutboxRelay:
    """Publishes one service's outbox, a batch a step (`shared.background` runs it); never
    drops a row."""

    name = "outbox-relay"

    def __init__(
        self,
        store: OutboxStore,
        publisher: Publisher,
        *,
        service: str,
        batch_size: int = 500,
        idle_seconds: float = 0.2,
        max_backoff_seconds: float = 10.0,
        keep_published_seconds: float = 24 * 3600,
    ) -> None:
        self._store = store
        self._publisher = publisher
        self._service = service
        self._batch_size = batch_size
        self._idle_seconds = idle_seconds
        self._max_backoff = max_backoff_seconds
        self._backoff = Backoff(maximum=max_backoff_seconds)
        self._keep_published_seconds = keep_published_seconds
        self.wakeup = asyncio.Event()
        """Set when a commit put rows in the outbox: the runner then skips the idle wait."""
        self._last_housekeeping = 0.0
        self._last_prune = 0.0

    @property
    def max_backoff(self) -> float:
        """The longest wait between retries while the broker or database is away."""
        return self._max_backoff

    def wake(self) -> None:
        """Something was committed to the outbox: publish now rather than at the next poll."""
        self.wakeup.set()

    async def backlog(self) -> int:
        """How many events wait to be published."""
        count, _ = await self._store.backlog()
        return count

    async def relay_once(self) -> int:
        """Publish one batch. Returns how many rows went out; raises if the broker failed."""
        async with self._store.claim(self._batch_size) as batch:
            if batch is None or not batch.events:
                return 0
            result = await self._publisher.publish(batch.events)
            if result.sent:
                await batch.mark_published(result.sent)
            sent = set(result.sent)
            for event in batch.events:
                if event.seq in sent:
                    EVENTS_PUBLISHED.labels(self._service, event.topic, event.ce_type).inc()
            if result.error is not None:
                failed = [event.seq for event in batch.events if event.seq not in sent]
                await batch.record_failure(failed, repr(result.error))
        if result.error is not None:
            raise result.error
        return len(result.sent)

    async def step(self) -> float:
        """Publish one batch; at once again after a full batch, else after the idle time."""
        published = await self.relay_once()
        await self._housekeeping()
        return 0.0 if published >= self._batch_size else self._idle_seconds

    async def drain(self, timeout: float) -> bool:
        """Publish what is left, for at most `timeout` seconds. True if the outbox is empty."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                async with asyncio.timeout(deadline - time.monotonic()):
                    if await self.relay_once() == 0 and (await self._store.backlog())[0] == 0:
                        return True
            except TimeoutError:
                break
            except Exception as exc:
                log.warning("outbox drain retrying", extra={"error": repr(exc)})
                await asyncio.sleep(
                    max(0.0, min(self._backoff.next_delay(), deadline - time.monotonic()))
                )
        return False

    async def _housekeeping(self) -> None:
        """Refresh the backlog gauges (at most once a second) and prune old published rows."""
        now = time.monotonic()
        if now - self._last_housekeeping < 1.0:
            return
        self._last_housekeeping = now
        count, oldest = await self._store.backlog()
        OUTBOX_BACKLOG.labels(self._service).set(count)
        OUTBOX_OLDEST_SECONDS.labels(self._service).set(oldest)
        if now - self._last_prune >= 60.0:
            self._last_prune = now
            await self._store.prune_published(self._keep_published_seconds)
