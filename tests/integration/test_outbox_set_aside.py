"""An outbox row that can never be published is set aside; it never stalls the relay (issue 11).

Against a real broker and PostgreSQL: the tester's ticket whose time was stored as
'-infinity', the readiness of a relay that cannot publish, refilling a fresh broker from
the kept published rows, and the indexes the relay's scan uses.
"""

import asyncio
import json
import uuid
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from hotline.outbox import app as outbox_cli
from shared.bus_tables import outbox
from shared.db import make_engine
from shared.envelope import event_data
from shared.events import TicketSubmitted, TransferAttempted
from shared.outbox import SqlOutboxStore, claim_query, requeue_published
from tests.support import eventually, headers_of, read_topic, running_service, settings_for

pytestmark = pytest.mark.integration

AT = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)


def submitted(ticket_id: str) -> TicketSubmitted:
    return TicketSubmitted(
        ticket_id=ticket_id,
        city="大连",
        channel="online",
        scenario="社保查询",
        category="help",
        submitted_at=AT,
        call={"answered": True, "resolved_at_first_contact": True},
    )


def transfer(ticket_id: str) -> TransferAttempted:
    return TransferAttempted(
        ticket_id=ticket_id,
        transfer_id=str(uuid.uuid4()),
        department="交通局",
        mode="transfer",
        connected=True,
        at=AT,
    )


async def insert_as_the_tester_stored_it(uow, settings, event) -> int:
    """`event` in intake's outbox as "bad-event", its time stored as '-infinity'; its seq."""
    result = await uow.execute(
        sa.text(
            "INSERT INTO outbox (event_id, topic, ce_type, source, key, time, data) "
            "VALUES ('bad-event', :topic, :ce_type, '/hotline/intake', :key, '-infinity', "
            "CAST(:data AS jsonb)) RETURNING seq"
        ).bindparams(
            topic=settings.topic("intake"),
            ce_type=event.ce_type,
            key=event.ticket_id,
            data=json.dumps(event_data(event)),
        )
    )
    return int(result.scalar_one())


async def outbox_rows(service) -> dict[int, dict]:
    async with service.runtime.database.engine.connect() as connection:
        rows = await connection.execute(sa.select(outbox).order_by(outbox.c.seq))
        return {row.seq: dict(row._mapping) for row in rows}


async def dispatch_knows(dispatch) -> set[str]:
    async with dispatch.runtime.database.engine.connect() as connection:
        return set((await connection.execute(sa.text("SELECT ticket_id FROM tickets"))).scalars())


async def cli(settings, *args):
    """`hotline outbox ...` on the settings' database (in a thread: it runs its own loop)."""
    result = await asyncio.to_thread(
        CliRunner().invoke,
        outbox_cli,
        list(args),
        env={"DATABASE_URL": settings.database_url},
    )
    return result


async def test_a_row_that_cannot_be_published_is_set_aside_and_the_others_go_on(settings, infra):
    """The tester's ticket: stored with time '-infinity' among good rows of other tickets and
    before a later row of its own."""
    async with (
        running_service("intake", settings) as intake,
        running_service("dispatch", settings) as dispatch,
    ):
        async with intake.runtime.database.unit_of_work() as uow:
            first = await uow.emit(submitted("ticket-a"))
            bad_seq = await insert_as_the_tester_stored_it(uow, settings, submitted("ticket-bad"))
            await uow.emit(submitted("ticket-c"))
            later = await uow.emit(transfer("ticket-bad"))
            await uow.commit()

        # The good rows of other tickets go out and are consumed.
        await eventually(
            lambda: _is(dispatch_knows(dispatch), {"ticket-a", "ticket-c"}),
            message="dispatch knows ticket-a and ticket-c",
        )
        rows = await outbox_rows(intake)
        by_event = {row["event_id"]: row for row in rows.values()}
        assert by_event[first]["published_at"] is not None
        bad = rows[bad_seq]
        assert bad["set_aside_at"] is not None
        assert bad["published_at"] is None
        assert bad["attempts"] >= 1
        assert "-infinity" in bad["last_error"]
        held = by_event[later]
        assert held["published_at"] is None
        assert held["set_aside_at"] is None
        assert held["attempts"] == 0

        # Ready (the relay is not stuck), and a person can see what is set aside.
        ready = await intake.http.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"]["outbox"] == "ok"
        assert ready.json()["outbox"] | {"oldest_pending_seconds": 0} == {
            "pending": 0,
            "set_aside": 1,
            "held": 1,
            "oldest_pending_seconds": 0,
        }

        async def gauge_reads_one() -> bool:
            text = (await intake.http.get("/metrics")).text
            return 'hotline_outbox_set_aside_events{service="intake"} 1.0' in text

        await eventually(gauge_reads_one, message="the set-aside gauge reads 1")
        assert (
            'hotline_outbox_held_events{service="intake"} 1.0'
            in (await intake.http.get("/metrics")).text
        )

        listed = await cli(settings, "list")
        assert listed.exit_code == 0, listed.output
        assert "bad-event" in listed.output
        assert "ticket-bad" in listed.output
        assert "intake: 1 set aside, 1 held behind them, 0 pending" in listed.output
        shown = await cli(settings, "show", "intake", str(bad_seq))
        assert shown.exit_code == 0, shown.output
        assert "set aside" in shown.output
        assert "-infinity" in shown.output
        assert '"ticket_id": "ticket-bad"' in shown.output

        # Fixed in SQL, then put back: it and the row held behind it go out, in order.
        async with intake.runtime.database.engine.begin() as connection:
            await connection.execute(outbox.update().where(outbox.c.seq == bad_seq).values(time=AT))
        retried = await cli(settings, "retry", "intake", str(bad_seq))
        assert retried.exit_code == 0, retried.output
        assert "1 event(s) put back" in retried.output
        await eventually(
            lambda: _is(dispatch_knows(dispatch), {"ticket-a", "ticket-c", "ticket-bad"}),
            message="dispatch knows the fixed ticket",
        )
        records = await read_topic(infra.bootstrap_servers, settings.topic("intake"), at_least=4)
        ready = await intake.http.get("/readyz")
    of_bad_ticket = [headers_of(r)["ce_id"] for r in records if r.key == b"ticket-bad"]
    assert of_bad_ticket == [b"bad-event", later.encode()]
    assert len(records) == 4
    assert ready.json()["outbox"]["set_aside"] == 0
    assert ready.json()["outbox"]["held"] == 0


async def _is(found, wanted) -> bool:
    return await found == wanted


async def test_a_relay_that_cannot_publish_for_longer_than_allowed_makes_readyz_fail(
    infra, database
):
    """Nothing answers at the broker's address: the event waits, the gauge says so, and once
    it has waited longer than relay_stuck_seconds /readyz names the outbox."""
    settings = settings_for(
        infra,
        database,
        kafka_bootstrap_servers="127.0.0.1:9",  # the discard port: no broker there
        relay_stuck_seconds=1.0,
    )
    async with running_service("intake", settings, wait_for_broker=False) as intake:
        async with intake.runtime.database.unit_of_work() as uow:
            await uow.emit(submitted("ticket-stuck"))
            await uow.commit()

        async def backlog_gauge_reads_one() -> bool:
            text = (await intake.http.get("/metrics")).text
            return 'hotline_outbox_backlog{service="intake"} 1.0' in text

        await eventually(backlog_gauge_reads_one, message="the backlog gauge reads 1")

        async def stuck():
            ready = await intake.http.get("/readyz")
            return ready if ready.json()["checks"]["outbox"] != "ok" else None

        ready = await eventually(stuck, message="/readyz says the outbox is stuck")
    assert ready.status_code == 503
    assert ready.json()["checks"]["outbox"].startswith("stuck: 1 events waiting, oldest ")
    assert ready.json()["outbox"]["pending"] == 1
    assert ready.json()["outbox"]["oldest_pending_seconds"] >= 1.0


async def test_requeued_published_rows_are_published_again_in_order(settings, infra):
    """A fresh, empty broker is refilled from the published rows the outbox keeps; rows set
    aside stay set aside."""
    async with running_service("intake", settings) as intake:
        async with intake.runtime.database.unit_of_work() as uow:
            ids = [await uow.emit(transfer(f"ticket-{n % 2}")) for n in range(4)]
            await uow.commit()
        await read_topic(infra.bootstrap_servers, settings.topic("intake"), at_least=4)

        async def all_published() -> bool:
            rows = await outbox_rows(intake)
            return all(row["published_at"] is not None for row in rows.values())

        await eventually(all_published, message="all four marked published")
        async with intake.runtime.database.unit_of_work() as uow:
            await insert_as_the_tester_stored_it(uow, settings, transfer("ticket-9"))
            await uow.commit()
        intake.runtime.relay.wake()
        await eventually(lambda: _set_aside_count(intake, 1), message="the bad row set aside")
        published = await outbox_rows(intake)
        cut = max(row["published_at"] for row in published.values() if row["published_at"])
        assert await requeue_published(settings, "intake", published_after=cut) == 0
        assert await requeue_published(settings, "intake") == 4
        intake.runtime.relay.wake()
        records = await read_topic(infra.bootstrap_servers, settings.topic("intake"), at_least=8)
        await eventually(all_published_or_set_aside(intake), message="published again")
    for ticket in (b"ticket-0", b"ticket-1"):
        sent = [headers_of(r)["ce_id"].decode() for r in records if r.key == ticket]
        first_round = [i for n, i in enumerate(ids) if f"ticket-{n % 2}".encode() == ticket]
        assert sent == first_round * 2
    assert not any(headers_of(r)["ce_id"] == b"bad-event" for r in records)


def all_published_or_set_aside(service):
    async def check() -> bool:
        rows = await outbox_rows(service)
        return all(r["published_at"] or r["set_aside_at"] for r in rows.values())

    return check


async def _set_aside_count(service, wanted: int) -> bool:
    rows = await outbox_rows(service)
    return sum(1 for row in rows.values() if row["set_aside_at"] is not None) == wanted


async def test_requeue_waits_for_the_relays_lock(settings):
    """A batch being published is never requeued halfway: requeue waits for the relay."""
    async with running_service("intake", settings, wait_for_broker=False) as intake:
        engine = intake.runtime.database.engine
        lock = sa.text("SELECT pg_advisory_xact_lock(hashtext(:name))").bindparams(
            name=f"hotline-relay-{settings.schema_of('intake')}"
        )
        async with engine.connect() as holder:
            await holder.execute(lock)  # as a relay's batch transaction would
            requeue = asyncio.create_task(requeue_published(settings, "intake"))

            async def waiting() -> bool:
                async with engine.connect() as connection:
                    result = await connection.execute(
                        sa.text(
                            "SELECT count(*) FROM pg_locks"
                            " WHERE locktype = 'advisory' AND NOT granted"
                        )
                    )
                    return result.scalar_one() == 1

            await eventually(waiting, message="requeue waiting for the lock")
            assert not requeue.done()
            await holder.rollback()
        assert await asyncio.wait_for(requeue, timeout=10) == 0


async def test_the_relays_scan_reads_indexes_only(settings):
    """With sequential scans made prohibitively dear, the claim still has a plan: one over
    the pending-rows index, probing the set-aside index."""
    async with (
        running_service("intake", settings, wait_for_broker=False) as intake,
        intake.runtime.database.engine.begin() as connection,
    ):
        await connection.execute(sa.text("SET LOCAL enable_seqscan = off"))
        compiled = claim_query(500).compile(
            connection.sync_connection, compile_kwargs={"literal_binds": True}
        )
        plan = "\n".join((await connection.execute(sa.text(f"EXPLAIN {compiled}"))).scalars())
    assert "Seq Scan" not in plan, plan
    assert "outbox_pending" in plan, plan
    assert "outbox_set_aside" in plan, plan


async def test_a_stored_time_python_cannot_hold_does_not_break_the_scan(settings):
    """Year 10000 (which the driver cannot even read) and ±infinity come back as text for the
    relay to set aside, instead of failing the scan of every row."""
    async with running_service("intake", settings, wait_for_broker=False):
        pass  # its schema migrated; stopped, so its relay does not claim the rows below
    engine = make_engine(settings.database_url, settings.schema_of("intake"), pool_size=1)
    try:
        async with engine.begin() as connection:
            for n, stored in enumerate(["now", "10000-01-01T00:00Z", "infinity", "-infinity"]):
                await connection.execute(
                    sa.text(
                        "INSERT INTO outbox (event_id, topic, ce_type, source, key, time, data) "
                        "VALUES (:id, 't', 'x', '/s', :id, CAST(:stored AS timestamptz), '{}')"
                    ).bindparams(id=f"e-{n}", stored=stored)
                )
        store = SqlOutboxStore(engine, settings.schema_of("intake"))
        async with store.claim(10) as batch:
            assert batch is not None
            events = batch.events
    finally:
        await engine.dispose()
    assert events[0].time is not None
    assert events[0].time.tzinfo is not None
    assert [e.time for e in events[1:]] == [None, None, None]
    assert events[1].stored_time.startswith("10000-01-01 ")  # in the session's time zone
    assert [e.stored_time for e in events[2:]] == ["infinity", "-infinity"]
