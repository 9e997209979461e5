"""Metrics from events published straight to the topics, out of order and duplicated.

A reply is consumed before its work order and both before their ticket, a callback before
its ticket, a later "first" reply before the earlier one; events are sent twice, under the
same and under new event ids. Once everything is in, the rates are the ones worked out by
hand below, and the incrementally kept cells equal the cells rebuilt from the facts.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from aiokafka import AIOKafkaProducer
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from prometheus_client.parser import text_string_to_metric_families

from services.metrics.commands import rebuild_cells
from services.metrics.models import METADATA
from shared.events import (
    CallbackLogged,
    CallOutcome,
    TicketReopened,
    TicketSubmitted,
    TransferAttempted,
    WorkOrderCreated,
    WorkOrderReplied,
)
from shared.workdays import WorkCalendar, working_days_between
from tests.metric_stories import summed_cells
from tests.support import eventually, problem_fields, problem_of, record_of, running_service

pytestmark = pytest.mark.e2e

NOW = datetime.now(UTC).replace(microsecond=0)
T0 = NOW - timedelta(days=10)  # tickets A and B; C and D a day later
T1 = T0 + timedelta(days=1)


def ticket(ticket_id, city, channel, scenario, at, *, answered=True, wait=None, resolved=False):
    return TicketSubmitted(
        ticket_id=ticket_id,
        city=city,
        channel=channel,
        scenario=scenario,
        category="consultation",
        submitted_at=at,
        call=CallOutcome(answered=answered, wait_seconds=wait, resolved_at_first_contact=resolved),
    )


def transfer(ticket_id, transfer_id, department, mode, connected):
    return TransferAttempted(
        ticket_id=ticket_id,
        transfer_id=transfer_id,
        department=department,
        mode=mode,
        connected=connected,
        at=T1,
    )


def work_order(ticket_id, work_order_id, department, created, due):
    return WorkOrderCreated(
        ticket_id=ticket_id,
        work_order_id=work_order_id,
        department=department,
        created_at=created,
        due_at=due,
        due_working_days=5,
        calendar_source="chinesecalendar",
    )


def reply(ticket_id, work_order_id, reply_id, department, at, quality, *, first=True):
    return WorkOrderReplied(
        ticket_id=ticket_id,
        work_order_id=work_order_id,
        reply_id=reply_id,
        department=department,
        quality=quality,
        at=at,
        first=first,
    )


def callback(ticket_id, callback_id, reached, satisfaction=None):
    return CallbackLogged(
        ticket_id=ticket_id,
        callback_id=callback_id,
        reached=reached,
        satisfaction=satisfaction,
        at=NOW - timedelta(days=1),
    )


HOUSING, SOCIAL = "住建局", "人社局"
DUE_1 = T0 + timedelta(days=5)
DUE_2 = T0 + timedelta(days=2)
DUE_3 = NOW + timedelta(days=3)
DUE_4 = T1 + timedelta(days=1)

TICKETS = [
    ticket("D", "大连", "phone", "社保查询", T1 + timedelta(hours=2), answered=False),
    ticket("C", "大连", "online", "社保查询", T1 + timedelta(hours=1)),
    ticket("B", "沈阳", "phone", "户籍办理", T0 + timedelta(hours=2), wait=20, resolved=True),
    ticket("A", "沈阳", "phone", "社保查询", T0 + timedelta(hours=1), wait=12.5),
]
DISPATCH = [
    # Ticket A: the first reply and a later reply arrive before the work order itself.
    reply("A", "WO1", "R1", HOUSING, DUE_1, "definite"),  # exactly at due_at: on time
    reply("A", "WO1", "R1b", HOUSING, DUE_1 + timedelta(days=1), "none", first=False),
    work_order("A", "WO1", HOUSING, T0 + timedelta(hours=3), DUE_1),
    transfer("A", "X1", HOUSING, "transfer", connected=False),
    work_order("A", "WO2", SOCIAL, T0 + timedelta(hours=4), DUE_2),  # never answered: overdue
    # Ticket C: a later "first" reply comes before the earlier one; the earliest wins.
    transfer("C", "X2", SOCIAL, "three_way", connected=True),
    work_order("C", "WO3", SOCIAL, T1 + timedelta(hours=3), DUE_3),  # not due yet
    work_order("C", "WO4", HOUSING, T1 + timedelta(hours=4), DUE_4),
    reply("C", "WO4", "R4x", HOUSING, DUE_4 + timedelta(hours=5), "definite"),
    reply("C", "WO4", "R4", HOUSING, DUE_4 + timedelta(hours=1), "partial"),  # late
]
FOLLOWUP = [
    # A's reopen (重办) comes before the unsatisfied answer that caused it.
    TicketReopened(ticket_id="A", callback_id="CB2", at=NOW - timedelta(days=1)),
    callback("B", "CB1", reached=True, satisfaction="satisfied"),
    callback("A", "CB2", reached=True, satisfaction="unsatisfied"),
    callback("D", "CB3", reached=False),
]


def rate(value, numerator, denominator):
    return {"value": value, "numerator": numerator, "denominator": denominator}


EXPECTED_ALL = {
    "connection_rate": rate(2 / 3, 2, 3),
    "avg_wait_seconds": rate(16.25, 32.5, 2),
    "answered_within_15s_rate": rate(0.5, 1, 2),
    "first_contact_resolution_rate": rate(1 / 3, 1, 3),
    "transfer_failure_rate": rate(1.0, 1, 1),
    "three_way_failure_rate": rate(0.0, 0, 1),
    "unanswered_rate": rate(0.5, 2, 4),
    "reply_timeliness_rate": rate(1 / 3, 1, 3),
    "definite_reply_rate": rate(0.5, 1, 2),
    "callback_rate": rate(2 / 3, 2, 3),
    "satisfaction_rate": rate(0.5, 1, 2),
    "reopen_rate": rate(0.5, 1, 2),
}
EXPECTED_SHENYANG = {
    "connection_rate": rate(1.0, 2, 2),
    "avg_wait_seconds": rate(16.25, 32.5, 2),
    "answered_within_15s_rate": rate(0.5, 1, 2),
    "first_contact_resolution_rate": rate(0.5, 1, 2),
    "transfer_failure_rate": rate(1.0, 1, 1),
    "three_way_failure_rate": rate(None, 0, 0),
    "unanswered_rate": rate(0.5, 1, 2),
    "reply_timeliness_rate": rate(0.5, 1, 2),
    "definite_reply_rate": rate(1.0, 1, 1),
    "callback_rate": rate(1.0, 2, 2),
    "satisfaction_rate": rate(0.5, 1, 2),
    "reopen_rate": rate(0.5, 1, 2),
}
EXPECTED_DALIAN = {
    "connection_rate": rate(0.0, 0, 1),
    "avg_wait_seconds": rate(None, 0, 0),
    "answered_within_15s_rate": rate(None, 0, 0),
    "first_contact_resolution_rate": rate(0.0, 0, 1),
    "transfer_failure_rate": rate(None, 0, 0),
    "three_way_failure_rate": rate(0.0, 0, 1),
    "unanswered_rate": rate(0.5, 1, 2),
    "reply_timeliness_rate": rate(0.0, 0, 1),
    "definite_reply_rate": rate(0.0, 0, 1),
    "callback_rate": rate(0.0, 0, 1),
    "satisfaction_rate": rate(None, 0, 0),
    "reopen_rate": rate(None, 0, 0),
}
EXPECTED_HOUSING = {  # department narrows transfers, work orders and replies only
    **EXPECTED_ALL,
    "transfer_failure_rate": rate(1.0, 1, 1),
    "three_way_failure_rate": rate(None, 0, 0),
    "unanswered_rate": rate(0.0, 0, 2),
    "reply_timeliness_rate": rate(0.5, 1, 2),
    "definite_reply_rate": rate(0.5, 1, 2),
}


def assert_rates(actual, expected):
    assert list(actual) == list(expected)
    for name, want in expected.items():
        got = actual[name]
        assert (got["numerator"], got["denominator"]) == (
            pytest.approx(want["numerator"]),
            want["denominator"],
        ), name
        if want["value"] is None:
            assert got["value"] is None, name
        else:
            assert got["value"] == pytest.approx(want["value"]), name


class Publisher:
    def __init__(self, producer, settings):
        self.producer = producer
        self.settings = settings
        self.event_ids = set()

    async def send(self, owner, event, event_id=None):
        event_id = event_id or str(uuid.uuid4())
        self.event_ids.add(event_id)
        record = record_of(event, event_id, source=f"/hotline/{owner}")
        await self.producer.send_and_wait(
            self.settings.topic(owner), record.value, key=record.key, headers=record.headers
        )
        return event_id


async def processed_count(metrics):
    async with metrics.runtime.database.unit_of_work() as uow:
        result = await uow.execute(sa.text("SELECT count(*) FROM processed_events"))
        return result.scalar_one()


async def test_out_of_order_and_duplicated_events_are_counted_once_and_exactly(settings, infra):
    settings = settings.model_copy(update={"rates_refresh_seconds": 0.2})
    async with running_service("metrics", settings) as metrics:
        producer = AIOKafkaProducer(bootstrap_servers=infra.bootstrap_servers)
        await producer.start()
        try:
            publisher = Publisher(producer, settings)
            # Phase 1: everything but the tickets, with duplicates of both kinds.
            for event in DISPATCH:
                await publisher.send("dispatch", event)
            await publisher.send("dispatch", DISPATCH[3])  # the transfer again, a new event id
            for event in FOLLOWUP:
                event_id = await publisher.send("followup", event)
                await publisher.send("followup", event, event_id)  # redelivered as is
            await eventually(
                lambda: _equals(processed_count(metrics), len(publisher.event_ids)),
                message="dispatch and followup events applied",
            )
            before = (await metrics.http.get("/rates")).json()["rates"]
            waiting = (await metrics.http.get("/audit/unanswered")).json()

            # Phase 2: the tickets, one of them twice under different event ids.
            for event in TICKETS:
                await publisher.send("intake", event)
            await publisher.send("intake", TICKETS[-1])
            await eventually(
                lambda: _equals(processed_count(metrics), len(publisher.event_ids)),
                message="ticket events applied",
            )
        finally:
            await producer.stop()

        rates = (await metrics.http.get("/rates")).json()["rates"]
        by_city = (await metrics.http.get("/rates/by/city")).json()
        housing = (await metrics.http.get("/rates", params={"department": HOUSING})).json()
        by_department = (await metrics.http.get("/rates/by/department")).json()
        late_window = (
            await metrics.http.get(
                "/rates", params={"since": (T0 + timedelta(hours=12)).isoformat()}
            )
        ).json()
        audit = (await metrics.http.get("/audit/unanswered")).json()
        overdue = (
            await metrics.http.get("/audit/unanswered", params={"overdue_only": True})
        ).json()
        shenyang = (await metrics.http.get("/audit/unanswered", params={"city": "沈阳"})).json()
        csv_text = (await metrics.http.get("/audit/unanswered", params={"format": "csv"})).text
        series = await eventually(
            lambda: _series_with(
                metrics, 'hotline_tickets_total{answered="true",channel="phone",city="沈阳"}'
            ),
            message="rate series refreshed",
        )

        kept = await summed_cells(metrics)
        await rebuild_cells(metrics.runtime.database.unit_of_work)
        rebuilt = await summed_cells(metrics)
        async with metrics.runtime.database.read() as db:
            connection = await db.session.connection()
            drift = await connection.run_sync(
                lambda sync: compare_metadata(_context(sync), METADATA)
            )

    # Before their tickets, facts are kept but not counted; the audit already lists them.
    assert before["connection_rate"] == rate(None, 0, 0)
    assert before["unanswered_rate"] == rate(None, 0, 0)
    assert [item["work_order_id"] for item in waiting["items"]] == ["WO2", "WO3"]
    assert {item["city"] for item in waiting["items"]} == {None}

    assert_rates(rates, EXPECTED_ALL)
    assert by_city["by"] == "city"
    assert [group["key"] for group in by_city["groups"]] == ["大连", "沈阳"]
    assert_rates(by_city["groups"][0]["rates"], EXPECTED_DALIAN)
    assert_rates(by_city["groups"][1]["rates"], EXPECTED_SHENYANG)
    assert_rates(housing["rates"], EXPECTED_HOUSING)
    assert [group["key"] for group in by_department["groups"]] == [SOCIAL, HOUSING]
    assert_rates(by_department["groups"][1]["rates"], EXPECTED_HOUSING)
    # Since half a day after A and B were submitted: only C and D, i.e. Dalian's rates.
    assert_rates(late_window["rates"], EXPECTED_DALIAN)

    calendar = WorkCalendar.load(settings.holiday_path())
    assert audit["total"] == 2
    assert [(i["work_order_id"], i["city"], i["overdue"]) for i in audit["items"]] == [
        ("WO2", "沈阳", True),
        ("WO3", "大连", False),
    ]
    ages = [i["age_working_days"] for i in audit["items"]]
    assert ages[0] == working_days_between(T0 + timedelta(hours=4), datetime.now(UTC), calendar)
    assert ages[0] >= 5  # ten calendar days
    assert [i["work_order_id"] for i in overdue["items"]] == ["WO2"]
    assert [i["work_order_id"] for i in shenyang["items"]] == ["WO2"]
    lines = csv_text.strip().splitlines()
    assert lines[0].split(",") == [
        "work_order_id",
        "ticket_id",
        "city",
        "department",
        "created_at",
        "due_at",
        "overdue",
        "age_working_days",
    ]
    assert lines[1].startswith("WO2,A,沈阳,人社局,")
    assert lines[1].split(",")[6] == "true"

    samples = parse_samples(series)
    assert samples[("hotline_tickets_total", ("大连", "phone"), ("answered", "false"))] == 1
    assert samples[("hotline_tickets_total", ("沈阳", "phone"), ("answered", "true"))] == 2
    assert samples[("hotline_tickets_total", ("大连", "online"), ("answered", "true"))] == 1
    transfer_failed = ("connected", "false"), ("mode", "transfer")
    assert samples[("hotline_transfers_total", ("沈阳", "phone"), *transfer_failed)] == 1
    assert samples[("hotline_work_orders_created_total", ("沈阳", "phone"))] == 2
    late_partial = ("on_time", "false"), ("quality", "partial")
    assert samples[("hotline_first_replies_total", ("大连", "online"), *late_partial)] == 1
    satisfied = ("reached", "true"), ("satisfaction", "satisfied")
    assert samples[("hotline_callbacks_total", ("沈阳", "phone"), *satisfied)] == 1
    rate_of = {
        (labels["rate"], labels["city"]): value
        for labels, value in named_samples(series, "hotline_rate_ratio")
    }
    assert rate_of[("reply_timeliness_rate", "沈阳")] == 0.5
    assert rate_of[("connection_rate", "大连")] == 0.0
    assert ("three_way_failure_rate", "沈阳") not in rate_of  # 0/0 has no sample
    assert samples[("hotline_avg_wait_seconds", ("沈阳",))] == 16.25

    assert kept == rebuilt
    assert len(kept) > 100
    assert drift == []  # the hand-written migration builds exactly the declared tables


def named_samples(text, metric):
    """[(labels, value)] of one metric's samples."""
    return [
        (sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == metric
    ]


def parse_samples(text):
    """Samples keyed (name, (city, channel) or (city,), *sorted other labels)."""
    keyed = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = dict(sample.labels)
            if "city" not in labels:
                continue
            where = (labels.pop("city"),) + (
                (labels.pop("channel"),) if "channel" in labels else ()
            )
            keyed[(sample.name, where, *sorted(labels.items()))] = sample.value
    return keyed


def _context(connection):
    """Compare metrics's own tables only (processed_events is shared's)."""

    def own(name, type_, parent_names):
        return type_ != "table" or name in METADATA.tables

    return MigrationContext.configure(connection, opts={"include_name": own})


async def _equals(awaitable, expected):
    return await awaitable == expected


async def _series_with(metrics, needle):
    text = (await metrics.http.get("/metrics")).text
    return text if needle in text else None


BAD_FILTERS = [
    ("/rates", {"channel": "fax"}, "query.channel"),
    ("/rates", {"since": "2026-01-01T08:00:00"}, "query.since"),
    ("/rates", {"until": "yesterday"}, "query.until"),
    ("/rates", {"since": "2026-02-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, "query.until"),
    ("/rates", {"city": ""}, "query.city"),
    ("/rates/by/channel", {"department": ""}, "query.department"),
    ("/rates/by/color", {}, "path.dimension"),
    ("/audit/unanswered", {"format": "xml"}, "query.format"),
    ("/audit/unanswered", {"limit": 0}, "query.limit"),
    ("/audit/unanswered", {"cursor": "garbage"}, "query.cursor"),
]


async def test_bad_filters_are_a_422_naming_the_field(settings):
    async with running_service("metrics", settings, wait_for_broker=False) as metrics:
        answers = [
            (field, await metrics.http.get(path, params=params))
            for path, params, field in BAD_FILTERS
        ]
    for field, response in answers:
        problem_of(response, 422)
        assert problem_fields(response) == {field}, (field, response.text)
    unknown_dimension = answers[6][1].text
    assert all(name in unknown_dimension for name in ("city", "channel", "scenario", "department"))
