"""Recompute metrics from the event history while the service keeps answering:
`python -m services.metrics rebuild` (or `hotline metrics rebuild`).

When a rate's definition changes or a bug is fixed, the facts and cells must be made again
from every event. The rebuild does it beside the live schema, which keeps answering with
the old figures until the new ones are complete:
1. a fresh schema `<metrics schema>__rebuild`, migrated, with the working-day calendar;
2. every record of the three topics read from the beginning up to their ends at the start,
   applied in large batches through the consumer loop's own `apply` (the same decoding,
   idempotency, projections and isolation of a bad event), then again up to the new ends;
3. a check that the topics still hold every event the live figures count (retention, or a
   broker that restarted empty, may have dropped the oldest): if not, the rebuild stops
   there and the live figures stay (`HistoryIncomplete`);
4. the swap, in one short transaction: the live tables locked, the live schema renamed
   aside and the rebuilt one renamed into its place (the service's connections name the
   schema, so their next statement reads the new tables);
5. the records that arrived meanwhile applied to the new live schema: an event the running
   service applied to the old tables during the swap is applied again here, and one both
   apply is applied once (the processed-events table, and facts keyed by their own ids);
6. the old schema dropped (kept with `--keep-old`).

A record that cannot be decoded, or an event that can never be counted, is skipped and
counted: the running service dead-lettered it when it first came.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import sqlalchemy as sa
from aiokafka import AIOKafkaConsumer, TopicPartition
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from services.metrics.calendar_days import FIRST_DAY, calendar_days, last_day, store_calendar_days
from services.metrics.fact_store import TABLES
from services.metrics.projections import projections
from services.metrics.unit_of_work import MetricsUnitOfWork
from shared.bus_tables import processed_events
from shared.clock import utc_now
from shared.consumer import ConsumerLoop, DeadLetter, Delivery
from shared.db import Database
from shared.kafka import connection_options
from shared.migrations import upgrade
from shared.names import CONSUMES
from shared.offsets import end_offsets, topic_partitions
from shared.retry import sqlstate
from shared.settings import Settings
from shared.workdays import WorkCalendar, local_day

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
OnProgress = Callable[[int, int], None]
"""Told (records read so far, records to read) as the rebuild goes."""


@dataclass
class RebuildReport:
    """What a rebuild did."""

    schema: str
    records: int = 0
    applied: int = 0
    skipped: int = 0
    """Records that could not be decoded or counted (dead-lettered when they first came)."""
    swap_attempts: int = 0
    """Swaps that gave way to the running service's transactions before one went through."""
    after_swap: int = 0
    """Records read after the swap: those that arrived while the rebuild ran."""
    seconds: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)


_LOCK_ORDER: Final = (
    processed_events.name,
    *(TABLES[kind].name for kind in ("ticket", "work_order", "transfer", "callback")),
    "rate_cells",
)
"""The live tables in the order a consumer batch first touches them (`fact_store`)."""
_SWAP_WAIT: Final = "200ms"
_SWAP_PATIENCE_SECONDS: Final = 120.0
_BUSY: Final = frozenset({"55P03", "40P01"})
"""lock_not_available (the wait ran out), deadlock_detected."""


def _sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a database error, wherever the driver put it."""
    candidates = (exc, getattr(exc, "orig", None), exc.__cause__)
    return next((code for c in candidates if (code := sqlstate(c)) is not None), None)


class HistoryIncomplete(RuntimeError):
    """The topics no longer hold events the live figures count: swapping would lose them."""


class _NoSource:
    """The rebuild hands batches to the loop itself; nothing is fetched or committed."""

    async def fetch(self) -> list[Delivery]:
        raise NotImplementedError

    async def commit(self, deliveries: Sequence[Delivery]) -> None:
        raise NotImplementedError

    async def lag(self) -> dict[tuple[str, int], int]:
        return {}


class _NoSink:
    async def send(self, letters: Sequence[DeadLetter], service: str) -> None:
        raise NotImplementedError


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class Rebuild:
    """One rebuild of the metrics schema named by `settings`."""

    def __init__(self, settings: Settings, *, batch_size: int = 5000) -> None:
        self._settings = settings
        self._batch_size = batch_size
        self.live = settings.schema_of("metrics")
        self.shadow = f"{self.live}__rebuild"
        self.old = f"{self.live}__old"
        self._topics = [settings.topic(owner) for owner in CONSUMES["metrics"]]
        self.report = RebuildReport(schema=self.live)

    def _database(self, schema: str) -> Database:
        return Database(
            self._settings.database_url,
            schema,
            pool_size=2,
            source="/hotline/metrics-rebuild",
            topic=None,
            unit_of_work=MetricsUnitOfWork,
        )

    async def run(
        self, progress: OnProgress | None = None, *, keep_old: bool = False
    ) -> RebuildReport:
        """Rebuild, swap, catch up, drop the old schema; the report of what was done."""
        started = time.monotonic()
        admin = create_async_engine(self._settings.database_url, pool_size=1)
        consumer = AIOKafkaConsumer(
            **connection_options(self._settings), enable_auto_commit=False, group_id=None
        )
        await consumer.start()
        try:
            async with admin.connect() as connection:
                began = (await connection.execute(sa.text("SELECT now()"))).scalar_one()
            await self._phase("prepare", self._prepare(admin))
            partitions = await self._partitions(consumer)
            shadow = self._database(self.shadow)
            try:
                ends = await end_offsets(consumer, partitions)
                consumer.assign(partitions)
                await consumer.seek_to_beginning(*partitions)
                await self._phase("replay", self._read(consumer, shadow, ends, progress))
                ends = await end_offsets_keeping(consumer, partitions)
                await self._phase("catch up", self._read(consumer, shadow, ends, progress))
            finally:
                await shadow.dispose()
            await self._phase("check", self._check_history(admin, began))
            await self._phase("swap", self._swap(admin))
            live = self._database(self.live)
            try:
                ends = await end_offsets_keeping(consumer, partitions)
                before = self.report.records
                await self._phase("after swap", self._read(consumer, live, ends, progress))
                self.report.after_swap = self.report.records - before
            finally:
                await live.dispose()
            if not keep_old:
                await self._phase("drop old", self._drop(admin, self.old))
        finally:
            await consumer.stop()
            await admin.dispose()
        self.report.seconds = round(time.monotonic() - started, 2)
        return self.report

    async def _phase(self, name: str, work: Awaitable[None]) -> None:
        started = time.monotonic()
        await work
        self.report.phases[name] = round(time.monotonic() - started, 2)

    async def _prepare(self, admin: AsyncEngine) -> None:
        """A fresh, migrated shadow schema with the working-day calendar."""
        await self._drop(admin, self.shadow)
        await self._drop(admin, self.old)
        await asyncio.to_thread(upgrade, MIGRATIONS, self._settings.database_url, self.shadow)
        calendar = WorkCalendar.load(self._settings.holiday_path())
        last = last_day(local_day(utc_now()))
        days = await asyncio.to_thread(calendar_days, calendar, FIRST_DAY, last)
        shadow = self._database(self.shadow)
        try:
            async with shadow.unit_of_work() as uow:
                await store_calendar_days(uow, days)
                await uow.commit()
        finally:
            await shadow.dispose()

    async def _partitions(self, consumer: AIOKafkaConsumer) -> list[TopicPartition]:
        found = await topic_partitions(consumer, self._topics)
        return [tp for topic in self._topics for tp in found.get(topic, [])]

    async def _read(
        self,
        consumer: AIOKafkaConsumer,
        database: Database,
        ends: dict[TopicPartition, int],
        progress: OnProgress | None,
    ) -> None:
        """Apply every record before `ends`, batch by batch, from the consumer's positions."""
        loop = ConsumerLoop(
            service="metrics-rebuild",
            source=_NoSource(),
            projections=projections,
            new_uow=database.unit_of_work,
            dead_letters=_NoSink(),
        )
        positions = {tp: await consumer.position(tp) for tp in ends}
        total = self.report.records + sum(max(0, ends[tp] - positions[tp]) for tp in ends)
        waiting = {tp for tp in ends if positions[tp] < ends[tp]}
        while waiting:
            batches = await consumer.getmany(
                *waiting, timeout_ms=1000, max_records=self._batch_size
            )
            deliveries = [
                Delivery.of(record)
                for tp, records in batches.items()
                for record in records
                if record.offset < ends[tp]
            ]
            for tp in list(waiting):
                if await consumer.position(tp) >= ends[tp]:
                    # Fetched past this phase's end: the next phase starts at the end.
                    consumer.seek(tp, ends[tp])
                    waiting.discard(tp)
            if not deliveries:
                continue
            outcome = await loop.apply(deliveries)
            self.report.records += len(deliveries)
            self.report.applied += len(outcome.processed)
            self.report.skipped += len(outcome.dead_letters)
            if progress is not None:
                progress(self.report.records, total)

    async def _check_history(self, admin: AsyncEngine, began: object) -> None:
        """HistoryIncomplete (and the rebuilt schema dropped) if an event the live schema
        applied before the rebuild began is not among those the rebuild found."""
        live, shadow = _quoted(self.live), _quoted(self.shadow)
        async with admin.connect() as connection:
            if not await _schema_exists(connection, self.live):
                return
            missing = (
                await connection.execute(
                    sa.text(
                        f"SELECT count(*) FROM {live}.processed_events AS kept"
                        " WHERE kept.processed_at < :began AND NOT EXISTS ("
                        f"SELECT 1 FROM {shadow}.processed_events AS found"
                        " WHERE found.event_id = kept.event_id)"
                    ),
                    {"began": began},
                )
            ).scalar_one()
        if missing:
            await self._drop(admin, self.shadow)
            raise HistoryIncomplete(
                f"{missing} events the live figures count are no longer in the topics "
                "(retention, or a broker that restarted empty): the live figures are kept"
            )

    async def _swap(self, admin: AsyncEngine) -> None:
        """Put the rebuilt schema in the live one's place, in one transaction.

        The live tables are locked first, so that no transaction of the running service
        reads one schema and writes the other. They are locked in the order the consumer
        first touches them, and each attempt waits at most `_SWAP_WAIT` (well under
        PostgreSQL's deadlock check): a reader that locks them in another order is never
        made a deadlock's victim; the attempt gives way and is made again a moment later.
        """
        live, shadow, old = _quoted(self.live), _quoted(self.shadow), _quoted(self.old)
        deadline = time.monotonic() + _SWAP_PATIENCE_SECONDS
        while True:
            try:
                async with admin.begin() as connection:
                    if not await _schema_exists(connection, self.live):
                        # Nothing live yet: the rebuilt schema simply becomes it.
                        await connection.execute(sa.text(f"ALTER SCHEMA {shadow} RENAME TO {live}"))
                        return
                    await connection.execute(sa.text(f"SET LOCAL lock_timeout = '{_SWAP_WAIT}'"))
                    tables = ", ".join(f"{live}.{_quoted(name)}" for name in _LOCK_ORDER)
                    await connection.execute(
                        sa.text(f"LOCK TABLE {tables} IN ACCESS EXCLUSIVE MODE")
                    )
                    await connection.execute(sa.text(f"ALTER SCHEMA {live} RENAME TO {old}"))
                    await connection.execute(sa.text(f"ALTER SCHEMA {shadow} RENAME TO {live}"))
                return
            except sa.exc.DBAPIError as exc:
                if _sqlstate(exc) not in _BUSY or time.monotonic() > deadline:
                    raise
                self.report.swap_attempts += 1
                await asyncio.sleep(random.uniform(0.05, 0.25))  # noqa: S311 (not a secret)

    @staticmethod
    async def _drop(admin: AsyncEngine, schema: str) -> None:
        async with admin.begin() as connection:
            await connection.execute(sa.text(f"DROP SCHEMA IF EXISTS {_quoted(schema)} CASCADE"))


async def _schema_exists(connection: AsyncConnection, name: str) -> bool:
    found = await connection.scalar(
        sa.text("SELECT count(*) FROM pg_namespace WHERE nspname = :name"), {"name": name}
    )
    return bool(found)


async def end_offsets_keeping(
    consumer: AIOKafkaConsumer, partitions: list[TopicPartition]
) -> dict[TopicPartition, int]:
    """The ends now, for a consumer that must keep its positions (a probe moves them)."""
    positions = {tp: await consumer.position(tp) for tp in partitions}
    ends = await end_offsets(consumer, partitions)
    consumer.assign(partitions)
    for tp, position in positions.items():
        consumer.seek(tp, position)
    return ends


def main(argv: list[str] | None = None) -> None:
    """`python -m services.metrics rebuild [--batch N] [--keep-old]`, with a progress bar."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    parser = argparse.ArgumentParser(prog="python -m services.metrics rebuild")
    parser.add_argument("--batch", type=int, default=5000, help="events per transaction")
    parser.add_argument("--keep-old", action="store_true", help="keep the old schema aside")
    args = parser.parse_args(argv)
    if args.batch < 1:
        parser.error("--batch must be at least 1")
    rebuild = Rebuild(Settings(), batch_size=args.batch)
    columns = ("{task.description}", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns) as bar:
        task = bar.add_task(f"rebuilding {rebuild.live}", total=None)
        try:
            report = asyncio.run(
                rebuild.run(
                    lambda done, total: bar.update(task, completed=done, total=total),
                    keep_old=args.keep_old,
                )
            )
        except HistoryIncomplete as exc:
            bar.stop()
            print(f"not rebuilt: {exc}", file=sys.stderr)
            raise SystemExit(1) from None
    print(
        f"rebuilt {report.schema}: {report.records} records read, {report.applied} applied, "
        f"{report.skipped} skipped, {report.after_swap} after the swap, in {report.seconds} s "
        f"({', '.join(f'{name} {seconds} s' for name, seconds in report.phases.items())})"
    )
