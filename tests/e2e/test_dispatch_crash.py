"""Dispatch killed with `kill -9` in the middle of recording reopens (重办): once it has
applied a batch of `hotline.ticket.reopened.v1` events and before it commits them, and once
it has committed them and before it commits the batch's offsets. Either way the dispatch
that takes over records each reopen exactly once: none lost with the killed transaction,
none doubled by the redelivered batch, so the ticket's next work order is redo round 2.

The batch holds two reopens, a redelivered copy of the first (same event id) and the
second resent as a new event (same callback id).
"""

from __future__ import annotations

import signal
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer
from sqlalchemy.engine import make_url

from hotline.embedded import free_port, terminate
from shared.db import new_id
from shared.events import TicketReopened
from shared.faults import trigger_path
from shared.kafka import connection_options, ensure_topics
from shared.settings import Settings
from tests.support import (
    Child,
    eventually,
    killed_at_crash_point,
    publish,
    running_service,
    service_environment,
    start,
    submitted_event,
)

pytestmark = [pytest.mark.e2e, pytest.mark.kafka_leg]

TICKET = "R-crash"
AT = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)


def dispatch_process(settings: Settings, folder: Path, fault_dir: Path) -> Child:
    env = service_environment(settings)
    env["HOTLINE_DISPATCH_PORT"] = str(free_port())
    env["HOTLINE_FAULT_DIR"] = str(fault_dir)
    return start("dispatch", [sys.executable, "-m", "services.dispatch"], folder / "d.log", env)


async def count(connection: asyncpg.Connection, schema: str, table: str) -> int:
    try:
        return int(await connection.fetchval(f'SELECT count(*) FROM "{schema}".{table}'))
    except asyncpg.UndefinedTableError:
        return -1  # not migrated yet


@pytest.mark.parametrize(
    ("point", "recorded_when_killed"),
    [("consumer-flushed", 0), ("consumer-applied", 2)],
)
async def test_a_dispatch_killed_while_recording_reopens_loses_and_doubles_none(
    settings, infra, tmp_path, point, recorded_when_killed
):
    first = TicketReopened(ticket_id=TICKET, callback_id="cb-1", at=AT)
    second = TicketReopened(ticket_id=TICKET, callback_id="cb-2", at=AT + timedelta(minutes=5))
    first_id = new_id()
    topic = settings.topic("followup")
    await ensure_topics(settings)
    producer = AIOKafkaProducer(**connection_options(settings))
    await producer.start()
    try:
        # Only reopens on the topics, so the killed dispatch's first batch is theirs.
        await publish(producer, topic, first, first_id)
        await publish(producer, topic, second)
        await publish(producer, topic, first, first_id)  # redelivered
        await publish(producer, topic, second)  # the same fact under a new event id

        fault_dir = tmp_path / "faults"
        fault_dir.mkdir()
        killed = dispatch_process(settings, tmp_path, fault_dir)
        trigger_path(fault_dir, "dispatch", point, killed.process.pid).touch()
        url = make_url(settings.database_url).set(drivername="postgresql")
        connection = await asyncpg.connect(url.render_as_string(hide_password=False))
        schema = settings.schema_of("dispatch")
        try:
            await killed_at_crash_point(killed, fault_dir, point, timeout=90)
            reopens_when_killed = await count(connection, schema, "ticket_reopens")
            processed_when_killed = await count(connection, schema, "processed_events")
        finally:
            terminate(killed.process, signal.SIGTERM, 10, killed.name)

        async with running_service("dispatch", settings) as dispatch:
            await publish(producer, settings.topic("intake"), submitted_event(TICKET))

            async def known() -> bool:
                return (await dispatch.http.get(f"/tickets/{TICKET}")).status_code == 200

            async def all_applied() -> bool:
                # The three distinct events of the batch, and the ticket.
                return await count(connection, schema, "processed_events") == 4

            await eventually(known, timeout=30, message="dispatch knows the ticket")
            await eventually(all_applied, timeout=30, message="every event applied")
            reopens = await connection.fetch(
                f'SELECT callback_id, redo_work_order_id FROM "{schema}".ticket_reopens'
            )
            path = f"/tickets/{TICKET}/work-orders"
            redo = await dispatch.http.post(path, json={"department": "住建局"})
            ordinary = await dispatch.http.post(path, json={"department": "水务局"})
        await connection.close()
    finally:
        await producer.stop()

    assert reopens_when_killed == recorded_when_killed
    assert processed_when_killed == (0 if recorded_when_killed == 0 else 3)
    assert sorted(r["callback_id"] for r in reopens) == ["cb-1", "cb-2"]
    assert {r["redo_work_order_id"] for r in reopens} == {None}  # none taken before the POST
    assert redo.status_code == ordinary.status_code == 201, (redo.text, ordinary.text)
    assert (redo.json()["redo_round"], ordinary.json()["redo_round"]) == (2, 0)
