"""Absurd events for metrics's set-wise batches: a value longer than its column, an event id
longer than any id, an empty department. Each such event is dead-lettered with its reason,
never stored cut short under a name it did not have, and the rest of its batch is counted.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from aiokafka import AIOKafkaProducer

from shared.events import TransferAttempted
from shared.kafka import connection_options, dlq_topic, ensure_topics
from tests.support import (
    eventually,
    headers_of,
    read_topic,
    record_of,
    running_service,
    submitted_event,
)

pytestmark = pytest.mark.e2e

AT = datetime.now(UTC).replace(microsecond=0) - timedelta(days=2)


def transfer(ticket_id: str, transfer_id: str, department: str) -> TransferAttempted:
    return TransferAttempted(
        ticket_id=ticket_id,
        transfer_id=transfer_id,
        department=department,
        mode="transfer",
        connected=False,
        at=AT,
    )


async def test_overlong_and_empty_values_are_dead_lettered_and_the_batch_is_counted(settings):
    long_department = "住" * 65  # the column holds 64
    good = transfer("B-good", "BX-good", "住建局")
    bad = [
        (transfer("B-long", "BX-long", long_department), "handler failed"),
        (transfer("B-empty", "BX-empty", ""), "department must not be empty"),
        (transfer("B-id", "BX-id", "住建局"), "ce_id"),
    ]
    await ensure_topics(settings)
    producer = AIOKafkaProducer(**connection_options(settings))
    await producer.start()
    try:
        for ticket_id in ("B-good", "B-long", "B-empty", "B-id"):
            record = record_of(submitted_event(ticket_id, ago=timedelta(days=2)))
            await producer.send(
                settings.topic("intake"), record.value, key=record.key, headers=record.headers
            )
        for event, _ in bad[:2]:
            record = record_of(event)
            await producer.send(
                settings.topic("dispatch"), record.value, key=record.key, headers=record.headers
            )
        record = record_of(bad[2][0], "i" * 200)  # an event id far longer than any id
        await producer.send(
            settings.topic("dispatch"), record.value, key=record.key, headers=record.headers
        )
        record = record_of(good)
        await producer.send(
            settings.topic("dispatch"), record.value, key=record.key, headers=record.headers
        )
        await producer.flush()
    finally:
        await producer.stop()

    async with running_service("metrics", settings) as metrics:

        async def counted() -> dict | None:
            rates = (await metrics.http.get("/rates")).json()["rates"]
            failure = rates["transfer_failure_rate"]
            return (
                failure
                if failure["denominator"] >= 1 and rates["connection_rate"]["denominator"] == 4
                else None
            )

        failure = await eventually(counted, timeout=30, message="the good events counted")
        letters = await read_topic(
            settings.kafka_bootstrap_servers, dlq_topic(settings.topic("dispatch")), at_least=3
        )
        by_department = (await metrics.http.get("/rates/by/department")).json()["groups"]

    assert (failure["numerator"], failure["denominator"]) == (1, 1)  # only the good one
    assert [group["key"] for group in by_department] == ["住建局"]  # nothing cut to 64
    reasons = {record.key.decode(): headers_of(record)["dlq_reason"].decode() for record in letters}
    for event, reason in bad:
        assert reason in reasons[event.ticket_id], reasons
    assert {headers_of(record)["dlq_service"] for record in letters} == {b"metrics"}
