"""Tickets with their whole story as events, sent straight to the topics: for the tests of
metrics that need many tickets whose rates are known in advance (`story` says how each
ticket's figures are made)."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from aiokafka import AIOKafkaProducer

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
from shared.kafka import connection_options, ensure_topics
from shared.names import ServiceName
from shared.settings import Settings
from tests.support import record_of

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


Sent = tuple[ServiceName, Event, str]
"""The owner of the topic, the event, and its event id."""


def shuffled_records(rng: random.Random, tickets: range) -> tuple[list[Sent], int]:
    """Every event of `tickets` with an id, shuffled, plus redeliveries (same id) and resent
    facts (new id); and the number of distinct event ids."""
    sent = [(owner, event, str(uuid.uuid4())) for n in tickets for owner, event in story(n)]
    extra = min(40, len(sent))
    again = rng.sample(sent, extra)
    resent = [(owner, event, str(uuid.uuid4())) for owner, event, _ in rng.sample(sent, extra)]
    records = sent + again + resent
    rng.shuffle(records)
    return records, len(sent) + len(resent)


async def publish(settings: Settings, records: list[Sent]) -> None:
    await ensure_topics(settings)  # Apache Kafka creates no topic on a first send
    producer = AIOKafkaProducer(**connection_options(settings))
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


def expected_figures(tickets: range) -> dict[str, tuple[int, int]]:
    """(numerator, denominator) of the rates `story` makes for `tickets`, all counted."""
    count = len(tickets)
    return {
        "transfer_failure_rate": (sum(1 for n in tickets if n % 3 == 0), count),
        "reply_timeliness_rate": (sum(1 for n in tickets if n % 4 != 0), count),
        "satisfaction_rate": (sum(1 for n in tickets if n % 2 == 0), count),
        "unanswered_rate": (0, count),
    }


def figures_of(rates: dict[str, dict[str, float]]) -> dict[str, tuple[int, int]]:
    """The same rates' (numerator, denominator) from a `/rates` answer."""
    return {
        name: (int(rates[name]["numerator"]), int(rates[name]["denominator"]))
        for name in (
            "transfer_failure_rate",
            "reply_timeliness_rate",
            "satisfaction_rate",
            "unanswered_rate",
        )
    }


async def summed_cells(metrics: Any) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    """Every cell's counters, summed over the shards its writers used, read through a running
    metrics service (`tests.support.running_service`)."""
    key = [rate_cells.c[name] for name in CELL_KEY_COLUMNS]
    statement = sa.select(*key, *[sa.func.sum(rate_cells.c[name]) for name in COUNTERS])
    async with metrics.runtime.database.read() as db:
        rows = await db.execute(statement.group_by(*key))
    return {tuple(row[:6]): tuple(row[6:]) for row in rows}


async def assert_cells_equal_the_facts(metrics: Any) -> None:
    """The cells kept event by event equal those rebuilt from the counted facts."""
    kept = await summed_cells(metrics)
    await rebuild_cells(metrics.runtime.database.unit_of_work)
    assert kept == await summed_cells(metrics)
