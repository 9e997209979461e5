"""Dispatch and followup end to end: HTTP in, events out, and the services reading each
other's events over the real broker and PostgreSQL."""

import asyncio
import dataclasses
import json
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta

import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client import REGISTRY

from services.dispatch import commands as dispatch_commands
from services.dispatch.domain import DispatchPolicy
from shared.db import new_id
from shared.events import CallOutcome, TicketSubmitted, WorkOrderReplied
from shared.workdays import WorkCalendar, due_at
from tests.support import (
    eventually,
    headers_of,
    problem_fields,
    problem_of,
    read_topic,
    running_service,
)
from tests.support import publish as publish_event

pytestmark = [pytest.mark.e2e, pytest.mark.kafka_leg]

SHANGHAI_OFFSET = timedelta(hours=8)


def submitted(ticket_id=None, *, at, city="沈阳", resolved=False):
    return TicketSubmitted(
        ticket_id=ticket_id or new_id(),
        city=city,
        channel="phone",
        scenario="供暖",
        category="complaint",
        submitted_at=at,
        call=CallOutcome(answered=True, wait_seconds=8, resolved_at_first_contact=resolved),
    )


@pytest.fixture
async def producer(infra):
    producer = AIOKafkaProducer(bootstrap_servers=infra.bootstrap_servers, acks="all")
    await producer.start()
    yield producer
    await producer.stop()


async def start(stack, settings, *names):
    """Start services one after the other (their migrations share Alembic's global state),
    then wait for all of them to join the broker at once (joining takes seconds)."""
    clients = [
        await stack.enter_async_context(running_service(name, settings, wait_for_broker=False))
        for name in names
    ]
    for client in clients:
        await eventually(client.runtime.broker_connected.is_set, message="on the broker")
    return clients


async def publish(producer, topic, *events):
    """Put events on a topic as their owner's relay would."""
    for event in events:
        await publish_event(producer, topic, event)


async def redeliver(producer, record):
    """A copy of an already consumed record: same key, value and headers (ce_id included)."""
    await producer.send_and_wait(
        record.topic, record.value, key=record.key, headers=list(record.headers)
    )


def events_of(records, ticket_id):
    return [
        (headers_of(r)["ce_type"].decode(), json.loads(r.value))
        for r in records
        if r.key == ticket_id.encode()
    ]


def consumed(service, topic, ce_type, outcome="processed"):
    """How many events of a type a service took from a topic, by outcome (its own metric)."""
    value = REGISTRY.get_sample_value(
        "hotline_events_consumed_total",
        {"service": service, "topic": topic, "type": ce_type, "outcome": outcome},
    )
    return value or 0


async def ok(response, expected=201):
    assert response.status_code == expected, response.text
    return response.json()


async def known(client, ticket_id):
    return (await client.http.get(f"/tickets/{ticket_id}")).status_code == 200


async def test_one_ticket_lives_its_whole_life_with_each_event_published_once_in_order(
    settings, infra
):
    async with AsyncExitStack() as stack:
        intake, dispatch, followup = await start(stack, settings, "intake", "dispatch", "followup")
        ticket = await ok(
            await intake.http.post(
                "/tickets",
                json={
                    "city": "沈阳",
                    "channel": "phone",
                    "scenario": "供暖",
                    "category": "complaint",
                    "content": "暖气不热，家里只有十五度",
                    "call": {
                        "answered": True,
                        "wait_seconds": 9,
                        "resolved_at_first_contact": False,
                    },
                },
            )
        )
        ticket_id = ticket["ticket_id"]
        await eventually(lambda: known(dispatch, ticket_id), message="dispatch knows the ticket")
        await eventually(lambda: known(followup, ticket_id), message="followup knows the ticket")
        transfers = f"/tickets/{ticket_id}/transfers"
        failed = await ok(
            await dispatch.http.post(
                transfers, json={"department": "供热办", "mode": "transfer", "connected": False}
            )
        )
        three_way = await ok(
            await dispatch.http.post(
                transfers, json={"department": "供热办", "mode": "three_way", "connected": True}
            )
        )
        first_order = await ok(
            await dispatch.http.post(
                f"/tickets/{ticket_id}/work-orders", json={"department": "供热办"}
            )
        )
        first_reply = await ok(
            await (await dispatch.department("供热办")).post(
                f"/work-orders/{first_order['work_order_id']}/replies",
                json={"content": "已派人检修管道", "quality": "definite"},
            )
        )

        async def due_ids():
            page = (await followup.http.get("/callbacks/due")).json()
            return {item["ticket_id"] for item in page["items"]}

        await eventually(lambda: _has(due_ids(), ticket_id), message="callback due after reply")
        unsatisfied = await ok(
            await followup.http.post(
                f"/tickets/{ticket_id}/callbacks",
                json={"reached": True, "satisfaction": "unsatisfied"},
            )
        )
        assert ticket_id not in await due_ids()

        async def dispatch_view():
            return (await dispatch.http.get(f"/tickets/{ticket_id}")).json()

        reopened = await eventually(
            lambda: _where(dispatch_view(), lambda v: v["reopened"]), message="ticket reopened"
        )
        await eventually(
            lambda: consumed("dispatch", settings.topic("followup"), "hotline.ticket.reopened.v1"),
            message="dispatch has the reopen",
        )
        second_order = await ok(
            await dispatch.http.post(
                f"/tickets/{ticket_id}/work-orders", json={"department": "供热办"}
            )
        )
        still_reopened = await dispatch_view()
        second_reply = await ok(
            await (await dispatch.department("供热办")).post(
                f"/work-orders/{second_order['work_order_id']}/replies",
                json={"content": "已更换暖气片", "quality": "definite"},
            )
        )
        await eventually(lambda: _has(due_ids(), ticket_id), message="callback due again")
        satisfied = await ok(
            await followup.http.post(
                f"/tickets/{ticket_id}/callbacks",
                json={"reached": True, "satisfaction": "satisfied"},
            )
        )
        closed = await eventually(
            lambda: _where(dispatch_view(), lambda v: not v["reopened"]),
            message="reopen closed by a satisfied callback",
        )
        followup_view = (await followup.http.get(f"/tickets/{ticket_id}")).json()
        dispatched = await read_topic(
            infra.bootstrap_servers, settings.topic("dispatch"), at_least=6
        )
        followed = await read_topic(infra.bootstrap_servers, settings.topic("followup"), at_least=3)
        submissions = await read_topic(
            infra.bootstrap_servers, settings.topic("intake"), at_least=1
        )

    created_at = datetime.fromisoformat(first_order["created_at"])
    expected_due = due_at(created_at, 5, WorkCalendar.load(settings.holiday_path()))
    assert datetime.fromisoformat(first_order["due_at"]) == expected_due.due_at
    assert first_order["calendar_source"] == expected_due.source
    assert first_reply["first"] is True
    assert second_reply["first"] is True
    assert reopened["reopen_count"] == 1
    assert still_reopened["reopened"] is True  # a new work order does not close the reopen
    assert [w["status"] for w in still_reopened["work_orders"]] == ["replied", "unanswered"]
    assert closed["reopen_count"] == 1
    assert [t["connected"] for t in closed["transfers"]] == [False, True]
    assert followup_view["callback_due"] is False
    assert [c["satisfaction"] for c in followup_view["callbacks"]] == ["unsatisfied", "satisfied"]

    assert len(submissions) == 1
    assert [
        (t, d.get("transfer_id") or d["work_order_id"]) for t, d in events_of(dispatched, ticket_id)
    ] == [
        ("hotline.transfer.attempted.v1", failed["transfer_id"]),
        ("hotline.transfer.attempted.v1", three_way["transfer_id"]),
        ("hotline.workorder.created.v1", first_order["work_order_id"]),
        ("hotline.workorder.replied.v1", first_order["work_order_id"]),
        ("hotline.workorder.created.v1", second_order["work_order_id"]),
        ("hotline.workorder.replied.v1", second_order["work_order_id"]),
    ]
    assert [(t, d["callback_id"]) for t, d in events_of(followed, ticket_id)] == [
        ("hotline.callback.logged.v1", unsatisfied["callback_id"]),
        ("hotline.ticket.reopened.v1", unsatisfied["callback_id"]),
        ("hotline.callback.logged.v1", satisfied["callback_id"]),
    ]
    assert (first_order["redo_round"], second_order["redo_round"]) == (0, 1)
    ce_ids = [headers_of(r)["ce_id"] for r in dispatched + followed + submissions]
    assert len(ce_ids) == len(set(ce_ids)) == 10


async def _has(awaitable, item):
    return item in await awaitable


async def _where(awaitable, predicate):
    value = await awaitable
    return value if predicate(value) else None


async def test_a_ticket_not_yet_known_answers_409_then_succeeds_once_its_event_arrives(
    settings, producer
):
    event = submitted(at=datetime.now(UTC))
    transfer = {"department": "城管局", "mode": "transfer", "connected": True}
    callback = {"reached": True, "satisfaction": "satisfied"}
    async with AsyncExitStack() as stack:
        dispatch, followup = await start(stack, settings, "dispatch", "followup")
        early_transfer = await dispatch.http.post(
            f"/tickets/{event.ticket_id}/transfers", json=transfer
        )
        early_order = await dispatch.http.post(
            f"/tickets/{event.ticket_id}/work-orders", json={"department": "城管局"}
        )
        early_view = await dispatch.http.get(f"/tickets/{event.ticket_id}")
        early_callback = await followup.http.post(
            f"/tickets/{event.ticket_id}/callbacks", json=callback
        )
        await publish(producer, settings.topic("intake"), event)

        async def retried(client, path, body):
            response = await client.http.post(path, json=body)
            return response if response.status_code == 201 else None

        late_transfer = await eventually(
            lambda: retried(dispatch, f"/tickets/{event.ticket_id}/transfers", transfer),
            message="transfer accepted once the ticket is known",
        )
        late_callback = await eventually(
            lambda: retried(followup, f"/tickets/{event.ticket_id}/callbacks", callback),
            message="callback accepted once the ticket is known",
        )
    for early in (early_transfer, early_order, early_view, early_callback):
        problem_of(early, 409, "not_yet_known")
        assert early.headers["Retry-After"] == str(settings.retry_after_seconds)
    assert late_transfer.json()["department"] == "城管局"
    assert late_callback.json()["satisfaction"] == "satisfied"


async def test_a_redelivered_event_changes_nothing(settings, infra, producer):
    event = submitted(at=datetime.now(UTC) - timedelta(hours=1))
    ticket_id = event.ticket_id
    async with AsyncExitStack() as stack:
        dispatch, followup = await start(stack, settings, "dispatch", "followup")
        await publish(producer, settings.topic("intake"), event)
        await eventually(lambda: known(dispatch, ticket_id), message="dispatch knows the ticket")
        await eventually(lambda: known(followup, ticket_id), message="followup knows the ticket")
        order = await ok(
            await dispatch.http.post(
                f"/tickets/{ticket_id}/work-orders", json={"department": "水务局"}
            )
        )
        await ok(
            await (await dispatch.department("水务局")).post(
                f"/work-orders/{order['work_order_id']}/replies",
                json={"content": "已维修", "quality": "partial"},
            )
        )
        await eventually(
            lambda: _where(followup.http.get(f"/tickets/{ticket_id}"), _due),
            message="callback due",
        )
        await ok(
            await followup.http.post(
                f"/tickets/{ticket_id}/callbacks",
                json={"reached": True, "satisfaction": "unsatisfied"},
            )
        )
        await eventually(
            lambda: _where(dispatch.http.get(f"/tickets/{ticket_id}"), _reopened),
            message="ticket reopened",
        )
        topics = {name: settings.topic(name) for name in ("intake", "dispatch", "followup")}
        # The unsatisfied callback is two events: logged, and the ticket reopened.
        latest = {"intake": 1, "dispatch": 1, "followup": 2}
        before = {
            name: await read_topic(infra.bootstrap_servers, topic, at_least=latest[name])
            for name, topic in topics.items()
        }
        views_before = await _views(dispatch, followup, ticket_id)

        for name in topics:
            for record in before[name][-latest[name] :]:
                await redeliver(producer, record)
        expected = [
            ("dispatch", topics["intake"], "hotline.ticket.submitted.v1"),
            ("dispatch", topics["followup"], "hotline.callback.logged.v1"),
            ("dispatch", topics["followup"], "hotline.ticket.reopened.v1"),
            ("followup", topics["intake"], "hotline.ticket.submitted.v1"),
            ("followup", topics["dispatch"], "hotline.workorder.replied.v1"),
        ]
        await eventually(
            lambda: all(consumed(*key, outcome="duplicate") == 1 for key in expected),
            message="each copy seen and recognised as a duplicate",
        )
        views_after = await _views(dispatch, followup, ticket_id)
        after = {
            name: await read_topic(
                infra.bootstrap_servers, topic, at_least=len(before[name]) + latest[name]
            )
            for name, topic in topics.items()
        }
    assert views_after == views_before
    assert views_before[0]["reopen_count"] == 1
    for name in topics:
        # Only the copies we produced are new: neither service emitted anything in answer.
        assert len(after[name]) == len(before[name]) + latest[name]
        assert {headers_of(r)["ce_id"] for r in after[name]} == {
            headers_of(r)["ce_id"] for r in before[name]
        }


async def _views(dispatch, followup, ticket_id):
    return [
        (await dispatch.http.get(f"/tickets/{ticket_id}")).json(),
        (await dispatch.http.get("/work-orders")).json(),
        (await followup.http.get(f"/tickets/{ticket_id}")).json(),
        (await followup.http.get("/callbacks/due")).json(),
    ]


def _due(view):
    return view.json()["callback_due"]


def _reopened(view):
    return view.json()["reopened"]


async def test_two_sweepers_racing_announce_each_overdue_work_order_exactly_once(
    settings, infra, producer
):
    long_ago = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # a Monday: due on 2026-03-10 00:00 +08
    tickets = [submitted(at=long_ago) for _ in range(4)]
    departments = [f"部门{n}" for n in range(6)]
    # The replica's own sweeper waits; the two below race each other.
    settings = settings.model_copy(update={"sweeper_interval_seconds": 3600})
    async with AsyncExitStack() as stack:
        (dispatch,) = await start(stack, settings, "dispatch")
        await publish(producer, settings.topic("intake"), *tickets)
        for ticket in tickets:
            await eventually(lambda t=ticket: known(dispatch, t.ticket_id), message="tickets known")
        overdue = set()
        for ticket in tickets:
            for department in departments:
                order = await ok(
                    await dispatch.http.post(
                        f"/tickets/{ticket.ticket_id}/work-orders",
                        json={"department": department, "at": long_ago.isoformat()},
                    )
                )
                overdue.add(order["work_order_id"])
        replied = await ok(
            await dispatch.http.post(
                f"/tickets/{tickets[0].ticket_id}/work-orders",
                json={"department": "已回复", "at": long_ago.isoformat()},
            )
        )
        await ok(
            await (await dispatch.department("已回复")).post(
                f"/work-orders/{replied['work_order_id']}/replies",
                json={"content": "ok", "quality": "definite", "at": long_ago.isoformat()},
            )
        )
        not_due = await ok(
            await dispatch.http.post(
                f"/tickets/{tickets[0].ticket_id}/work-orders", json={"department": "新"}
            )
        )

        async def sweeper():
            swept = []
            while True:
                batch = await dispatch_commands.sweep_overdue(
                    dispatch.runtime.database.unit_of_work, now=datetime.now(UTC), limit=2
                )
                if not batch:
                    return swept
                swept.extend(batch)

        first, second = await asyncio.gather(sweeper(), sweeper())
        again = await sweeper()
        listed = (await dispatch.http.get("/work-orders", params={"status": "overdue"})).json()
        records = await read_topic(
            infra.bootstrap_servers, settings.topic("dispatch"), at_least=2 * len(overdue) + 3
        )
    announced = [
        json.loads(r.value)["work_order_id"]
        for r in records
        if headers_of(r)["ce_type"] == b"hotline.workorder.overdue.v1"
    ]
    assert sorted(announced) == sorted(overdue)  # each once, and only these
    assert not set(first) & set(second)
    assert set(first) | set(second) == overdue
    assert again == []
    assert not_due["work_order_id"] not in announced
    assert {item["work_order_id"] for item in listed["items"]} == overdue
    assert all(item["overdue"] for item in listed["items"])


async def test_work_order_rules_statuses_and_pages(settings, producer):
    now = datetime.now(UTC)
    day = timedelta(days=1)
    shenyang, dalian = submitted(at=now - 60 * day), submitted(at=now - 60 * day, city="大连")
    async with AsyncExitStack() as stack:
        (dispatch,) = await start(stack, settings, "dispatch")
        await publish(producer, settings.topic("intake"), shenyang, dalian)
        for ticket in (shenyang, dalian):
            await eventually(lambda t=ticket: known(dispatch, t.ticket_id), message="known")

        async def order(ticket, department, **body):
            path = f"/tickets/{ticket.ticket_id}/work-orders"
            return await dispatch.http.post(path, json={"department": department, **body})

        async def reply(work_order_id, department="住建局", **body):
            path = f"/work-orders/{work_order_id}/replies"
            return await (await dispatch.department(department)).post(
                path, json={"content": "已处理", "quality": "definite", **body}
            )

        overdue = await ok(await order(shenyang, "住建局", at=(now - 40 * day).isoformat()))
        open_one = await ok(await order(shenyang, "交通局", due_working_days=10))
        second_open = await order(shenyang, "交通局")
        answered = await ok(await order(dalian, "住建局", at=(now - 30 * day).isoformat()))
        too_early = await reply(answered["work_order_id"], at=(now - 31 * day).isoformat())
        first = await ok(await reply(answered["work_order_id"], at=(now - 29 * day).isoformat()))
        before_first = await reply(answered["work_order_id"], at=(now - 29.5 * day).isoformat())
        later = await ok(await reply(answered["work_order_id"], quality="partial"))
        again_same_department = await order(dalian, "住建局")
        unknown = await reply("no-such-work-order")
        future = await reply(open_one["work_order_id"], "交通局", at=(now + day).isoformat())
        naive = await reply(open_one["work_order_id"], "交通局", at="2026-03-02T09:00:00")
        bad_quality = await reply(open_one["work_order_id"], "交通局", quality="great")
        too_many_days = await order(dalian, "民政局", due_working_days=61)
        before_ticket = await order(dalian, "民政局", at=(now - 61 * day).isoformat())

        async def listed(**params):
            return (await dispatch.http.get("/work-orders", params=params)).json()["items"]

        by_status = {
            status: [w["work_order_id"] for w in await listed(status=status)]
            for status in ("unanswered", "overdue", "replied")
        }
        in_dalian = await listed(city="大连")
        at_housing = await listed(department="住建局")
        pages, cursor = [], None
        while True:
            page = (
                await dispatch.http.get(
                    "/work-orders", params={"limit": 1, **({"cursor": cursor} if cursor else {})}
                )
            ).json()
            pages.append([w["work_order_id"] for w in page["items"]])
            cursor = page["next_cursor"]
            if not cursor:
                break
        detail = (await dispatch.http.get(f"/work-orders/{answered['work_order_id']}")).json()
        bad_cursor = await dispatch.http.get("/work-orders", params={"cursor": "nope"})
        racing = await asyncio.gather(order(dalian, "公安局"), order(dalian, "公安局"))

    assert second_open.status_code == 409
    assert sorted(r.status_code for r in racing) == [201, 409]  # the unique index decides
    problem_of(second_open, 409, "open_work_order_exists")
    assert open_one["due_working_days"] == 10
    assert overdue["due_working_days"] == 5
    assert "created_at" in problem_of(too_early, 422, "invalid_time")["detail"]
    assert problem_fields(too_early) == {"body.at"}
    assert "first reply" in problem_of(before_first, 422, "invalid_time")["detail"]
    assert first["first"] is True
    assert later["first"] is False
    assert again_same_department.status_code == 201  # its earlier work order was answered
    problem_of(unknown, 404, "not_found")
    for response, field in (
        (future, "at"),
        (naive, "at"),
        (bad_quality, "quality"),
        (too_many_days, "due_working_days"),
    ):
        problem_of(response, 422, "validation_failed")
        assert f"body.{field}" in problem_fields(response)
    assert "submitted_at" in problem_of(before_ticket, 422, "invalid_time")["detail"]

    new_one = again_same_department.json()["work_order_id"]
    # Earliest due first: the 5-day new one before the 10-day open one.
    assert by_status["unanswered"] == [overdue["work_order_id"], new_one, open_one["work_order_id"]]
    assert by_status["overdue"] == [overdue["work_order_id"]]
    assert by_status["replied"] == [answered["work_order_id"]]
    assert {w["work_order_id"] for w in in_dalian} == {answered["work_order_id"], new_one}
    assert {w["department"] for w in at_housing} == {"住建局"}
    assert len(at_housing) == 3
    assert pages == [
        [overdue["work_order_id"]],
        [answered["work_order_id"]],
        [new_one],
        [open_one["work_order_id"]],
    ]
    assert detail["status"] == "replied"
    assert detail["reply_count"] == 2
    assert detail["first_reply"]["reply_id"] == first["reply_id"]
    assert [r["first"] for r in detail["replies"]] == [True, False]
    problem_of(bad_cursor, 422, "invalid_cursor")
    assert problem_fields(bad_cursor) == {"query.cursor"}


async def test_each_deadline_names_its_calendar_and_weekends_only_is_said_aloud(
    settings, producer, caplog
):
    # Test data, not an official schedule: Monday 2025-03-10 made a day off.
    settings.holiday_path().write_text('[2025]\nholidays = ["2025-03-10"]\n', encoding="utf-8")
    ticket = submitted(at=datetime(2003, 6, 1, 9, 0, tzinfo=UTC))
    cases = {
        # Friday 2003-06-06; 2003 is covered by no source: Monday 06-09 is the 1st working day.
        "weekends_only": ("2003-06-06T10:00:00+08:00", "2003-06-10T00:00:00+08:00"),
        # Friday 2025-03-07; the file's Monday off makes Tuesday 03-11 the 1st working day.
        "holiday_file": ("2025-03-07T10:00:00+08:00", "2025-03-12T00:00:00+08:00"),
        # Friday 2026-03-06 by the library: Monday 03-09.
        "chinesecalendar": ("2026-03-06T10:00:00+08:00", "2026-03-10T00:00:00+08:00"),
    }
    answers = {}
    async with AsyncExitStack() as stack:
        (dispatch,) = await start(stack, settings, "dispatch")
        await publish(producer, settings.topic("intake"), ticket)
        await eventually(lambda: known(dispatch, ticket.ticket_id), message="ticket known")
        for source, (created, _) in cases.items():
            answers[source] = await ok(
                await dispatch.http.post(
                    f"/tickets/{ticket.ticket_id}/work-orders",
                    json={"department": source, "at": created, "due_working_days": 1},
                )
            )
    for source, (_, due) in cases.items():
        assert answers[source]["calendar_source"] == source
        assert datetime.fromisoformat(answers[source]["due_at"]) == datetime.fromisoformat(due)
    assert "weekends only" in answers["weekends_only"]["calendar_note"]
    assert answers["chinesecalendar"]["calendar_note"] is None
    warnings = [
        r.work_order_id
        for r in caplog.records
        if r.levelname == "WARNING" and "weekends only" in r.getMessage()
    ]
    assert warnings == [answers["weekends_only"]["work_order_id"]]


async def test_the_callback_queue_is_right_whatever_order_events_arrive_in(settings, producer):
    base = datetime(2026, 5, 11, 9, 0, tzinfo=UTC)
    minute = timedelta(minutes=1)
    replied_first = submitted(at=base, resolved=False)  # its reply comes before the ticket
    solved = submitted(at=base + minute, resolved=True, city="大连")
    waiting = submitted(at=base + 2 * minute, resolved=False)  # no reply: not due
    reply = WorkOrderReplied(
        ticket_id=replied_first.ticket_id,
        work_order_id=new_id(),
        reply_id=new_id(),
        department="住建局",
        quality="definite",
        at=base + 10 * minute,
        first=True,
    )
    later_reply = reply.model_copy(
        update={"reply_id": new_id(), "at": base + 20 * minute, "first": False}
    )
    async with AsyncExitStack() as stack:
        (followup,) = await start(stack, settings, "followup")
        await publish(producer, settings.topic("dispatch"), reply, later_reply)
        await eventually(
            lambda: (
                consumed("followup", settings.topic("dispatch"), "hotline.workorder.replied.v1")
                == 2
            ),
            message="the replies taken before their ticket is known",
        )
        await publish(producer, settings.topic("intake"), replied_first, solved, waiting)
        for ticket in (replied_first, solved, waiting):
            await eventually(lambda t=ticket: known(followup, t.ticket_id), message="known")

        async def due(**params):
            page = (await followup.http.get("/callbacks/due", params=params)).json()
            return [item["ticket_id"] for item in page["items"]], page

        await eventually(lambda: _count(due(), 2), message="two tickets due")
        queue, _ = await due()
        first_page, page = await due(limit=1)
        second_page, _ = await due(limit=1, cursor=page["next_cursor"])
        in_dalian, _ = await due(city="大连")
        path = f"/tickets/{solved.ticket_id}/callbacks"
        not_reached = await ok(await followup.http.post(path, json={"reached": False}))
        contradiction = await followup.http.post(
            path, json={"reached": False, "satisfaction": "satisfied"}
        )
        _, after_attempt = await due(city="大连")
        declined = await ok(await followup.http.post(path, json={"reached": True}))
        queue_after, _ = await due()
        waiting_view = (await followup.http.get(f"/tickets/{waiting.ticket_id}")).json()

    # Oldest eligible first: the solved ticket since its submission, the other since its reply.
    assert queue == [solved.ticket_id, replied_first.ticket_id]
    assert first_page + second_page == queue
    assert in_dalian == [solved.ticket_id]
    assert page["items"][0]["reason"] == "resolved_at_first_contact"
    assert not_reached["satisfaction"] is None
    problem_of(contradiction, 422, "validation_failed")
    assert problem_fields(contradiction) == {"body.satisfaction"}
    assert after_attempt["items"][0]["unreached_attempts"] == 1  # still due: nobody was asked
    assert declined["satisfaction"] is None
    assert queue_after == [replied_first.ticket_id]
    assert waiting_view["callback_due"] is False
    assert waiting_view["eligible_since"] is None


async def _count(awaitable, n):
    items, _ = await awaitable
    return len(items) == n


def of_type(records, ce_type, ticket_id):
    """The data of a topic's events of one type about one ticket, in order."""
    return [data for t, data in events_of(records, ticket_id) if t == ce_type]


async def test_each_unsatisfied_reached_callback_reopens_once_and_makes_the_next_work_order_a_redo(
    settings, infra, producer
):
    event = submitted(at=datetime.now(UTC) - timedelta(hours=2), resolved=True)
    ticket_id = event.ticket_id
    reopened_on_bus = ("dispatch", settings.topic("followup"), "hotline.ticket.reopened.v1")
    async with AsyncExitStack() as stack:
        dispatch, followup = await start(stack, settings, "dispatch", "followup")
        await publish(producer, settings.topic("intake"), event)
        await eventually(lambda: known(dispatch, ticket_id), message="dispatch knows the ticket")
        await eventually(lambda: known(followup, ticket_id), message="followup knows the ticket")

        async def callback(body, idempotency_key=None):
            path = f"/tickets/{ticket_id}/callbacks"
            headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
            return await ok(await followup.http.post(path, json=body, headers=headers))

        async def order(department):
            path = f"/tickets/{ticket_id}/work-orders"
            return await ok(await dispatch.http.post(path, json={"department": department}))

        await callback({"reached": True, "satisfaction": "satisfied"})
        await callback({"reached": False})
        await callback({"reached": True, "satisfaction": None})
        before_any_reopen = await order("城管局")
        unsatisfied = {"reached": True, "satisfaction": "unsatisfied"}
        first_unsatisfied = await callback(unsatisfied, "unsatisfied-1")
        replayed = await callback(unsatisfied, "unsatisfied-1")  # a retry: done once
        await eventually(lambda: consumed(*reopened_on_bus) == 1, message="dispatch has the reopen")
        redo = await order("住建局")
        after_redo = await order("水务局")
        second_unsatisfied = await callback(unsatisfied)
        await eventually(lambda: consumed(*reopened_on_bus) == 2, message="the second reopen")
        # Two work orders created at once (as by two replicas): one takes the reopen.
        racing = await asyncio.gather(order("交通局"), order("民政局"))
        view = (await dispatch.http.get(f"/tickets/{ticket_id}")).json()
        listed = (await dispatch.http.get("/work-orders")).json()["items"]
        followed = await read_topic(infra.bootstrap_servers, settings.topic("followup"), at_least=7)
        dispatched = await read_topic(
            infra.bootstrap_servers, settings.topic("dispatch"), at_least=5
        )

    assert replayed == first_unsatisfied
    in_order = [before_any_reopen, redo, after_redo]
    assert [o["redo_round"] for o in in_order] == [0, 1, 0]
    assert sorted(o["redo_round"] for o in racing) == [0, 2]
    rounds = {o["work_order_id"]: o["redo_round"] for o in [*in_order, *racing]}
    assert {w["work_order_id"]: w["redo_round"] for w in view["work_orders"]} == rounds
    assert {w["work_order_id"]: w["redo_round"] for w in listed} == rounds
    assert view["reopen_count"] == 2  # the view derived from the callbacks agrees
    assert len(of_type(followed, "hotline.callback.logged.v1", ticket_id)) == 5
    reopens = of_type(followed, "hotline.ticket.reopened.v1", ticket_id)
    assert [r["callback_id"] for r in reopens] == [
        first_unsatisfied["callback_id"],
        second_unsatisfied["callback_id"],
    ]
    assert [datetime.fromisoformat(r["at"]) for r in reopens] == [
        datetime.fromisoformat(first_unsatisfied["at"]),
        datetime.fromisoformat(second_unsatisfied["at"]),
    ]
    logged = {
        c["callback_id"]: c for c in of_type(followed, "hotline.callback.logged.v1", ticket_id)
    }
    assert all(r["actor"] == logged[r["callback_id"]]["actor"] for r in reopens)
    assert all(r["actor"]["role"] == "callback" for r in reopens)
    created = of_type(dispatched, "hotline.workorder.created.v1", ticket_id)
    assert {c["work_order_id"]: c["redo_round"] for c in created} == rounds


async def test_the_sweeper_warns_once_of_each_work_order_due_soon_never_of_a_replied_or_late_one(
    settings, infra, producer
):
    long_ago = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # a Monday: due on 2026-03-10 00:00 +08
    due = datetime(2026, 3, 10, 0, 0, tzinfo=UTC) - SHANGHAI_OFFSET
    warned_from = due - timedelta(days=1)  # 00:00 +08 of Monday 03-09, the last working day
    monday_morning = warned_from + timedelta(hours=10)
    tickets = [submitted(at=long_ago) for _ in range(3)]
    # The replica's own sweeper warns of nothing and waits; the sweeps below are the test's.
    settings = settings.model_copy(
        update={"sweeper_interval_seconds": 3600, "due_soon_working_days": 0}
    )
    policy = DispatchPolicy(
        calendar=WorkCalendar.load(settings.holiday_path()),
        default_due_working_days=5,
        retry_after_seconds=1,
        due_soon_working_days=1,
    )
    async with AsyncExitStack() as stack:
        (dispatch,) = await start(stack, settings, "dispatch")
        await publish(producer, settings.topic("intake"), *tickets)
        for ticket in tickets:
            await eventually(lambda t=ticket: known(dispatch, t.ticket_id), message="tickets known")

        async def order(ticket, department, **body):
            path = f"/tickets/{ticket.ticket_id}/work-orders"
            body = {"department": department, "at": long_ago.isoformat(), **body}
            return (await ok(await dispatch.http.post(path, json=body)))["work_order_id"]

        due_soon = {await order(t, f"部门{n}") for t in tickets for n in range(3)}
        replied = await order(tickets[0], "已回复")
        await ok(
            await (await dispatch.department("已回复")).post(
                f"/work-orders/{replied}/replies",
                json={"content": "ok", "quality": "definite", "at": long_ago.isoformat()},
            )
        )
        later = await order(tickets[0], "十日", due_working_days=10)  # due on 03-17
        already_late = await order(tickets[1], "一日", due_working_days=1)  # due on 03-04

        def due_soon_sweep(now, lead=1, limit=100):
            lead_policy = dataclasses.replace(policy, due_soon_working_days=lead)
            return dispatch_commands.sweep_due_soon(
                dispatch.runtime.database.unit_of_work, now=now, policy=lead_policy, limit=limit
            )

        async def sweeper(now):
            return await dispatch_commands.sweep_all(
                lambda n: due_soon_sweep(now, limit=n), batch_size=2
            )

        too_early = await due_soon_sweep(warned_from - timedelta(microseconds=1))
        turned_off = await due_soon_sweep(monday_morning, lead=0)
        first, second = await asyncio.gather(sweeper(monday_morning), sweeper(monday_morning))
        again = await sweeper(monday_morning + timedelta(hours=1))
        overdue = await dispatch_commands.sweep_overdue(
            dispatch.runtime.database.unit_of_work, now=due + timedelta(hours=1)
        )
        after_deadline = await sweeper(due + timedelta(hours=1))
        created, reply = len(due_soon) + 3, 1
        records = await read_topic(
            infra.bootstrap_servers,
            settings.topic("dispatch"),
            at_least=created + reply + len(due_soon) + len(overdue),
        )
    warnings = [
        json.loads(r.value)
        for r in records
        if headers_of(r)["ce_type"] == b"hotline.workorder.due_soon.v1"
    ]
    overdue_events = [
        json.loads(r.value)["work_order_id"]
        for r in records
        if headers_of(r)["ce_type"] == b"hotline.workorder.overdue.v1"
    ]
    assert too_early == turned_off == []
    assert not set(first) & set(second)
    assert set(first) | set(second) == due_soon
    assert again == after_deadline == []
    assert sorted(w["work_order_id"] for w in warnings) == sorted(due_soon)  # each once
    assert {datetime.fromisoformat(w["due_at"]) for w in warnings} == {due}
    assert {datetime.fromisoformat(w["warned_at"]) for w in warnings} == {monday_morning}
    assert {w["department"] for w in warnings} == {f"部门{n}" for n in range(3)}
    assert replied not in overdue_events
    assert later not in overdue_events
    # Past its deadline when first swept: announced overdue, never due soon.
    assert already_late in overdue_events
    assert sorted(overdue_events) == sorted(overdue) == sorted(due_soon | {already_late})


async def test_the_running_sweeper_warns_by_the_configured_lead_time(settings, infra, producer):
    ticket = submitted(at=datetime.now(UTC) - timedelta(hours=1))
    # Two working days of lead: a work order due at the end of the next one is due soon now.
    settings = settings.model_copy(
        update={"sweeper_interval_seconds": 0.1, "due_soon_working_days": 2}
    )
    async with AsyncExitStack() as stack:
        (dispatch,) = await start(stack, settings, "dispatch")
        await publish(producer, settings.topic("intake"), ticket)
        await eventually(lambda: known(dispatch, ticket.ticket_id), message="ticket known")

        async def order(department, days):
            path = f"/tickets/{ticket.ticket_id}/work-orders"
            body = {"department": department, "due_working_days": days}
            return (await ok(await dispatch.http.post(path, json=body)))["work_order_id"]

        async def warned():
            records = await read_topic(infra.bootstrap_servers, settings.topic("dispatch"))
            return [
                json.loads(r.value)["work_order_id"]
                for r in records
                if headers_of(r)["ce_type"] == b"hotline.workorder.due_soon.v1"
            ]

        soon = await order("住建局", 1)
        not_yet = await order("水务局", 3)
        await eventually(lambda: _has(warned(), soon), message="the sweeper's warning")
        # A second one warned shows that the sweeper swept again since the first.
        soon_too = await order("交通局", 1)
        await eventually(lambda: _has(warned(), soon_too), message="the next warning")
        announced = await warned()
    assert announced == [soon, soon_too]
    assert not_yet not in announced
