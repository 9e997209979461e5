"""Absurd `hotline.ticket.reopened.v1` events for dispatch's consumer of them: a NUL in the
callback id, a year-1 time, a 10 MB callback id, a 200-character one. Each is dead-lettered
with its reason and never recorded as a reopen, and the good reopen behind them on the same
partition is recorded: the consumer does not stall.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from shared.events import TicketReopened
from shared.kafka import dlq_topic, ensure_topics
from tests.integration.test_dead_letters import large_producer, send_event, send_raw
from tests.support import (
    eventually,
    headers_of,
    read_topic,
    record_of,
    running_service,
    submitted_event,
)

pytestmark = [pytest.mark.e2e, pytest.mark.kafka_leg]

TICKET = "R-absurd"
AT = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)
HUGE = 10 * 1024 * 1024


def reopened(callback_id: str) -> TicketReopened:
    return TicketReopened(ticket_id=TICKET, callback_id=callback_id, at=AT)


def poison_records() -> dict[str, tuple[bytes, bytes, list[tuple[str, bytes]]]]:
    """(key, value, headers) of reopens of one ticket that can never be recorded, by what is
    wrong with them."""
    year_1 = record_of(reopened("cb-year-1"))
    value = json.loads(year_1.value)
    value["at"] = "0001-01-01T00:00:00Z"
    records = {
        "NUL": record_of(reopened("cb\x00nul")),
        "10 MB": record_of(reopened("h" * HUGE)),
        "200 characters": record_of(reopened("c" * 200)),
    }
    return {
        "year 1": (year_1.key, json.dumps(value).encode(), year_1.headers),
        **{what: (r.key, r.value, r.headers) for what, r in records.items()},
    }


async def test_absurd_reopened_events_are_dead_lettered_and_the_good_one_behind_them_recorded(
    settings, infra
):
    topic = settings.topic("followup")
    poison = poison_records()
    assert len(poison["10 MB"][1]) > HUGE
    offsets: dict[str, int] = {}
    await ensure_topics(settings)  # Apache Kafka makes none on a first send
    async with large_producer(settings, topic, largest=HUGE + 1024) as producer:
        # All on partition 0 and published before dispatch starts: one batch, good one last.
        for what, record in poison.items():
            offsets[what] = await send_raw(producer, topic, *record)
        good_offset = await send_event(producer, topic, reopened("cb-good"))
        await send_event(producer, settings.topic("intake"), submitted_event(TICKET))
        async with running_service("dispatch", settings) as dispatch:

            async def known() -> bool:
                return (await dispatch.http.get(f"/tickets/{TICKET}")).status_code == 200

            await eventually(known, timeout=30, message="dispatch knows the ticket")
            letters = await read_topic(
                infra.bootstrap_servers, dlq_topic(topic), at_least=len(poison), timeout=30
            )
            # The good reopen was consumed, else this would wait for the batch (it cannot be
            # applied before the poison records ahead of it are dealt with).
            await dispatch.consumed()
            path = f"/tickets/{TICKET}/work-orders"
            redo = await dispatch.http.post(path, json={"department": "住建局"})
            ordinary = await dispatch.http.post(path, json={"department": "水务局"})

    assert good_offset > max(offsets.values())
    by_offset = {int(headers_of(r)["dlq_offset"]): r for r in letters}
    assert sorted(by_offset) == sorted(offsets.values())  # each poison record once, only them
    reasons = {
        what: headers_of(by_offset[offset])["dlq_reason"].decode()
        for what, offset in offsets.items()
    }
    assert reasons["year 1"].startswith("invalid hotline.ticket.reopened.v1: at:"), reasons
    assert "years 1970 to 2999" in reasons["year 1"]
    for what in ("NUL", "10 MB", "200 characters"):
        assert reasons[what].startswith("handler failed"), reasons
    assert "0x00" in reasons["NUL"]
    assert "too long" in reasons["10 MB"]
    assert "too long" in reasons["200 characters"]
    assert {headers_of(r)["dlq_service"] for r in letters} == {b"dispatch"}
    assert headers_of(by_offset[offsets["10 MB"]])["dlq_truncated"] == b"true"
    # Only the good reopen was recorded: the next work order is redo round 1, not more.
    assert redo.status_code == ordinary.status_code == 201, (redo.text, ordinary.text)
    assert (redo.json()["redo_round"], ordinary.json()["redo_round"]) == (1, 0)
