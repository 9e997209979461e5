"""A ticket's timeline on metrics, from events published straight to the three topics out of
order (a reply before its work order, the reopen before the ticket): every event in the
order it happened with the key that caused it, each deadline and whether it was met, the
state now and at earlier moments; who may read it; absurd events and paths.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
from datetime import UTC, datetime, time, timedelta

import pytest
from aiokafka import AIOKafkaProducer
from typer.testing import CliRunner

from hotline.cli import app as cli_app
from services.metrics.rebuild import Rebuild
from shared.events import (
    Actor,
    CallbackLogged,
    CallOutcome,
    TicketReopened,
    TicketSubmitted,
    WorkOrderCreated,
    WorkOrderDueSoon,
    WorkOrderOverdue,
    WorkOrderReplied,
)
from shared.kafka import connection_options, dlq_topic, ensure_topics
from shared.workdays import SHANGHAI, local_day
from tests.support import (
    headers_of,
    metrics_over_http,
    problem_fields,
    problem_of,
    publish,
    read_topic,
    running_service,
)

pytestmark = [pytest.mark.e2e, pytest.mark.kafka_leg]

NOW = datetime.now(UTC).replace(microsecond=0)
T0 = NOW - timedelta(days=20)
EVALUATOR = Actor(key_id="k-eval", role="evaluator")
OPERATOR = Actor(key_id="k-op", role="operator")
DESK = Actor(key_id="k-desk", role="department", department="住建局")
CALLER = Actor(key_id="k-cb", role="callback")


def submitted(ticket_id: str, **extra) -> TicketSubmitted:
    return TicketSubmitted(
        ticket_id=ticket_id,
        city="沈阳",
        channel="phone",
        scenario="供暖",
        category="complaint",
        submitted_at=T0,
        call=CallOutcome(answered=True, wait_seconds=8, resolved_at_first_contact=False),
        actor=EVALUATOR,
        **extra,
    )


def work_order(ticket_id, work_order_id, created, due, redo_round=0) -> WorkOrderCreated:
    return WorkOrderCreated(
        ticket_id=ticket_id,
        work_order_id=work_order_id,
        department="住建局",
        created_at=created,
        due_at=due,
        due_working_days=5,
        calendar_source="chinesecalendar",
        redo_round=redo_round,
        actor=OPERATOR,
    )


def reply(ticket_id, work_order_id, reply_id, at, *, first=True) -> WorkOrderReplied:
    return WorkOrderReplied(
        ticket_id=ticket_id,
        work_order_id=work_order_id,
        reply_id=reply_id,
        department="住建局",
        quality="definite",
        at=at,
        first=first,
        actor=DESK,
    )


def day(days: float) -> datetime:
    return T0 + timedelta(days=days)


def story_of(ticket_id: str) -> list[tuple[str, object]]:
    """A first work order replied late, an unsatisfied callback that reopens the ticket, a
    redo work order still unanswered and past due. Published in this (scrambled) order."""
    w1, w2, desk = f"{ticket_id}-W1", f"{ticket_id}-W2", "住建局"
    reopened = TicketReopened(ticket_id=ticket_id, callback_id="C1", at=day(9), actor=CALLER)
    due_soon = WorkOrderDueSoon(
        ticket_id=ticket_id, work_order_id=w1, department=desk, due_at=day(7), warned_at=day(6)
    )
    unsatisfied = CallbackLogged(
        ticket_id=ticket_id,
        callback_id="C1",
        reached=True,
        satisfaction="unsatisfied",
        at=day(9),
        actor=CALLER,
    )
    overdue = WorkOrderOverdue(
        ticket_id=ticket_id, work_order_id=w2, department=desk, due_at=day(15), detected_at=day(16)
    )
    return [
        ("followup", reopened),
        ("dispatch", reply(ticket_id, w1, "R1", day(8))),
        ("intake", submitted(ticket_id)),
        ("dispatch", work_order(ticket_id, w1, day(0.04), day(7))),
        ("dispatch", due_soon),
        ("dispatch", reply(ticket_id, w1, "R2", day(8.1), first=False)),
        ("followup", unsatisfied),
        ("dispatch", work_order(ticket_id, w2, day(10), day(15), redo_round=1)),
        ("dispatch", overdue),
    ]


async def published(settings, events) -> None:
    await ensure_topics(settings)
    producer = AIOKafkaProducer(**connection_options(settings))
    await producer.start()
    try:
        for owner, event in events:
            await publish(producer, settings.topic(owner), event)
    finally:
        await producer.stop()


async def timeline(metrics, ticket_id: str, **params) -> dict:
    response = await metrics.http.get(f"/tickets/{ticket_id}/timeline", params=params)
    assert response.status_code == 200, response.text
    return response.json()


async def test_the_timeline_tells_the_whole_story_in_order_with_deadlines_and_state(settings):
    await published(settings, story_of("TL-1"))
    async with metrics_over_http(settings) as metrics:
        await metrics.consumed()
        told = await timeline(metrics, "TL-1")
        url = str(metrics.http.base_url).rstrip("/")
        runner = CliRunner(env={"HOTLINE_API_KEY": metrics.http.headers["Authorization"][7:]})
        shown = await asyncio.to_thread(
            runner.invoke, cli_app, ["ticket", "show", "TL-1", "--url", url]
        )
        as_json = await asyncio.to_thread(
            runner.invoke, cli_app, ["ticket", "show", "TL-1", "--url", url, "--json"]
        )
        missing = await asyncio.to_thread(
            runner.invoke, cli_app, ["ticket", "show", "no/such", "--url", url]
        )
        denied = await asyncio.to_thread(
            CliRunner(env={"HOTLINE_API_KEY": "hk_wrong"}).invoke,
            cli_app,
            ["ticket", "show", "TL-1", "--url", url],
        )
        assert [event["type"].split(".")[1:3] for event in told["events"]] == [
            ["ticket", "submitted"],
            ["workorder", "created"],
            ["workorder", "due_soon"],
            ["workorder", "replied"],
            ["workorder", "replied"],
            ["callback", "logged"],
            ["ticket", "reopened"],
            ["workorder", "created"],
            ["workorder", "overdue"],
        ]
        actors = [event["actor"] for event in told["events"]]
        assert actors[0] == {"key_id": "k-eval", "role": "evaluator", "department": None}
        assert actors[3] == {"key_id": "k-desk", "role": "department", "department": "住建局"}
        assert actors[2] is None  # the sweeper did it by itself
        assert told["events"][0]["changes"]["city"] == "沈阳"
        assert told["events"][4]["changes"]["first"] is False
        first, redo = told["deadlines"]
        assert (first["work_order_id"], first["met"], first["redo_round"]) == ("TL-1-W1", False, 0)
        assert first["first_reply_at"] == (T0 + timedelta(days=8)).isoformat().replace(
            "+00:00", "Z"
        )
        assert first["due_soon_warned_at"] is not None
        assert (redo["work_order_id"], redo["met"], redo["redo_round"]) == ("TL-1-W2", False, 1)
        assert redo["overdue_announced_at"] is not None
        assert told["state"] == "overdue"
        as_csv = await metrics.http.get("/tickets/TL-1/timeline", params={"format": "csv"})
        lines = list(csv.DictReader(io.StringIO(as_csv.text)))
        assert [row["type"] for row in lines] == [event["type"] for event in told["events"]]
        assert json.loads(lines[0]["changes"])["city"] == "沈阳"
        assert lines[3]["actor_department"] == "住建局"
        assert shown.exit_code == 0, shown.output
        assert "Ticket TL-1: overdue" in shown.output
        assert "workorder.due_soon.v1" in shown.output
        assert "missed" in shown.output
        assert "department 住建局 (k-desk)" in shown.output
        assert json.loads(as_json.output)["state"] == "overdue"
        assert missing.exit_code == 1
        assert "404" in missing.output
        assert denied.exit_code == 1
        assert "401" in denied.output

        # The same story as it stood at earlier moments.
        states = {}
        for days in (0.5, 2, 8.5, 9.5, 12):
            states[days] = (await timeline(metrics, "TL-1", as_of=day(days).isoformat()))["state"]
        assert states == {
            0.5: "awaiting_reply",
            2: "awaiting_reply",
            8.5: "replied",
            9.5: "reopened",
            12: "awaiting_reply",
        }
        before = await timeline(
            metrics, "TL-1", as_of=(T0 + timedelta(days=6, hours=1)).isoformat()
        )
        assert before["deadlines"][0]["met"] is None  # not yet due then
        assert len(before["events"]) == 3


async def test_who_may_read_a_timeline_and_what_a_bad_path_gets(settings):
    await published(settings, [("intake", submitted("TL-2"))])
    async with running_service("metrics", settings) as metrics:
        await metrics.consumed()
        assert (await timeline(metrics, "TL-2"))["state"] == "open"
        anonymous = await metrics.as_role(None)
        problem_of(await anonymous.get("/tickets/TL-2/timeline"), 401)
        for role in ("evaluator", "operator", "callback", "admin"):
            client = await metrics.as_role(role)
            problem_of(await client.get("/tickets/TL-2/timeline"), 403)
        desk = await metrics.department("住建局")
        problem_of(await desk.get("/tickets/TL-2/timeline"), 403)
        problem_of(await metrics.http.get("/tickets/nobody/timeline"), 404)
        for bad in ("TL%002", "x" * 65):
            problem_of(await metrics.http.get(f"/tickets/{bad}/timeline"), 422)
        for as_of in ("0001-01-01T00:00:00Z", "yesterday", "2026-01-01T00:00:00"):
            response = await metrics.http.get("/tickets/TL-2/timeline", params={"as_of": as_of})
            problem_of(response, 422)


async def test_absurd_events_are_dead_lettered_and_never_half_kept(settings):
    """An event too large for the history, or with a NUL the database cannot store, is
    dead-lettered whole: neither its facts nor its history are kept, and the rest of its
    batch is."""
    huge = submitted("TL-huge", evaluator="评" * 20_000)  # data of ~60 KB
    nul = TicketReopened(ticket_id="TL-3", callback_id="C\x00", at=T0 + timedelta(days=1))
    await published(
        settings,
        [("intake", submitted("TL-3")), ("intake", huge), ("followup", nul)],
    )
    async with running_service("metrics", settings) as metrics:
        await metrics.consumed()
        told = await timeline(metrics, "TL-3")
        assert [event["type"] for event in told["events"]] == ["hotline.ticket.submitted.v1"]
        problem_of(await metrics.http.get("/tickets/TL-huge/timeline"), 404)
        rates = (await metrics.http.get("/rates")).json()["rates"]
        assert rates["first_contact_resolution_rate"]["denominator"] == 1  # TL-3 only
        letters = await read_topic(
            settings.kafka_bootstrap_servers, dlq_topic(settings.topic("intake")), at_least=1
        )
        reasons = [headers_of(letter).get("dlq_reason", b"").decode() for letter in letters]
        assert any("larger than 16384 bytes" in reason for reason in reasons), reasons
        letters = await read_topic(
            settings.kafka_bootstrap_servers, dlq_topic(settings.topic("followup")), at_least=1
        )
        assert len(letters) == 1


async def test_the_rebuild_makes_the_history_again(settings):
    await published(settings, story_of("TL-4"))
    async with running_service("metrics", settings) as metrics:
        await metrics.consumed()
        before = await timeline(metrics, "TL-4")
        report = await Rebuild(settings).run(lambda done, total: None)
        assert report.applied == len(story_of("TL-4"))
        after = await timeline(metrics, "TL-4")
    assert {k: v for k, v in after.items() if k != "as_of"} == {
        k: v for k, v in before.items() if k != "as_of"
    }


async def test_the_unanswered_audit_as_of_a_past_day_gives_that_days_answer(settings):
    """Work orders A (replied late, on day 5), B (never replied) and C (created on day 6), all
    of one ticket: at the end of day 4, A and B were unanswered and A overdue; at the end of
    day 7, B and C; now, B and C, both overdue."""
    first = local_day(NOW) - timedelta(days=20)

    def local(days: int, hour: int = 10) -> datetime:
        return datetime.combine(first + timedelta(days=days), time(hour), tzinfo=SHANGHAI)

    events = [
        ("intake", submitted("AS-1")),
        ("dispatch", work_order("AS-1", "AS-A", local(1), local(3))),
        ("dispatch", reply("AS-1", "AS-A", "AS-RA", local(5))),
        ("dispatch", work_order("AS-1", "AS-B", local(2), local(9))),
        ("dispatch", work_order("AS-1", "AS-C", local(6), local(12))),
    ]
    await published(settings, events)
    async with running_service("metrics", settings) as metrics:
        await metrics.consumed()

        async def unanswered(**params) -> list[tuple[str, bool]]:
            response = await metrics.http.get("/audit/unanswered", params=params)
            assert response.status_code == 200, response.text
            return [(item["work_order_id"], item["overdue"]) for item in response.json()["items"]]

        day = {n: (first + timedelta(days=n)).isoformat() for n in (0, 4, 7)}
        assert await unanswered(as_of=day[0]) == []
        assert await unanswered(as_of=day[4]) == [("AS-A", True), ("AS-B", False)]
        assert await unanswered(as_of=day[7]) == [("AS-B", False), ("AS-C", False)]
        assert await unanswered() == [("AS-B", True), ("AS-C", True)]
        assert await unanswered(as_of=day[4], overdue_only="true") == [("AS-A", True)]
        csv_text = (
            await metrics.http.get("/audit/unanswered", params={"as_of": day[4], "format": "csv"})
        ).text
        assert [row.split(",")[0] for row in csv_text.splitlines()[1:]] == ["AS-A", "AS-B"]
        tomorrow = (local_day(datetime.now(UTC)) + timedelta(days=1)).isoformat()
        for bad in ("0001-01-01", "1999-12-31", tomorrow, "9999-12-31", "yesterday", "2026-02-30"):
            response = await metrics.http.get("/audit/unanswered", params={"as_of": bad})
            assert response.status_code == 422, (bad, response.text)
            assert problem_fields(response) == {"query.as_of"}, (bad, response.text)
