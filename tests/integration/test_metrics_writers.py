"""Metrics writers at once on a real PostgreSQL: no lock serialises them, they wait for each
other only on the tickets they share, never deadlock, and count every fact once.

Each test holds one batch's transaction open, written but not committed, while another runs:
the moment two replicas' batches overlap, made to happen instead of hoped for.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from services.metrics.fact_store import FactRaced
from services.metrics.models import rate_cells
from shared.events import CallOutcome, TicketSubmitted, TransferAttempted
from tests.metric_stories import assert_cells_equal_the_facts
from tests.support import eventually, running_service

pytestmark = [pytest.mark.integration, pytest.mark.kafka_leg]

AT = datetime(2026, 5, 6, 2, tzinfo=UTC)


def ticket(ticket_id: str, city: str = "沈阳") -> TicketSubmitted:
    return TicketSubmitted(
        ticket_id=ticket_id,
        city=city,
        channel="phone",
        scenario="社保查询",
        category="consultation",
        submitted_at=AT,
        call=CallOutcome(answered=True, wait_seconds=8, resolved_at_first_contact=True),
    )


def transfer(ticket_id: str, transfer_id: str) -> TransferAttempted:
    return TransferAttempted(
        ticket_id=ticket_id,
        transfer_id=transfer_id,
        department="人社局",
        mode="transfer",
        connected=False,
        at=AT + timedelta(minutes=1),
    )


def queued(tx, event) -> None:
    """Queue `event` as the consumer loop would, under an event id of its own."""
    tx.event_id = uuid.uuid4().hex
    tx.queue(event)


async def waits_on_a_lock(metrics) -> None:
    """Until another session of the database waits for a row lock."""

    async def waiting() -> bool:
        statement = sa.text(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE wait_event_type = 'Lock' AND datname = current_database()"
        )
        async with metrics.runtime.database.read() as db:
            return bool((await db.execute(statement)).scalar_one())

    await eventually(waiting, message="a writer waits on a lock")


async def all_time(metrics, name: str) -> int:
    statement = sa.select(sa.func.sum(rate_cells.c[name])).where(
        rate_cells.c.grouping_set == 0, rate_cells.c.grain == "all"
    )
    async with metrics.runtime.database.read() as db:
        return int((await db.execute(statement)).scalar_one() or 0)


async def shards(metrics) -> set[int]:
    async with metrics.runtime.database.read() as db:
        rows = await db.execute(sa.select(rate_cells.c.shard).distinct())
    return {row[0] for row in rows}


async def test_a_second_writer_is_not_held_up_by_an_open_batch(settings):
    async with running_service("metrics", settings) as metrics:
        new_uow = metrics.runtime.database.unit_of_work
        async with new_uow() as first:
            queued(first, ticket("W1"))
            queued(first, transfer("W1", "WX1"))
            await first.flush()  # written, locks held, not committed
            async with new_uow() as second:
                queued(second, ticket("W2", city="大连"))
                queued(second, transfer("W2", "WX2"))
                # With one lock for all writers this would wait for `first` forever.
                async with asyncio.timeout(10):
                    await second.commit()
            assert await all_time(metrics, "tickets") == 1
            await first.commit()
        assert await all_time(metrics, "tickets") == 2
        assert await all_time(metrics, "transfers_failed") == 2
        assert await shards(metrics) == {0, 1}  # each wrote a shard of its own
        await assert_cells_equal_the_facts(metrics)


async def test_writers_sharing_tickets_in_opposite_orders_wait_and_do_not_deadlock(settings):
    async with running_service("metrics", settings) as metrics:
        new_uow = metrics.runtime.database.unit_of_work
        async with new_uow() as first:
            for ticket_id in ("S1", "S2", "S3"):
                queued(first, ticket(ticket_id))
            await first.flush()
            async with new_uow() as second:
                for ticket_id in ("S3", "S2", "S1"):
                    queued(second, transfer(ticket_id, f"SX-{ticket_id}"))
                    queued(second, ticket(ticket_id))  # again, under another event id
                waiting = asyncio.create_task(second.commit())
                await waits_on_a_lock(metrics)  # it reached the tickets `first` holds
                assert not waiting.done()  # it waits on the tickets `first` holds
                await first.commit()
                async with asyncio.timeout(10):
                    await waiting
        assert await all_time(metrics, "tickets") == 3  # the tickets sent again count once
        assert await all_time(metrics, "transfers") == 3
        await assert_cells_equal_the_facts(metrics)


async def test_a_fact_inserted_by_another_writer_meanwhile_makes_the_batch_retry(settings):
    """The same transfer id under two tickets: the later writer cannot have seen the first's
    uncommitted row, finds it when it inserts, and must apply its batch again."""
    async with running_service("metrics", settings) as metrics:
        new_uow = metrics.runtime.database.unit_of_work
        async with new_uow() as first:
            queued(first, ticket("F1"))
            queued(first, transfer("F1", "FX"))
            await first.flush()
            async with new_uow() as second:
                queued(second, ticket("F2"))
                queued(second, transfer("F2", "FX"))
                waiting = asyncio.create_task(second.commit())
                await waits_on_a_lock(metrics)
                await first.commit()
                with pytest.raises(FactRaced):
                    await waiting
        async with new_uow() as retry:
            queued(retry, ticket("F2"))
            queued(retry, transfer("F2", "FX"))
            await retry.commit()
        assert await all_time(metrics, "tickets") == 2
        assert await all_time(metrics, "transfers") == 1  # counted once, under F1
        await assert_cells_equal_the_facts(metrics)
