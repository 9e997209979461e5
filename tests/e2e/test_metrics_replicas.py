"""Metrics replicas in one consumer group, with no lock between them, one of them killed with
`kill -9` once it has written a whole batch and before it commits (that two writers really
run at once is shown in `tests/integration/test_metrics_writers.py`).

The events of 120 tickets go to the three topics shuffled (replies before their work orders,
callbacks before their tickets), with redeliveries under the same event id and resent facts
under new ones. Once every event is in, each fact is counted once, the cells (summed over
the shards the replicas wrote) equal the cells rebuilt from the facts, and `/rates` gives the
figures the tickets were made with.
"""

from __future__ import annotations

import random
import signal
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
import sqlalchemy as sa
from aiokafka import AIOKafkaProducer
from sqlalchemy.engine import make_url

from hotline.embedded import free_port, terminate
from services.metrics.commands import rebuild_cells
from services.metrics.cube import CELL_KEY_COLUMNS
from services.metrics.models import rate_cells
from services.metrics.rates import COUNTERS
from shared.events import (
    CallbackLogged,
    CallOutcome,
    Event,
    TicketSubmitted,
    TransferAttempted,
    WorkOrderCreated,
    WorkOrderReplied,
)
from shared.faults import trigger_path
from shared.names import ServiceName
from shared.settings import Settings
from tests.support import (
    Child,
    eventually,
    record_of,
    running_service,
    service_environment,
    start,
)

pytestmark = pytest.mark.e2e

TICKETS = 120
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(days=20)


def story(n: int) -> list[tuple[ServiceName, Event]]:
    """A ticket with a failed transfer every third time, a work order replied on time unless
    n % 4 == 0, and a callback: satisfied when n is even."""
    ticket, at = f"R{n}", T0 + timedelta(hours=n)
    work_order = f"RW{n}"
    return [
        (
            "intake",
            TicketSubmitted(
                ticket_id=ticket,
                city=("沈阳", "大连", "鞍山")[n % 3],
                channel="phone",
                scenario="社保查询",
                category="consultation",
                submitted_at=at,
                call=CallOutcome(answered=True, wait_seconds=10, resolved_at_first_contact=False),
            ),
        ),
        (
            "dispatch",
            TransferAttempted(
                ticket_id=ticket,
                transfer_id=f"RX{n}",
                department=("人社局", "住建局")[n % 2],
                mode="transfer",
                connected=n % 3 != 0,
                at=at,
            ),
        ),
        (
            "dispatch",
            WorkOrderCreated(
                ticket_id=ticket,
                work_order_id=work_order,
                department=("人社局", "住建局")[n % 2],
                created_at=at + timedelta(minutes=5),
                due_at=at + timedelta(days=5),
                due_working_days=3,
                calendar_source="chinesecalendar",
            ),
        ),
        (
            "dispatch",
            WorkOrderReplied(
                ticket_id=ticket,
                work_order_id=work_order,
                reply_id=f"RR{n}",
                department=("人社局", "住建局")[n % 2],
                quality="definite",
                at=at + timedelta(days=6 if n % 4 == 0 else 1),
                first=True,
            ),
        ),
        (
            "followup",
            CallbackLogged(
                ticket_id=ticket,
                callback_id=f"RC{n}",
                reached=True,
                satisfaction="satisfied" if n % 2 == 0 else "unsatisfied",
                at=at + timedelta(days=7),
            ),
        ),
    ]


def shuffled_records(rng: random.Random) -> tuple[list[tuple[ServiceName, Event, str]], int]:
    """Every event with an id, shuffled, plus redeliveries (same id) and resent facts (new
    id); and the number of distinct event ids."""
    sent = [(owner, event, str(uuid.uuid4())) for n in range(TICKETS) for owner, event in story(n)]
    again = rng.sample(sent, 40)
    resent = [(owner, event, str(uuid.uuid4())) for owner, event, _ in rng.sample(sent, 40)]
    records = sent + again + resent
    rng.shuffle(records)
    return records, len(sent) + len(resent)


async def publish(settings: Settings, records: list[tuple[ServiceName, Event, str]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        for owner, event, event_id in records:
            record = record_of(event, event_id, source=f"/hotline/{owner}")
            await producer.send(
                settings.topic(owner), record.value, key=record.key, headers=record.headers
            )
        await producer.flush()
    finally:
        await producer.stop()


def replica(settings: Settings, folder: Path, name: str, fault_dir: Path | None) -> Child:
    env = service_environment(settings)
    env["HOTLINE_METRICS_PORT"] = str(free_port())
    env["HOTLINE_LOG_LEVEL"] = "INFO"
    if fault_dir is not None:
        env["HOTLINE_FAULT_DIR"] = str(fault_dir)
    return start(name, [sys.executable, "-m", "services.metrics"], folder / f"{name}.log", env)


async def processed(connection: asyncpg.Connection, schema: str) -> int:
    try:
        return int(await connection.fetchval(f'SELECT count(*) FROM "{schema}".processed_events'))
    except asyncpg.UndefinedTableError:
        return 0  # not migrated yet


async def summed_cells(db) -> dict[tuple, tuple]:
    key = [rate_cells.c[name] for name in CELL_KEY_COLUMNS]
    statement = sa.select(*key, *[sa.func.sum(rate_cells.c[name]) for name in COUNTERS])
    rows = await db.execute(statement.group_by(*key))
    return {tuple(row[:6]): tuple(row[6:]) for row in rows}


async def test_two_replicas_and_a_kill_9_mid_commit_count_every_fact_once(settings, tmp_path):
    # Small batches: many transactions, so the replicas' writes interleave.
    settings = settings.model_copy(update={"consumer_batch_size": 40})
    records, distinct = shuffled_records(random.Random(13))
    await publish(settings, records)

    fault_dir = tmp_path / "faults"
    fault_dir.mkdir()
    first = replica(settings, tmp_path, "metrics-a", fault_dir)
    trigger_path(fault_dir, "metrics", "consumer-flushed", first.process.pid).touch()
    second = replica(settings, tmp_path, "metrics-b", None)
    children = [first, second]
    url = make_url(settings.database_url).set(drivername="postgresql")
    connection = await asyncpg.connect(url.render_as_string(hide_password=False))
    schema = settings.schema_of("metrics")
    try:
        await eventually(
            lambda: first.process.poll() is not None,
            timeout=60,
            message="replica a killed at its first written batch",
        )
        assert first.process.returncode == -signal.SIGKILL, first.tail()
        assert not any(fault_dir.iterdir())  # the armed point was reached, not skipped
        again = replica(settings, tmp_path, "metrics-a2", None)
        children.append(again)

        async def all_applied() -> bool:
            return await processed(connection, schema) == distinct

        await eventually(all_applied, timeout=120, message="every event applied once")
        assert second.process.poll() is None, second.tail()
        assert again.process.poll() is None, again.tail()
    finally:
        await connection.close()
        for child in children:
            terminate(child.process, signal.SIGTERM, 10, child.name)

    async with running_service("metrics", settings) as metrics:
        rates = (await metrics.http.get("/rates")).json()["rates"]
        async with metrics.runtime.database.read() as db:
            kept = await summed_cells(db)
        await rebuild_cells(metrics.runtime.database.unit_of_work)
        async with metrics.runtime.database.read() as db:
            rebuilt = await summed_cells(db)

    assert kept == rebuilt
    failed_transfers = sum(1 for n in range(TICKETS) if n % 3 == 0)
    late = sum(1 for n in range(TICKETS) if n % 4 == 0)
    assert rates["transfer_failure_rate"]["numerator"] == failed_transfers
    assert rates["transfer_failure_rate"]["denominator"] == TICKETS
    assert rates["reply_timeliness_rate"]["denominator"] == TICKETS
    assert rates["reply_timeliness_rate"]["numerator"] == TICKETS - late
    assert rates["satisfaction_rate"]["numerator"] == TICKETS // 2
    assert rates["satisfaction_rate"]["denominator"] == TICKETS
    assert rates["unanswered_rate"]["numerator"] == 0
