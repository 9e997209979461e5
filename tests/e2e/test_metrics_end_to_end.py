"""Metrics end to end: tickets driven through the intake, dispatch and followup APIs with
back-dated times, then `/rates`, `/rates/by/city` and `/audit/unanswered` compared with the
values worked out by hand. The metrics service is stopped halfway and a new one started
with the same settings (meanwhile the other services keep publishing): the totals are still
exact. The new one serves real HTTP on a port, so the `hotline audit` CLI is run against it.
"""

from __future__ import annotations

import asyncio
import csv
import io
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta

import pytest
from typer.testing import CliRunner

from hotline.cli import app as cli_app
from shared.workdays import WorkCalendar, working_days_between
from tests.support import eventually, metrics_over_http, running_service

pytestmark = pytest.mark.e2e

NOW = datetime.now(UTC).replace(microsecond=0)
D = NOW - timedelta(days=20)  # when the scripted tickets were submitted


def call(answered=True, wait=None, resolved=False):
    return {"answered": answered, "wait_seconds": wait, "resolved_at_first_contact": resolved}


def ticket(city, channel, scenario, minutes, **outcome):
    return {
        "city": city,
        "channel": channel,
        "scenario": scenario,
        "category": "help",
        "content": "小区路灯坏了",
        "submitted_at": (D + timedelta(minutes=minutes)).isoformat(),
        "call": call(**outcome),
    }


async def created(response):
    assert response.status_code == 201, response.text
    return response.json()


async def until_known(post):
    """POST to dispatch or followup, retrying while the ticket's event is on its way (409)."""

    async def attempt():
        response = await post()
        if response.status_code == 409 and "Retry-After" in response.headers:
            return None
        return response

    return await created(await eventually(attempt, message="ticket known downstream"))


class Script:
    """The scripted tickets and what happened to them, through the public APIs."""

    def __init__(self, intake, dispatch, followup):
        self.intake, self.dispatch, self.followup = intake, dispatch, followup
        self.work_orders: dict[str, dict] = {}

    async def submit(self, body):
        return (await created(await self.intake.http.post("/tickets", json=body)))["ticket_id"]

    async def transfer(self, ticket_id, department, mode, connected):
        body = {"department": department, "mode": mode, "connected": connected}
        body["at"] = (D + timedelta(minutes=30)).isoformat()
        path = f"/tickets/{ticket_id}/transfers"
        await until_known(lambda: self.dispatch.http.post(path, json=body))

    async def work_order(self, name, ticket_id, department, *, back_dated=True):
        body = {"department": department}
        if back_dated:
            body["at"] = (D + timedelta(hours=1)).isoformat()
        path = f"/tickets/{ticket_id}/work-orders"
        self.work_orders[name] = await until_known(lambda: self.dispatch.http.post(path, json=body))
        return self.work_orders[name]

    async def reply(self, name, quality, late_by=timedelta(0)):
        work_order = self.work_orders[name]
        at = datetime.fromisoformat(work_order["due_at"]) + late_by
        body = {"content": "已处理", "quality": quality, "at": at.isoformat()}
        path = f"/work-orders/{work_order['work_order_id']}/replies"
        desk = await self.dispatch.department(work_order["department"])
        await created(await desk.post(path, json=body))

    async def callback(self, ticket_id, reached, satisfaction=None):
        body = {"reached": reached, "satisfaction": satisfaction}
        body["at"] = (NOW - timedelta(days=1)).isoformat()
        path = f"/tickets/{ticket_id}/callbacks"
        await until_known(lambda: self.followup.http.post(path, json=body))

    async def first_half(self):
        """Shenyang T1, T2 and Dalian T3."""
        t1 = await self.submit(ticket("沈阳", "phone", "供暖", 1, wait=8))
        t2 = await self.submit(ticket("沈阳", "phone", "社保", 2, wait=20, resolved=True))
        t3 = await self.submit(ticket("大连", "online", "供暖", 3))
        await self.transfer(t1, "住建局", "transfer", connected=False)
        await self.work_order("a", t1, "住建局")
        await self.reply("a", "definite")  # exactly at due_at: on time
        await self.callback(t1, reached=True, satisfaction="satisfied")
        await self.callback(t2, reached=True, satisfaction="basically_satisfied")
        await self.transfer(t3, "人社局", "three_way", connected=True)
        await self.work_order("b", t3, "人社局")  # never answered: overdue
        return 3

    async def second_half(self):
        """Dalian T4 and Shenyang T5, while metrics is down."""
        t4 = await self.submit(ticket("大连", "phone", "社保", 4, answered=False))
        t5 = await self.submit(ticket("沈阳", "online", "社保", 5))
        await self.callback(t4, reached=False)
        await self.work_order("c", t5, "住建局")
        await self.reply("c", "partial", late_by=timedelta(days=1))
        await self.callback(t5, reached=True, satisfaction="unsatisfied")  # reopens T5 (重办)
        await self.work_order("d", t5, "人社局", back_dated=False)  # due in days: not yet due
        return 5


def rate(value, numerator, denominator):
    return {"value": value, "numerator": numerator, "denominator": denominator}


NULL = rate(None, 0, 0)
AFTER_FIRST_HALF = {  # T1, T2, T3
    "connection_rate": rate(1.0, 2, 2),
    "avg_wait_seconds": rate(14.0, 28.0, 2),
    "answered_within_15s_rate": rate(0.5, 1, 2),
    "first_contact_resolution_rate": rate(1 / 3, 1, 3),
    "transfer_failure_rate": rate(1.0, 1, 1),
    "three_way_failure_rate": rate(0.0, 0, 1),
    "unanswered_rate": rate(0.5, 1, 2),
    "reply_timeliness_rate": rate(0.5, 1, 2),
    "definite_reply_rate": rate(1.0, 1, 1),
    "callback_rate": rate(1.0, 2, 2),
    "satisfaction_rate": rate(1.0, 2, 2),
    "reopen_rate": rate(0.0, 0, 2),
}
EXPECTED = {  # T1..T5
    "connection_rate": rate(2 / 3, 2, 3),
    "avg_wait_seconds": rate(14.0, 28.0, 2),
    "answered_within_15s_rate": rate(0.5, 1, 2),
    "first_contact_resolution_rate": rate(0.25, 1, 4),
    "transfer_failure_rate": rate(1.0, 1, 1),
    "three_way_failure_rate": rate(0.0, 0, 1),
    "unanswered_rate": rate(0.5, 2, 4),
    "reply_timeliness_rate": rate(1 / 3, 1, 3),
    "definite_reply_rate": rate(0.5, 1, 2),
    "callback_rate": rate(1.0, 3, 3),
    "satisfaction_rate": rate(2 / 3, 2, 3),
    "reopen_rate": rate(1 / 3, 1, 3),
}
EXPECTED_BY_CITY = {
    "大连": {  # T3 (online), T4 (phone, unanswered)
        "connection_rate": rate(0.0, 0, 1),
        "avg_wait_seconds": NULL,
        "answered_within_15s_rate": NULL,
        "first_contact_resolution_rate": rate(0.0, 0, 1),
        "transfer_failure_rate": NULL,
        "three_way_failure_rate": rate(0.0, 0, 1),
        "unanswered_rate": rate(1.0, 1, 1),
        "reply_timeliness_rate": rate(0.0, 0, 1),
        "definite_reply_rate": NULL,
        "callback_rate": NULL,
        "satisfaction_rate": NULL,
        "reopen_rate": NULL,
    },
    "沈阳": {  # T1, T2 (phone), T5 (online)
        "connection_rate": rate(1.0, 2, 2),
        "avg_wait_seconds": rate(14.0, 28.0, 2),
        "answered_within_15s_rate": rate(0.5, 1, 2),
        "first_contact_resolution_rate": rate(1 / 3, 1, 3),
        "transfer_failure_rate": rate(1.0, 1, 1),
        "three_way_failure_rate": NULL,
        "unanswered_rate": rate(1 / 3, 1, 3),
        "reply_timeliness_rate": rate(0.5, 1, 2),
        "definite_reply_rate": rate(0.5, 1, 2),
        "callback_rate": rate(1.0, 3, 3),
        "satisfaction_rate": rate(2 / 3, 2, 3),
        "reopen_rate": rate(1 / 3, 1, 3),
    },
}


def assert_rates(actual, expected):
    for name, want in expected.items():
        got = actual[name]
        assert got["denominator"] == want["denominator"], name
        assert got["numerator"] == pytest.approx(want["numerator"]), name
        if want["value"] is None:
            assert got["value"] is None, name
        else:
            assert got["value"] == pytest.approx(want["value"]), name


def matches(actual, expected):
    try:
        assert_rates(actual, expected)
    except AssertionError:
        return False
    return True


async def rates_once(http, expected):
    """The rates once they match `expected` (the events cross three topics meanwhile); on a
    timeout, which rate differs. Nothing in the script lowers a count, so a double count
    could never come to match."""

    async def check():
        rates = (await http.get("/rates")).json()["rates"]
        return rates if matches(rates, expected) else None

    try:
        return await eventually(check, timeout=30, message="the expected rates")
    except AssertionError:
        assert_rates((await http.get("/rates")).json()["rates"], expected)  # says which differs
        raise


async def test_scripted_tickets_give_the_hand_worked_rates_across_a_metrics_restart(settings):
    async with AsyncExitStack() as stack:
        services = [
            await stack.enter_async_context(running_service(name, settings, wait_for_broker=False))
            for name in ("intake", "dispatch", "followup")
        ]
        for service in services:
            await eventually(service.runtime.broker_connected.is_set, message="on the broker")
        script = Script(*services)

        async with running_service("metrics", settings) as metrics:
            await script.first_half()
            halfway = await rates_once(metrics.http, AFTER_FIRST_HALF)

        await script.second_half()  # metrics is down: its events wait on the topics

        async with metrics_over_http(settings) as metrics:
            http = metrics.http
            await rates_once(http, EXPECTED)
            await metrics.consumed()
            rates = (await http.get("/rates")).json()["rates"]  # and nothing more came in
            by_city = (await http.get("/rates/by/city")).json()
            audit = (await http.get("/audit/unanswered")).json()
            ages = [
                working_days_between(
                    datetime.fromisoformat(script.work_orders[name]["created_at"]),
                    datetime.now(UTC),
                    WorkCalendar.load(settings.holiday_path()),
                )
                for name in ("b", "d")
            ]
            overdue_csv = (
                await http.get("/audit/unanswered", params={"overdue_only": True, "format": "csv"})
            ).text
            url = str(http.base_url).rstrip("/")
            runner = CliRunner(env={"HOTLINE_API_KEY": http.headers["Authorization"][7:]})
            table = await asyncio.to_thread(
                runner.invoke, cli_app, ["audit", "unanswered", "--url", url]
            )
            cli_csv = await asyncio.to_thread(
                runner.invoke,
                cli_app,
                ["audit", "unanswered", "--url", url, "--overdue-only", "--csv", "--city", "大连"],
            )

    assert_rates(halfway, AFTER_FIRST_HALF)
    assert_rates(rates, EXPECTED)
    assert [group["key"] for group in by_city["groups"]] == ["大连", "沈阳"]
    for group in by_city["groups"]:
        assert_rates(group["rates"], EXPECTED_BY_CITY[group["key"]])

    b, d = script.work_orders["b"], script.work_orders["d"]
    assert audit["total"] == 2
    assert [item["work_order_id"] for item in audit["items"]] == [
        b["work_order_id"],
        d["work_order_id"],
    ]
    first, second = audit["items"]
    assert (first["city"], first["department"], first["overdue"]) == ("大连", "人社局", True)
    assert (second["city"], second["department"], second["overdue"]) == ("沈阳", "人社局", False)
    assert [first["age_working_days"], second["age_working_days"]] == ages
    assert ages[0] >= 5  # created 20 calendar days ago
    assert ages[1] == 0  # created just now
    rows = list(csv.DictReader(io.StringIO(overdue_csv)))
    assert [row["work_order_id"] for row in rows] == [b["work_order_id"]]

    assert table.exit_code == 0, table.output
    assert b["work_order_id"][:8] in table.output
    assert "2 of 2 shown" in table.output
    assert cli_csv.exit_code == 0, cli_csv.output
    assert [row["work_order_id"] for row in csv.DictReader(io.StringIO(cli_csv.output))] == [
        b["work_order_id"]
    ]
