"""Transactional outbox: events are rows written with the state change; a relay publishes them.

The relay publishes rows in `seq` order with `acks=all` and marks them published only
after the broker acknowledged them. While the broker is down it waits and retries: a row
is never dropped. Only one relay per service publishes at a time (a transaction-scoped
advisory lock), so replicas never reorder one ticket's events.

A row that can never be published as it is (it cannot be encoded, or the broker refuses the
record for good: too large, no such topic, not allowed) is *set aside* with its error
instead of stalling every row behind it. The later rows of its ticket (the key) are held
behind it, so one ticket's events stay in order, while other tickets' go on. A person fixes
it and puts it back (`hotline outbox retry`); the relay then publishes it and the held rows
in their order.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import sqlalchemy as sa
from aiokafka.errors import (
    CorruptRecordException,
    InvalidTimestampError,
    InvalidTopicError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
    TopicAuthorizationFailedError,
    UnsupportedForMessageFormatError,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.background import Periodic
from shared.bus_tables import outbox
from shared.envelope import KafkaRecord, encode, event_data
from shared.events import Event
from shared.faults import crash_point
from shared.kafka import KafkaClients
from shared.names import ServiceName
from shared.observability import (
    EVENTS_PUBLISHED,
    OUTBOX_BACKLOG,
    OUTBOX_HELD,
    OUTBOX_OLDEST_SECONDS,
    OUTBOX_SET_ASIDE,
    OUTBOX_SET_ASIDE_TOTAL,
)
from shared.retry import Backoff, is_transient
from shared.settings import Settings

log = logging.getLogger(__name__)

MAX_ERROR_CHARS = 2000
PRUNE_INTERVAL_SECONDS = 60.0


_APPEND = outbox.insert()
"""One statement for every append, its values bound per call: building `insert().values()`
anew (and its cache key) for each event was a measurable part of intake's time."""


def outbox_row(event: Event, *, event_id: str, topic: str, source: str) -> dict[str, Any]:
    """The outbox row of `event`: what the relay publishes."""
    return {
        "event_id": event_id,
        "topic": topic,
        "ce_type": event.ce_type,
        "source": source,
        "key": event.ticket_id,
        "time": event.occurred_at(),
        "data": event_data(event),
    }


async def append_to_outbox(
    session: AsyncSession, event: Event, *, event_id: str, topic: str, source: str
) -> None:
    """Write `event` into the caller's transaction; the relay publishes it after commit."""
    row = outbox_row(event, event_id=event_id, topic=topic, source=source)
    await (await session.connection()).execute(_APPEND, row)


_OUTBOX_COLUMNS = ("event_id", "topic", "ce_type", "source", "key", "time", "data")


def insert_with_event(
    table: sa.Table, columns: Sequence[str], *, unique: str | None = None
) -> sa.TextClause:
    """One statement that inserts a row of `table` and its event into the outbox, built once.

    A single statement is one transaction by itself, so run on its own (autocommit: see
    `shared.db.Database.write_once`) it costs one round trip, with no BEGIN or COMMIT, and
    the row and its event are stored together or not at all. With `unique` (a constraint's
    name), a row that would break it inserts nothing, and then no event either; the
    statement returns the event's `seq` only when both were stored. Parameters: the row's
    `columns`, and the outbox row (`outbox_row`) with its names prefixed `outbox_`.
    """
    conflict = f" ON CONFLICT ON CONSTRAINT {unique} DO NOTHING" if unique else ""
    event_values = [f":outbox_{name}" for name in _OUTBOX_COLUMNS]
    event_values[-1] = "CAST(:outbox_data AS JSONB)"
    statement = sa.text(
        f"WITH stored AS (INSERT INTO {table.name} ({', '.join(columns)})"
        f" VALUES ({', '.join(f':{name}' for name in columns)}){conflict} RETURNING 1)\n"
        f"INSERT INTO {outbox.name} ({', '.join(_OUTBOX_COLUMNS)})"
        f" SELECT {', '.join(event_values)} FROM stored RETURNING seq"
    )
    return statement.bindparams(
        sa.bindparam("outbox_data", type_=outbox.c.data.type),
        *[sa.bindparam(name, type_=table.c[name].type) for name in columns],
    )


def relay_lock_name(schema: str) -> str:
    """The advisory lock whose holder is the one relay publishing `schema`'s outbox."""
    return f"hotline-relay-{schema}"


@dataclass(frozen=True)
class PendingEvent:
    """An outbox row waiting to be published."""

    seq: int
    event_id: str
    topic: str
    ce_type: str
    source: str
    key: str
    time: datetime | None
    """None when the stored time is not one an event can carry (`stored_time` says what)."""
    data: dict[str, Any]
    stored_time: str = ""


class UnsendableEvent(ValueError):
    """An outbox row that cannot become a record as it is stored."""


_REFUSED_FOR_GOOD: tuple[type[BaseException], ...] = (
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
    InvalidTopicError,
    TopicAuthorizationFailedError,
    CorruptRecordException,
    InvalidTimestampError,
    UnsupportedForMessageFormatError,
)


def refused_for_good(exc: BaseException) -> bool:
    """True when the producer or the broker will never take the record as it is (too large,
    an invalid or forbidden topic): sending it again cannot help, so its row is set aside.
    Anything else (the broker away, timeouts, an unknown error) is retried."""
    return isinstance(exc, _REFUSED_FOR_GOOD) and not is_transient(exc)


def describe(exc: BaseException) -> str:
    """An error as stored in `last_error`: its type and message."""
    text = str(exc)
    return (f"{type(exc).__name__}: {text}" if text else type(exc).__name__)[:MAX_ERROR_CHARS]


def encode_pending(event: PendingEvent) -> KafkaRecord:
    """The record of an outbox row; raises if the row cannot make one."""
    if event.time is None:
        raise UnsendableEvent(
            f"the stored time {event.stored_time!r} is not one an event can carry "
            "(it must be a finite time in the years 1-9999)"
        )
    return encode(
        event_id=event.event_id,
        ce_type=event.ce_type,
        source=event.source,
        time=event.time,
        key=event.key,
        data=event.data,
    )


@dataclass(frozen=True)
class OutgoingRecord:
    """An outbox row encoded for the broker."""

    seq: int
    topic: str
    key: str
    record: KafkaRecord


@dataclass
class PublishResult:
    """Which rows the broker acknowledged and why others failed. Rows after a send that
    failed are not attempted (they are in neither)."""

    sent: list[int] = field(default_factory=list)
    failed: dict[int, BaseException] = field(default_factory=dict)


class Publisher(Protocol):
    """Sends records to the broker; `KafkaPublisher` in production, a fake in unit tests."""

    async def publish(self, records: Sequence[OutgoingRecord]) -> PublishResult: ...


class OutboxBatch(Protocol):
    """Rows claimed by this relay inside one transaction."""

    events: list[PendingEvent]

    async def mark_published(self, seqs: Sequence[int]) -> None: ...

    async def record_failure(self, seqs: Sequence[int], error: str) -> None: ...

    async def set_aside(self, errors: Mapping[int, str]) -> None: ...


@dataclass(frozen=True)
class OutboxStatus:
    """How an outbox stands."""

    pending: int
    """Rows the relay may publish: not published, not set aside, not held."""
    oldest_pending_seconds: float
    """Age of the oldest of those (0 when there is none)."""
    set_aside: int
    """Rows set aside because they can never be published as they are."""
    held: int
    """Pending rows waiting behind an earlier row of their ticket that was set aside."""


class OutboxStore(Protocol):
    """Where the relay reads pending rows; `SqlOutboxStore` in production."""

    def claim(self, limit: int) -> AbstractAsyncContextManager[OutboxBatch | None]: ...

    async def status(self) -> OutboxStatus: ...

    async def prune_published(self, older_than_seconds: float) -> int: ...


@dataclass(frozen=True)
class OutboxRow:
    """One outbox row as a person inspects it (`hotline outbox show`)."""

    seq: int
    event_id: str
    topic: str
    ce_type: str
    source: str
    key: str
    time: str
    """As stored (text: a stored time need not be one Python can hold)."""
    data: Any
    created_at: datetime
    published_at: datetime | None
    set_aside_at: datetime | None
    attempts: int
    last_error: str | None
    held: bool
    """Pending, but waiting behind an earlier row of its ticket that was set aside."""

    @property
    def state(self) -> str:
        """published, set aside, held or pending."""
        if self.published_at is not None:
            return "published"
        if self.set_aside_at is not None:
            return "set aside"
        return "held" if self.held else "pending"


class NotSetAside(LookupError):
    """Rows asked to be put back that are not set aside (no such row, or not set aside)."""

    def __init__(self, seqs: Sequence[int]) -> None:
        super().__init__(f"not set aside: {', '.join(str(seq) for seq in seqs)}")
        self.seqs = list(seqs)


_WHAT_AND_WHERE = (
    outbox.c.seq,
    outbox.c.event_id,
    outbox.c.topic,
    outbox.c.ce_type,
    outbox.c.source,
    outbox.c.key,
)
_PENDING = sa.and_(outbox.c.published_at.is_(None), outbox.c.set_aside_at.is_(None))
_SET_ASIDE = outbox.c.set_aside_at.is_not(None)
# Times Python (and so the CloudEvent) can hold; others (±infinity, year 10000) are read as
# text so one such row cannot make the whole claim fail.
_SENDABLE_TIME = sa.func.date_part("year", sa.func.timezone("UTC", outbox.c.time)).between(1, 9999)


def _held() -> sa.Exists:
    """Whether the outer outbox row has an earlier row of its key set aside (an index
    lookup in `outbox_set_aside`)."""
    earlier = outbox.alias("earlier")
    return sa.exists().where(
        earlier.c.set_aside_at.is_not(None),
        earlier.c.key == outbox.c.key,
        earlier.c.seq < outbox.c.seq,
    )


def claim_query(limit: int) -> sa.Select[Any]:
    """The relay's scan: the oldest pending rows not held behind a row set aside (index scans
    of `outbox_pending`, probing `outbox_set_aside`), their time None when it cannot be sent."""
    return (
        sa.select(
            *_WHAT_AND_WHERE,
            sa.case((_SENDABLE_TIME, outbox.c.time), else_=sa.null()).label("time"),
            sa.case((_SENDABLE_TIME, ""), else_=sa.cast(outbox.c.time, sa.Text)).label(
                "stored_time"
            ),
            outbox.c.data,
        )
        .where(_PENDING, ~_held())
        .order_by(outbox.c.seq)
        .limit(limit)
    )


@dataclass
class _SqlBatch:
    connection: AsyncConnection
    events: list[PendingEvent]

    async def mark_published(self, seqs: Sequence[int]) -> None:
        # The clock when the acknowledgement is recorded, not the transaction's start: a
        # row's published_at is never before the broker had it (a broker refill relies on it).
        await self.connection.execute(
            outbox.update()
            .where(outbox.c.seq.in_(list(seqs)))
            .values(
                published_at=sa.func.clock_timestamp(),
                attempts=outbox.c.attempts + 1,
                last_error=None,
            )
        )

    async def record_failure(self, seqs: Sequence[int], error: str) -> None:
        await self.connection.execute(
            outbox.update()
            .where(outbox.c.seq.in_(list(seqs)))
            .values(attempts=outbox.c.attempts + 1, last_error=error[:MAX_ERROR_CHARS])
        )

    async def set_aside(self, errors: Mapping[int, str]) -> None:
        await self.connection.execute(
            outbox.update()
            .where(outbox.c.seq == sa.bindparam("row_seq"))
            .values(
                set_aside_at=sa.func.clock_timestamp(),
                attempts=outbox.c.attempts + 1,
                last_error=sa.bindparam("row_error"),
            ),
            [
                {"row_seq": seq, "row_error": error[:MAX_ERROR_CHARS]}
                for seq, error in errors.items()
            ],
        )


class SqlOutboxStore:
    """The outbox table of one service's schema. The schema is named in every statement, so
    any engine of the database will do (the service's own, or a tool's)."""

    def __init__(self, engine: AsyncEngine, schema: str) -> None:
        self._engine = engine.execution_options(schema_translate_map={None: schema})
        self._lock_name = relay_lock_name(schema)

    @asynccontextmanager
    async def claim(self, limit: int) -> AsyncIterator[_SqlBatch | None]:
        """The oldest pending rows, except those held behind a row set aside; None while
        another replica's relay holds the lock."""
        async with self._engine.begin() as connection:
            leader = await connection.scalar(
                sa.select(sa.func.pg_try_advisory_xact_lock(sa.func.hashtext(self._lock_name)))
            )
            if not leader:
                yield None
                return
            rows = await connection.execute(claim_query(limit))
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
                    stored_time=row.stored_time,
                )
                for row in rows
            ]
            yield _SqlBatch(connection, events)

    async def status(self) -> OutboxStatus:
        """Rows waiting, the oldest one's age, rows set aside, rows held behind them."""
        waiting = sa.select(outbox.c.created_at, _held().label("held")).where(_PENDING).subquery()
        set_aside = sa.select(sa.func.count()).where(_SET_ASIDE).scalar_subquery()
        query = sa.select(
            sa.func.count().filter(~waiting.c.held),
            sa.func.coalesce(
                sa.func.extract(
                    "epoch",
                    sa.func.now() - sa.func.min(waiting.c.created_at).filter(~waiting.c.held),
                ),
                0,
            ),
            set_aside,
            sa.func.count().filter(waiting.c.held),
        ).select_from(waiting)
        async with self._engine.connect() as connection:
            row = (await connection.execute(query)).one()
        return OutboxStatus(
            pending=int(row[0]),
            oldest_pending_seconds=float(row[1]),
            set_aside=int(row[2]),
            held=int(row[3]),
        )

    async def prune_published(self, older_than_seconds: float) -> int:
        """Delete rows published long ago; the topic and the consumers have them."""
        async with self._engine.begin() as connection:
            result = await connection.execute(
                sa.delete(outbox).where(
                    outbox.c.published_at
                    < sa.func.now() - sa.func.make_interval(0, 0, 0, 0, 0, 0, older_than_seconds)
                )
            )
            return int(getattr(result, "rowcount", 0) or 0)

    async def requeue_published(self, *, published_after: datetime | None = None) -> int:
        """Make the published rows that are still kept pending again (those published after
        `published_after` when given), so the relay sends them once more in their order (to
        refill a new, empty broker; consumers skip what they applied). Waits for the relay's
        lock, so no batch is half published meanwhile. Returns how many."""
        statement = (
            outbox.update()
            .where(outbox.c.published_at.is_not(None), outbox.c.set_aside_at.is_(None))
            .values(published_at=None)
        )
        if published_after is not None:
            statement = statement.where(outbox.c.published_at > published_after)
        async with self._engine.begin() as connection:
            await connection.execute(
                sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtext(self._lock_name)))
            )
            result = await connection.execute(statement)
            return int(getattr(result, "rowcount", 0) or 0)

    async def set_aside_rows(self) -> list[OutboxRow]:
        """Every row set aside, in `seq` order."""
        return await self._rows(_SET_ASIDE)

    async def row(self, seq: int) -> OutboxRow | None:
        """One row, in whatever state, or None."""
        rows = await self._rows(outbox.c.seq == seq)
        return rows[0] if rows else None

    async def put_back(self, seqs: Sequence[int] | None = None) -> list[int]:
        """Make rows set aside pending again (all when `seqs` is None), so the relay tries
        them again, in order. NotSetAside (and nothing changed) if one of `seqs` is not set
        aside. Returns the rows put back."""
        statement = outbox.update().where(_SET_ASIDE).values(set_aside_at=None)
        if seqs is not None:
            statement = statement.where(outbox.c.seq.in_(list(seqs)))
        async with self._engine.begin() as connection:
            done = sorted((await connection.execute(statement.returning(outbox.c.seq))).scalars())
            missing = sorted(set(seqs or ()) - set(done))
            if missing:  # raised inside the transaction: nothing is put back
                raise NotSetAside(missing)
            return done

    async def _rows(self, where: sa.ColumnElement[bool]) -> list[OutboxRow]:
        query = (
            sa.select(
                *_WHAT_AND_WHERE,
                sa.cast(outbox.c.time, sa.Text).label("time"),
                outbox.c.data,
                outbox.c.created_at,
                outbox.c.published_at,
                outbox.c.set_aside_at,
                outbox.c.attempts,
                outbox.c.last_error,
                sa.and_(_PENDING, _held()).label("held"),
            )
            .where(where)
            .order_by(outbox.c.seq)
        )
        async with self._engine.connect() as connection:
            return [OutboxRow(**row._mapping) for row in await connection.execute(query)]


@asynccontextmanager
async def standalone_outbox_store(
    settings: Settings, service: ServiceName
) -> AsyncIterator[SqlOutboxStore]:
    """The outbox of `service` on a connection of its own, for tools outside the service
    (the CLI, the embedded stack, tests)."""
    # Not `shared.db.make_engine`: that module imports this one. The store names the schema
    # in its statements, so the engine needs no search_path.
    engine = create_async_engine(
        settings.database_url,
        pool_size=1,
        hide_parameters=True,
        connect_args={
            "timeout": 10,
            "server_settings": {"application_name": f"hotline-outbox-{service}"},
        },
    )
    try:
        yield SqlOutboxStore(engine, settings.schema_of(service))
    finally:
        await engine.dispose()


async def requeue_published(
    settings: Settings, service: ServiceName, *, published_after: datetime | None = None
) -> int:
    """Make `service`'s kept published rows pending again (see
    `SqlOutboxStore.requeue_published`); returns how many."""
    async with standalone_outbox_store(settings, service) as store:
        return await store.requeue_published(published_after=published_after)


class KafkaPublisher:
    """Sends a batch through the process's producer and waits for every acknowledgement."""

    def __init__(self, clients: KafkaClients) -> None:
        self._clients = clients

    async def publish(self, records: Sequence[OutgoingRecord]) -> PublishResult:
        producer = self._clients.producer
        result = PublishResult()
        sending: list[tuple[int, asyncio.Future[Any]]] = []
        for outgoing in records:
            record = outgoing.record
            try:
                future = await producer.send(
                    outgoing.topic, record.value, key=record.key, headers=record.headers
                )
            except Exception as exc:
                # The rest waits for the next batch: one of them may be of the same ticket.
                result.failed[outgoing.seq] = exc
                break
            sending.append((outgoing.seq, future))
        outcomes = await asyncio.gather(*(future for _, future in sending), return_exceptions=True)
        for (seq, _), outcome in zip(sending, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                result.failed[seq] = outcome
            else:
                result.sent.append(seq)
        return result


@dataclass
class _Round:
    """What one batch came to."""

    claimed: int = 0
    published: int = 0
    set_aside: int = 0
    error: BaseException | None = None


class OutboxRelay:
    """Publishes one service's outbox, a batch a step (`shared.background` runs it); never
    drops a row, and sets aside the rows that can never be published."""

    name = "outbox-relay"

    def __init__(
        self,
        store: OutboxStore,
        publisher: Publisher,
        *,
        service: str,
        batch_size: int = 500,
        idle_seconds: float = 0.2,
        linger_seconds: float = 0.0,
        max_backoff_seconds: float = 10.0,
        keep_published_seconds: float = 24 * 3600,
    ) -> None:
        self._store = store
        self._publisher = publisher
        self._service = service
        self._batch_size = batch_size
        self._idle_seconds = idle_seconds
        self._linger_seconds = linger_seconds
        self._backlogged = False
        """The last round was full: rows are waiting, so the next one does not linger."""
        self._max_backoff = max_backoff_seconds
        self._backoff = Backoff(maximum=max_backoff_seconds)
        self._keep_published_seconds = keep_published_seconds
        self.wakeup = asyncio.Event()
        """Set when a commit put rows in the outbox: the runner then skips the idle wait."""
        self._last_prune = 0.0

    @property
    def max_backoff(self) -> float:
        """The longest wait between retries while the broker or database is away."""
        return self._max_backoff

    def wake(self) -> None:
        """Something was committed to the outbox: publish now rather than at the next poll."""
        self.wakeup.set()

    async def backlog(self) -> int:
        """How many events wait to be published (not those set aside or held behind one)."""
        return (await self._store.status()).pending

    async def measure(self) -> OutboxStatus:
        """Read how the outbox stands and set the outbox gauges from it."""
        status = await self._store.status()
        OUTBOX_BACKLOG.labels(self._service).set(status.pending)
        OUTBOX_OLDEST_SECONDS.labels(self._service).set(status.oldest_pending_seconds)
        OUTBOX_SET_ASIDE.labels(self._service).set(status.set_aside)
        OUTBOX_HELD.labels(self._service).set(status.held)
        return status

    def measuring(self, interval: float) -> Periodic:
        """Background work measuring the outbox every `interval` seconds, on its own
        schedule: the gauges stay true while the relay fails or waits for the broker."""
        return Periodic("outbox-gauges", self.measure, interval=interval, max_backoff=interval)

    async def relay_once(self) -> int:
        """Publish one batch and set aside its rows that can never be published. Returns how
        many rows went out; raises if the broker failed otherwise (those rows stay pending)."""
        outcome = await self._relay_batch()
        if outcome.error is not None:
            raise outcome.error
        return outcome.published

    async def step(self) -> float:
        """Publish one batch; at once again after a full batch or a row set aside, else after
        the idle time.

        Woken by a commit, it first lingers a little (`linger_seconds`) so that the commits
        of a busy moment go out in one batch: one claim, one send and one mark for many
        rows, instead of a round per commit.
        """
        if self._linger_seconds > 0 and not self._backlogged:
            await asyncio.sleep(self._linger_seconds)
        outcome = await self._relay_batch()
        if outcome.error is not None:
            raise outcome.error
        await self._prune_now_and_then()
        self._backlogged = outcome.claimed >= self._batch_size
        busy = self._backlogged or outcome.set_aside > 0
        return 0.0 if busy else self._idle_seconds

    async def drain(self, timeout: float) -> bool:
        """Publish what is left, for at most `timeout` seconds. True if nothing is left that
        could be published."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                async with asyncio.timeout(deadline - time.monotonic()):
                    if await self.relay_once() == 0 and await self.backlog() == 0:
                        return True
            except TimeoutError:
                break
            except Exception as exc:
                log.warning("outbox drain retrying", extra={"error": repr(exc)})
                await asyncio.sleep(
                    max(0.0, min(self._backoff.next_delay(), deadline - time.monotonic()))
                )
        return False

    async def _relay_batch(self) -> _Round:
        async with self._store.claim(self._batch_size) as batch:
            if batch is None or not batch.events:
                return _Round()
            records, unsendable = self._encode(batch.events)
            result = await self._publisher.publish(records) if records else PublishResult()
            if result.sent:
                crash_point(self._service, "relay-published")
                await batch.mark_published(result.sent)
            refused = {seq: exc for seq, exc in result.failed.items() if refused_for_good(exc)}
            set_aside = {**unsendable, **refused}
            if set_aside:
                await batch.set_aside({seq: describe(exc) for seq, exc in set_aside.items()})
            error = next((exc for seq, exc in result.failed.items() if seq not in set_aside), None)
            if error is not None:
                finished = set(result.sent) | set(set_aside)
                unsent = [r.seq for r in records if r.seq not in finished]
                await batch.record_failure(unsent, describe(error))
        self._count(batch.events, result.sent, set_aside)
        return _Round(
            claimed=len(batch.events),
            published=len(result.sent),
            set_aside=len(set_aside),
            error=error,
        )

    @staticmethod
    def _encode(
        events: Sequence[PendingEvent],
    ) -> tuple[list[OutgoingRecord], dict[int, BaseException]]:
        """The records of the rows, and the rows that cannot make one. A ticket's rows after
        one that cannot are left out: they wait behind it."""
        records: list[OutgoingRecord] = []
        unsendable: dict[int, BaseException] = {}
        stopped: set[str] = set()
        for event in events:
            if event.key in stopped:
                continue
            try:
                record = encode_pending(event)
            except Exception as exc:  # whatever stops this row stops only this ticket
                unsendable[event.seq] = exc
                stopped.add(event.key)
                continue
            records.append(OutgoingRecord(event.seq, event.topic, event.key, record))
        return records, unsendable

    def _count(
        self,
        events: Sequence[PendingEvent],
        sent: Sequence[int],
        set_aside: Mapping[int, BaseException],
    ) -> None:
        published = set(sent)
        for event in events:
            if event.seq in published:
                EVENTS_PUBLISHED.labels(self._service, event.topic, event.ce_type).inc()
            elif event.seq in set_aside:
                OUTBOX_SET_ASIDE_TOTAL.labels(self._service).inc()
                log.error(
                    "outbox event set aside: it can never be published as it is; later events "
                    "of its ticket wait behind it (`hotline outbox list`)",
                    extra={
                        "service": self._service,
                        "seq": event.seq,
                        "event_id": event.event_id,
                        "ticket_id": event.key,
                        "type": event.ce_type,
                        "error": describe(set_aside[event.seq]),
                    },
                )

    async def _prune_now_and_then(self) -> None:
        """Delete rows published long ago, at most once a minute."""
        now = time.monotonic()
        if now - self._last_prune >= PRUNE_INTERVAL_SECONDS:
            self._last_prune = now
            await self._store.prune_published(self._keep_published_seconds)
