"""The three kinds of transaction, against a real PostgreSQL: views cannot write, a unit of
work leaves nothing unless committed, and its events commit with its state change."""

import asyncio
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from shared.bus_tables import outbox
from shared.events import TicketSubmitted
from tests.e2e.test_metrics_out_of_order import ticket
from tests.support import load_app

pytestmark = pytest.mark.integration


AT = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)


def submitted(ticket_id):
    return ticket(ticket_id, "沈阳", "phone", "社保查询", AT, wait=3.0)


@pytest.fixture
async def intake_db(settings):
    runtime = load_app("intake", settings).state.runtime
    await asyncio.to_thread(runtime.migrate)
    yield runtime.database
    await runtime.database.dispose()


async def outbox_rows(database) -> int:
    async with database.read() as db:
        return (await db.execute(sa.select(sa.func.count()).select_from(outbox))).scalar_one()


async def test_a_view_transaction_refuses_to_write(intake_db):
    with pytest.raises(sa.exc.DBAPIError, match="read-only transaction"):
        async with intake_db.read() as db:
            await db.execute(sa.text("CREATE TABLE nope (id int)"))
    async with intake_db.unit_of_work() as uow:
        await uow.execute(sa.text("CREATE TABLE yes (id int)"))
        await uow.commit()


async def test_an_uncommitted_unit_of_work_leaves_nothing(intake_db):
    async with intake_db.unit_of_work() as uow:
        await uow.emit(submitted("T-1"))
    assert await outbox_rows(intake_db) == 0


async def test_a_committed_unit_of_work_stores_its_events_and_wakes_the_relay(intake_db):
    woken = []
    intake_db.on_commit = lambda: woken.append(True)
    async with intake_db.unit_of_work() as uow:
        event_id = await uow.emit(submitted("T-2"))
        await uow.commit()
    assert await outbox_rows(intake_db) == 1
    assert woken == [True]
    async with intake_db.read() as db:
        row = (await db.execute(sa.select(outbox))).mappings().one()
    assert (row["event_id"], row["ce_type"]) == (event_id, TicketSubmitted.ce_type)


async def test_a_failed_write_does_not_show_what_it_tried_to_write(intake_db, caplog):
    """A citizen's words in a statement that fails stay out of the error and the logs."""
    secret = "我家住在幸福小区3栋"
    with pytest.raises(sa.exc.DBAPIError) as caught:
        async with intake_db.unit_of_work() as uow:
            await uow.execute(
                sa.text(
                    "INSERT INTO tickets (ticket_id, content) VALUES (:id, :content)"
                ).bindparams(id="T-9", content=secret)
            )
    assert "hide_parameters" in str(caught.value)
    assert secret not in str(caught.value)
    assert secret not in caplog.text
