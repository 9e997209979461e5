"""`hotline outbox list|show|retry` on a real database: what a person sees and changes."""

import asyncio
import json

import pytest
import sqlalchemy as sa

from shared.db import make_engine
from tests.integration.test_outbox_set_aside import cli, submitted
from tests.support import load_app, settings_for

pytestmark = pytest.mark.integration

SET_ASIDE = sa.text(
    "INSERT INTO outbox (event_id, topic, ce_type, source, key, time, data, attempts, "
    "last_error, set_aside_at) VALUES (:event_id, 'intake.events', "
    "'hotline.ticket.submitted.v1', '/hotline/intake', :key, '-infinity', CAST(:data AS jsonb), "
    "1, :error, now()) RETURNING seq"
)
PENDING = sa.text(
    "INSERT INTO outbox (event_id, topic, ce_type, source, key, time, data) VALUES (:event_id, "
    "'intake.events', 'hotline.ticket.submitted.v1', '/hotline/intake', :key, now(), "
    "CAST(:data AS jsonb)) RETURNING seq"
)


async def migrated(settings, *services):
    for service in services:
        runtime = load_app(service, settings).state.runtime
        await asyncio.to_thread(runtime.migrate)
        await runtime.database.dispose()


async def insert(settings, statement, **values) -> int:
    engine = make_engine(settings.database_url, settings.schema_of("intake"))
    try:
        async with engine.begin() as connection:
            data = json.dumps(submitted(values["key"]).model_dump(mode="json"))
            return (await connection.execute(statement, {"data": data, **values})).scalar_one()
    finally:
        await engine.dispose()


async def states(settings) -> dict[int, bool]:
    """Each intake outbox row: set aside or not."""
    engine = make_engine(settings.database_url, settings.schema_of("intake"))
    try:
        async with engine.connect() as connection:
            rows = await connection.execute(
                sa.text("SELECT seq, set_aside_at IS NOT NULL FROM outbox ORDER BY seq")
            )
            return {row[0]: row[1] for row in rows}
    finally:
        await engine.dispose()


async def test_list_says_so_when_nothing_is_set_aside_and_which_outbox_is_missing(settings):
    await migrated(settings, "intake", "dispatch")
    result = await cli(settings, "list")
    assert result.exit_code == 0, result.output
    assert "no events set aside" in result.output
    assert "intake: 0 set aside, 0 held behind them, 0 pending" in result.output
    assert "followup: no outbox here (`hotline migrate` makes it)" in result.output


async def test_list_and_show_name_the_event_its_ticket_and_its_error(settings):
    await migrated(settings, "intake", "dispatch", "followup")
    error = "UnsendableEvent: the stored time '-infinity' is not one an event can carry\nmore"
    seq = await insert(settings, SET_ASIDE, event_id="e-bad", key="ticket-bad", error=error)
    await insert(settings, PENDING, event_id="e-later", key="ticket-bad")
    await insert(settings, PENDING, event_id="e-other", key="ticket-other")
    listed = await cli(settings, "list")
    assert listed.exit_code == 0, listed.output
    assert "e-bad" in listed.output
    assert "ticket-bad" in listed.output
    assert "hotline.ticket.submitted.v1" in listed.output
    assert "UnsendableEvent" in listed.output
    assert "more" not in listed.output  # the error's first line only
    assert "intake: 1 set aside, 1 held behind them, 1 pending" in listed.output
    shown = await cli(settings, "show", "intake", str(seq))
    assert shown.exit_code == 0, shown.output
    assert "state:        set aside" in shown.output
    assert "time:         -infinity" in shown.output
    assert "more" in shown.output  # the whole error
    assert '"ticket_id": "ticket-bad"' in shown.output
    held = await cli(settings, "show", "intake", str(seq + 1))
    assert "state:        held" in held.output


async def test_retry_puts_back_only_rows_set_aside_and_all_or_nothing(settings):
    await migrated(settings, "intake")
    first = await insert(settings, SET_ASIDE, event_id="e-1", key="t-1", error="x")
    second = await insert(settings, SET_ASIDE, event_id="e-2", key="t-2", error="x")
    pending = await insert(settings, PENDING, event_id="e-3", key="t-3")

    refused = await cli(settings, "retry", "intake", str(first), str(pending))
    assert refused.exit_code == 2
    assert f"not set aside: {pending}" in refused.output
    assert "nothing was put back" in refused.output
    assert await states(settings) == {first: True, second: True, pending: False}

    done = await cli(settings, "retry", "intake", "--all")
    assert done.exit_code == 0, done.output
    assert f"2 event(s) put back (seq {first}, {second})" in done.output
    assert await states(settings) == {first: False, second: False, pending: False}


async def test_retrying_a_later_row_of_a_ticket_says_it_still_waits(settings):
    await migrated(settings, "intake")
    await insert(settings, SET_ASIDE, event_id="e-1", key="t-1", error="x")
    later = await insert(settings, SET_ASIDE, event_id="e-2", key="t-1", error="x")
    result = await cli(settings, "retry", "intake", str(later))
    assert result.exit_code == 0, result.output
    assert f"seq {later} still waits behind an earlier event of ticket t-1" in result.output


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["retry", "intake"], "name the rows to put back (SEQ...) or give --all"),
        (["retry", "intake", "1", "--all"], "name the rows to put back (SEQ...) or give --all"),
        (["show", "intake", "42"], "intake has no outbox event 42"),
        (["show", "metrics", "1"], "one of intake, dispatch, followup"),
    ],
)
async def test_mistakes_are_refused_with_a_reason(settings, args, says):
    await migrated(settings, "intake")
    result = await cli(settings, *args)
    assert result.exit_code == 2
    assert says in " ".join(result.output.split())


async def test_an_unreachable_database_is_said_plainly(infra):
    settings = settings_for(infra, "postgresql+asyncpg://postgres@127.0.0.1:9/nowhere")
    result = await cli(settings, "list")
    assert result.exit_code == 2
    assert "cannot reach the database at" in result.output
