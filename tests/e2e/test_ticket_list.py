"""The ticket list on metrics: each state, each filter, the search by phone number (auditors
only, the number never echoed), cursor pages and CSV (streamed whole, or one page); the
same state as each ticket's timeline; who may ask and what a bad question gets."""

from __future__ import annotations

import asyncio
import csv
import io
from datetime import UTC, datetime, timedelta

import pytest
from typer.testing import CliRunner

from hotline import metrics_api
from hotline.cli import app as cli_app
from shared.events import CallbackLogged, CallOutcome, TicketReopened, TicketSubmitted
from shared.privacy import PhoneHasher, load_or_create_key
from tests.e2e.test_ticket_timeline import published, reply, work_order
from tests.support import metrics_over_http, problem_fields, problem_of, running_service

pytestmark = [pytest.mark.e2e, pytest.mark.kafka_leg]

NOW = datetime.now(UTC).replace(microsecond=0)
T0 = NOW - timedelta(days=30)
PHONE = "13812345678"


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def ticket(ticket_id, n, *, city="沈阳", channel="phone", category="complaint", resolved=False,
           evaluator=None, phone_hash=None) -> TicketSubmitted:  # fmt: skip
    return TicketSubmitted(
        ticket_id=ticket_id,
        city=city,
        channel=channel,
        scenario="供暖",
        category=category,
        submitted_at=at(n),
        evaluator=evaluator,
        citizen_phone_hash=phone_hash,
        call=CallOutcome(answered=True, wait_seconds=5, resolved_at_first_contact=resolved),
    )


def callback(ticket_id, callback_id, satisfaction, days) -> CallbackLogged:
    return CallbackLogged(
        ticket_id=ticket_id,
        callback_id=callback_id,
        reached=True,
        satisfaction=satisfaction,
        at=T0 + timedelta(days=days),
    )


def events(phone_hash: str) -> list[tuple[str, object]]:
    """One ticket in each state; two of one citizen."""
    late, soon = T0 + timedelta(days=5), NOW + timedelta(days=3)
    return [
        ("intake", ticket("L-open", 1, evaluator="评估员甲", phone_hash=phone_hash)),
        ("intake", ticket("L-first", 2, resolved=True, channel="online", category="help")),
        ("intake", ticket("L-await", 3, city="大连")),
        ("dispatch", work_order("L-await", "L-await-W", at(4), soon)),
        ("intake", ticket("L-over", 5, city="大连", phone_hash=phone_hash)),
        ("dispatch", work_order("L-over", "L-over-W", at(6), late)),
        ("intake", ticket("L-replied", 7)),
        ("dispatch", work_order("L-replied", "L-replied-W", at(8), late)),
        ("dispatch", reply("L-replied", "L-replied-W", "R1", late - timedelta(days=1))),
        ("intake", ticket("L-reopen", 9)),
        ("dispatch", work_order("L-reopen", "L-reopen-W", at(10), late)),
        ("dispatch", reply("L-reopen", "L-reopen-W", "R2", late - timedelta(days=1))),
        ("followup", callback("L-reopen", "C1", "unsatisfied", 6)),
        ("followup", TicketReopened(ticket_id="L-reopen", callback_id="C1", at=at(60 * 24 * 6))),
        ("intake", ticket("L-closed", 11, evaluator="评估员甲")),
        ("dispatch", work_order("L-closed", "L-closed-W", at(12), late)),
        ("dispatch", reply("L-closed", "L-closed-W", "R3", late)),
        ("followup", callback("L-closed", "C2", "satisfied", 6)),
    ]  # fmt: skip


STATES = {
    "L-open": "open",
    "L-first": "closed",
    "L-await": "awaiting_reply",
    "L-over": "overdue",
    "L-replied": "replied",
    "L-reopen": "reopened",
    "L-closed": "closed",
}


async def ids(client, **params) -> list[str]:
    response = await client.get("/tickets", params=params)
    assert response.status_code == 200, response.text
    return [item["ticket_id"] for item in response.json()["items"]]


async def test_the_ticket_list_filters_pages_and_exports(settings):
    async with running_service("metrics", settings) as metrics:
        key = load_or_create_key(settings.phone_hash_key, settings.data_dir / "phone-hash.key")
        await published(settings, events(PhoneHasher(key).hash(PHONE)))
        await metrics.consumed()
        auditor = metrics.http
        page = (await auditor.get("/tickets")).json()
        assert page["total"] == len(STATES)
        assert {i["ticket_id"]: i["state"] for i in page["items"]} == STATES
        assert [i["ticket_id"] for i in page["items"]] == list(STATES)  # oldest first
        for ticket_id, state in STATES.items():  # the list and the timeline agree
            told = (await auditor.get(f"/tickets/{ticket_id}/timeline")).json()
            assert told["state"] == state, ticket_id
        for state in set(STATES.values()):
            wanted = [t for t, s in STATES.items() if s == state]
            assert await ids(auditor, state=state) == wanted

        assert await ids(auditor, city="大连") == ["L-await", "L-over"]
        assert await ids(auditor, channel="online") == ["L-first"]
        assert await ids(auditor, category="help") == ["L-first"]
        assert await ids(auditor, evaluator="评估员甲") == ["L-open", "L-closed"]
        assert await ids(auditor, department="住建局") == [
            "L-await", "L-over", "L-replied", "L-reopen", "L-closed"
        ]  # fmt: skip
        assert await ids(auditor, department="人社局") == []
        assert await ids(auditor, overdue="true") == ["L-over"]
        assert len(await ids(auditor, overdue="false")) == len(STATES) - 1
        assert await ids(auditor, reopened="true") == ["L-reopen"]
        window = {"submitted_since": at(3).isoformat(), "submitted_until": at(7).isoformat()}
        assert await ids(auditor, **window) == ["L-await", "L-over"]
        due = {"due_since": (NOW - timedelta(days=1)).isoformat()}
        assert await ids(auditor, **due) == ["L-await"]
        assert await ids(auditor, city="大连", state="overdue") == ["L-over"]

        # One citizen, however the number is written; auditors only; never echoed.
        for written in ("138-1234-5678", "+86 138 1234 5678", "(+86)13812345678"):
            assert await ids(auditor, phone=written) == ["L-open", "L-over"]
        assert await ids(auditor, phone="13900000000") == []
        operator = await metrics.as_role("operator")
        assert len(await ids(operator)) == len(STATES)  # operators may list
        problem_of(await operator.get("/tickets", params={"phone": PHONE}), 403)
        refused = await auditor.get("/tickets", params={"phone": "12345"})
        assert problem_fields(refused) == {"query.phone"}
        assert "12345" not in refused.text

        # Cursor pages: every ticket once, in order.
        seen, cursor = [], None
        while True:
            params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
            body = (await auditor.get("/tickets", params=params)).json()
            assert body["total"] == len(STATES)
            seen += [item["ticket_id"] for item in body["items"]]
            cursor = body["next_cursor"]
            if cursor is None:
                break
        assert seen == list(STATES)

        # CSV: streamed whole, by format or Accept; one page with a limit.
        whole = await auditor.get("/tickets", params={"format": "csv"})
        assert whole.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(whole.text)))
        assert [row["ticket_id"] for row in rows] == list(STATES)
        assert rows[0]["state"] == "open"
        assert rows[0]["answered"] == "true"
        assert rows[0]["reopened_at"] == ""
        accepted = await auditor.get("/tickets", headers={"Accept": "text/csv"})
        assert accepted.text == whole.text
        first = await auditor.get("/tickets", params={"format": "csv", "limit": 3})
        assert first.headers["X-Total-Count"] == str(len(STATES))
        assert len(list(csv.DictReader(io.StringIO(first.text)))) == 3
        rest = await auditor.get(
            "/tickets", params={"format": "csv", "cursor": first.headers["X-Next-Cursor"]}
        )
        assert [r["ticket_id"] for r in csv.DictReader(io.StringIO(rest.text))] == list(STATES)[3:]

        # Every rate and audit answer as CSV too.
        rates = list(csv.DictReader(io.StringIO((await auditor.get("/rates?format=csv")).text)))
        json_rates = (await auditor.get("/rates")).json()["rates"]
        assert [row["rate"] for row in rates] == list(json_rates)
        reopen = next(row for row in rates if row["rate"] == "reopen_rate")
        assert (reopen["numerator"], reopen["denominator"]) == ("1", "2")
        by_city = await auditor.get("/rates/by/city", headers={"Accept": "text/csv"})
        cities = {row["city"] for row in csv.DictReader(io.StringIO(by_city.text))}
        assert cities == {"沈阳", "大连"}
        by_week = await auditor.get("/rates/by/week", params={"format": "csv"})
        weeks = list(csv.DictReader(io.StringIO(by_week.text)))
        week_json = (await auditor.get("/rates/by/week")).json()["groups"]
        assert [(r["week"], r["rate"]) for r in weeks] == [
            (group["key"], name) for group in week_json for name in group["rates"]
        ]
        unanswered = await auditor.get("/audit/unanswered", params={"format": "csv"})
        listed = [row["work_order_id"] for row in csv.DictReader(io.StringIO(unanswered.text))]
        assert listed == ["L-over-W", "L-await-W"]
        overdue = await auditor.get("/audit/overdue/by/city", params={"format": "csv"})
        assert [row["overdue"] for row in csv.DictReader(io.StringIO(overdue.text))] == ["1"]


async def test_who_may_list_and_what_a_bad_list_question_gets(settings):
    async with running_service("metrics", settings) as metrics:
        anonymous = await metrics.as_role(None)
        problem_of(await anonymous.get("/tickets"), 401)
        for role in ("evaluator", "callback", "admin"):
            problem_of(await (await metrics.as_role(role)).get("/tickets"), 403)
        problem_of(await (await metrics.department("住建局")).get("/tickets"), 403)
        bad = [
            ({"state": "lost"}, "query.state"),
            ({"category": "gossip"}, "query.category"),
            ({"city": "沈\x00阳"}, "query.city"),
            ({"evaluator": "x" * 65}, "query.evaluator"),
            ({"submitted_since": "0001-01-01T00:00:00Z"}, "query.submitted_since"),
            ({"due_until": "9999-12-31T00:00:00Z"}, "query.due_until"),
            (
                {
                    "submitted_since": "2026-05-02T00:00:00Z",
                    "submitted_until": "2026-05-01T00:00:00Z",
                },
                "query.submitted_until",
            ),
            ({"limit": 0}, "query.limit"),
            ({"limit": 1001}, "query.limit"),
            ({"cursor": "bm90IGEgY3Vyc29y"}, "query.cursor"),
            ({"phone": "1" * 60_000}, "query.phone"),  # near the longest URL a client sends
            ({"overdue": "maybe"}, "query.overdue"),
            ({"format": "xml"}, "query.format"),
        ]
        for params, field in bad:
            response = await metrics.http.get("/tickets", params=params)
            assert response.status_code in (414, 422), (params, response.status_code)
            if response.status_code == 422:
                assert problem_fields(response) == {field}, (params, response.text[:300])


async def test_the_cli_exports_every_row_following_cursors(settings, tmp_path, monkeypatch):
    monkeypatch.setattr(metrics_api, "PAGE_ROWS", 2)  # many pages from a few rows
    async with metrics_over_http(settings) as metrics:
        key = load_or_create_key(settings.phone_hash_key, settings.data_dir / "phone-hash.key")
        await published(settings, events(PhoneHasher(key).hash(PHONE)))
        await metrics.consumed()
        url = str(metrics.http.base_url).rstrip("/")
        runner = CliRunner(env={"HOTLINE_API_KEY": metrics.http.headers["Authorization"][7:]})
        target = tmp_path / "tickets.csv"

        def cli(*args: str):
            return asyncio.to_thread(runner.invoke, cli_app, [*args, "--url", url])

        exported = await cli("tickets", "export", "-o", str(target))
        to_stdout = await cli("tickets", "export", "--city", "大连")
        reopened = await cli("tickets", "export", "--reopened")
        unanswered = await cli("audit", "unanswered", "--csv")
        whole = (await metrics.http.get("/tickets", params={"format": "csv"})).text
        whole_unanswered = (await metrics.http.get("/audit/unanswered?format=csv")).text
        denied = await asyncio.to_thread(
            CliRunner(env={"HOTLINE_API_KEY": "hk_nobody"}).invoke,
            cli_app,
            ["tickets", "export", "-o", str(tmp_path / "denied.csv"), "--url", url],
        )
    assert exported.exit_code == 0, exported.output
    assert target.read_text(encoding="utf-8") == whole  # 4 pages, one header
    assert f"{len(STATES)} tickets written" in exported.output
    assert [r["ticket_id"] for r in csv.DictReader(io.StringIO(to_stdout.stdout))] == [
        "L-await",
        "L-over",
    ]
    assert [r["ticket_id"] for r in csv.DictReader(io.StringIO(reopened.stdout))] == ["L-reopen"]
    assert unanswered.stdout == whole_unanswered
    assert denied.exit_code == 1
    assert "401" in denied.output
    assert list(tmp_path.iterdir()) == [target]  # the failed export left nothing behind
