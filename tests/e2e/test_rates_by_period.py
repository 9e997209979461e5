"""GET /rates/by/day|week|month against the real broker and database: events published to
the topics, then every period group compared with `/rates` over that group's window (the
period, cut by since and until), with and without filters; bad input; the cap on groups.
"""

from __future__ import annotations

import asyncio
from datetime import date, datetime, timedelta

import pytest
from aiokafka import AIOKafkaProducer

from shared.workdays import SHANGHAI
from tests.e2e.test_metrics_out_of_order import (
    Publisher,
    _equals,
    callback,
    processed_count,
    reply,
    ticket,
    transfer,
    work_order,
)
from tests.support import eventually, problem_fields, problem_of, record_of, running_service

pytestmark = [pytest.mark.e2e, pytest.mark.kafka_leg]

HOUSING, SOCIAL = "住建局", "人社局"
NEVER_DUE = datetime(2099, 1, 1, tzinfo=SHANGHAI)
"""The deadline of work orders still awaiting a reply whenever the test runs."""


def local(text: str) -> datetime:
    """A time in Shanghai, e.g. "2026-03-31 23:30"."""
    return datetime.fromisoformat(text).replace(tzinfo=SHANGHAI)


# Around the turn of February, March and April 2026; 2 March is a Monday.
SUBMITTED = {
    "P01": ("沈阳", "phone", local("2026-02-27 09:00")),
    "P02": ("大连", "online", local("2026-02-27 15:00")),
    "P03": ("沈阳", "phone", local("2026-02-28 10:00")),
    "P04": ("沈阳", "phone", local("2026-03-01 08:00")),
    "P05": ("大连", "phone", local("2026-03-02 11:00")),
    "P06": ("沈阳", "online", local("2026-03-10 14:00")),
    "P07": ("沈阳", "phone", local("2026-03-31 23:30")),
    "P08": ("大连", "phone", local("2026-04-01 01:00")),  # 2026-03-31T17:00Z
    "P09": ("沈阳", "online", local("2026-04-02 05:00")),
    "P10": ("沈阳", "phone", local("2026-04-02 07:00")),
    "P11": ("大连", "phone", local("2026-04-13 10:00")),
}
TICKETS = [
    ticket("P01", *SUBMITTED["P01"][:2], "社保查询", SUBMITTED["P01"][2], wait=10, resolved=True),
    ticket("P02", *SUBMITTED["P02"][:2], "户籍办理", SUBMITTED["P02"][2]),
    ticket("P03", *SUBMITTED["P03"][:2], "社保查询", SUBMITTED["P03"][2], wait=20),
    ticket("P04", *SUBMITTED["P04"][:2], "社保查询", SUBMITTED["P04"][2], answered=False),
    ticket("P05", *SUBMITTED["P05"][:2], "供暖", SUBMITTED["P05"][2], wait=5, resolved=True),
    ticket("P06", *SUBMITTED["P06"][:2], "供暖", SUBMITTED["P06"][2]),
    ticket("P07", *SUBMITTED["P07"][:2], "户籍办理", SUBMITTED["P07"][2], wait=14),
    ticket("P08", *SUBMITTED["P08"][:2], "供暖", SUBMITTED["P08"][2], wait=30),
    ticket("P09", *SUBMITTED["P09"][:2], "社保查询", SUBMITTED["P09"][2], resolved=True),
    ticket("P10", *SUBMITTED["P10"][:2], "社保查询", SUBMITTED["P10"][2], wait=3),
    ticket("P11", *SUBMITTED["P11"][:2], "供暖", SUBMITTED["P11"][2], answered=False),
]


def _created(ticket_id: str) -> datetime:
    return SUBMITTED[ticket_id][2] + timedelta(hours=1)


DISPATCH = [
    work_order("P02", "PW2", HOUSING, _created("P02"), local("2026-03-06 00:00")),
    reply("P02", "PW2", "PR2", HOUSING, local("2026-03-02 10:00"), "definite"),
    transfer("P02", "PX2", HOUSING, "transfer", connected=False),
    work_order("P05", "PW5", SOCIAL, _created("P05"), local("2026-03-09 00:00")),  # overdue
    work_order("P06", "PW6", HOUSING, _created("P06"), NEVER_DUE),  # awaiting a reply
    transfer("P06", "PX6", SOCIAL, "three_way", connected=True),
    work_order("P07", "PW7", HOUSING, _created("P07"), local("2026-04-08 00:00")),
    reply("P07", "PW7", "PR7", HOUSING, local("2026-04-09 09:00"), "partial"),  # late
    work_order("P08", "PW8", SOCIAL, _created("P08"), NEVER_DUE),  # awaiting a reply
    transfer("P08", "PX8", HOUSING, "transfer", connected=True),
    work_order("P09", "PW9", HOUSING, _created("P09"), local("2026-04-10 00:00")),
    reply("P09", "PW9", "PR9", HOUSING, local("2026-04-03 09:00"), "definite"),
    work_order("P11", "PW11", SOCIAL, _created("P11"), local("2026-04-20 00:00")),  # overdue
]
FOLLOWUP = [
    callback("P01", "PC1", reached=True, satisfaction="satisfied"),
    callback("P03", "PC3", reached=True, satisfaction="unsatisfied"),
    callback("P05", "PC5", reached=False),
]

WINDOW = (local("2026-02-27 12:00"), local("2026-04-02 06:00"))
"""Cut inside a day at both ends, holding the whole of March: month cells, day cells and
raw partial days, and partial first and last weeks and months."""
WINDOWS = [
    (None, None),
    WINDOW,
    # Less than a day, across midnight at the end of March: raw facts of two days only.
    (local("2026-03-31 23:00"), local("2026-04-01 02:00")),
    (local("2026-03-10 00:00"), None),
    (None, local("2026-03-02 11:00")),  # P05 exactly at until: left out
]
FILTERS = [
    {},
    {"department": HOUSING},
    {"department": SOCIAL, "city": "大连"},
    {"city": "沈阳", "channel": "phone"},
]


def following(period: str, start: date) -> date:
    """The first day of the period after the one starting at `start` (worked out here, not
    with the code under test)."""
    if period == "day":
        return start + timedelta(days=1)
    if period == "week":
        return start + timedelta(weeks=1)
    return date(start.year + start.month // 12, start.month % 12 + 1, 1)


def first_day(period: str, day: date) -> date:
    if period == "day":
        return day
    if period == "week":
        return day - timedelta(days=day.weekday())
    return day.replace(day=1)


def expected_keys(period, since, until, filters):
    """The first days of the periods that hold a ticket of the selection."""
    keys = set()
    for city, channel, submitted in SUBMITTED.values():
        if filters.get("city", city) != city or filters.get("channel", channel) != channel:
            continue
        if (since is None or since <= submitted) and (until is None or submitted < until):
            keys.add(first_day(period, submitted.date()).isoformat())
    return sorted(keys)


def group_params(period, key, since, until, filters):
    """The /rates query of one group: its period, cut by the window."""
    start = date.fromisoformat(key)
    begin = datetime.combine(start, datetime.min.time(), SHANGHAI)
    end = datetime.combine(following(period, start), datetime.min.time(), SHANGHAI)
    begin = begin if since is None else max(begin, since)
    end = end if until is None else min(end, until)
    return {**filters, "since": begin.isoformat(), "until": end.isoformat()}


def window_params(since, until, filters):
    params = dict(filters)
    if since is not None:
        params["since"] = since.isoformat()
    if until is not None:
        params["until"] = until.isoformat()
    return params


async def test_every_period_group_equals_rates_over_its_window(settings, infra):
    async with running_service("metrics", settings) as metrics:
        producer = AIOKafkaProducer(bootstrap_servers=infra.bootstrap_servers)
        await producer.start()
        try:
            publisher = Publisher(producer, settings)
            for owner, events in (("intake", TICKETS), ("dispatch", DISPATCH)):
                for event in events:
                    await publisher.send(owner, event)
            for event in FOLLOWUP:
                await publisher.send("followup", event)
            await eventually(
                lambda: _equals(processed_count(metrics), len(publisher.event_ids)),
                message="every event applied",
            )
        finally:
            await producer.stop()

        compared = 0
        answers = {}
        for period in ("day", "week", "month"):
            for since, until in WINDOWS:
                for filters in FILTERS:
                    params = window_params(since, until, filters)
                    response = await metrics.http.get(f"/rates/by/{period}", params=params)
                    assert response.status_code == 200, response.text
                    body = response.json()
                    assert body["by"] == period
                    keys = [group["key"] for group in body["groups"]]
                    assert keys == expected_keys(period, since, until, filters), params
                    for group in body["groups"]:
                        query = group_params(period, group["key"], since, until, filters)
                        alone = (await metrics.http.get("/rates", params=query)).json()
                        assert group["rates"] == alone["rates"], (period, query)
                        compared += 1
                    answers[(period, since, until, tuple(filters.items()))] = body
        by_city = await metrics.http.get("/rates/by/city")

    assert compared > 150
    weeks = {g["key"]: g["rates"] for g in answers[("week", None, None, ())]["groups"]}
    assert list(weeks) == ["2026-02-23", "2026-03-02", "2026-03-09", "2026-03-30", "2026-04-13"]
    # P05's work order is past due with no reply; P06's is not due yet (awaiting a reply).
    assert weeks["2026-03-02"]["reply_timeliness_rate"] == {
        "value": 0.0,
        "numerator": 0,
        "denominator": 1,
    }
    assert weeks["2026-03-09"]["unanswered_rate"]["value"] == 1.0
    assert weeks["2026-03-09"]["reply_timeliness_rate"]["denominator"] == 0
    months = answers[("month", *WINDOW, ())]["groups"]
    assert [g["key"] for g in months] == ["2026-02-01", "2026-03-01", "2026-04-01"]
    # P02 (after since on 27 February) and P03; not P01 (before since).
    assert months[0]["rates"]["connection_rate"]["denominator"] == 1
    assert months[2]["rates"]["transfer_failure_rate"]["denominator"] == 1  # P08's; P10 after
    # Across midnight at the end of March: P07 in March, P08 in April.
    split = answers[("month", *WINDOWS[2], ())]["groups"]
    assert [g["key"] for g in split] == ["2026-03-01", "2026-04-01"]
    assert by_city.status_code == 200
    assert [g["key"] for g in by_city.json()["groups"]] == ["大连", "沈阳"]


async def test_more_than_a_thousand_groups_is_a_422_naming_since(settings, infra):
    first = local("2020-01-01 12:00")
    days = 1001
    async with running_service("metrics", settings) as metrics:
        producer = AIOKafkaProducer(bootstrap_servers=infra.bootstrap_servers)
        await producer.start()
        try:
            sent = []
            for number in range(days):
                event = ticket(
                    f"D{number}", "沈阳", "phone", "供暖", first + timedelta(days=number), wait=9
                )
                record = record_of(event)
                sent.append(
                    await producer.send(
                        settings.topic("intake"),
                        record.value,
                        key=record.key,
                        headers=record.headers,
                    )
                )
            await asyncio.gather(*sent)
        finally:
            await producer.stop()
        await eventually(
            lambda: _equals(processed_count(metrics), days),
            timeout=60,
            message="every ticket applied",
        )
        too_many = await metrics.http.get("/rates/by/day")
        too_many_in_window = await metrics.http.get(
            "/rates/by/day",
            params={"since": "2019-06-01T00:00:00+08:00", "until": "2030-01-01T00:00:00+08:00"},
        )
        just_enough = await metrics.http.get(
            "/rates/by/day", params={"since": "2020-01-02T00:00:00+08:00"}
        )
        weeks = await metrics.http.get("/rates/by/week")
        months = await metrics.http.get("/rates/by/month")

    for refused in (too_many, too_many_in_window):
        problem = problem_of(refused, 422, "validation_failed")
        assert problem_fields(refused) == {"query.since"}
        assert "1001 days have tickets in this window" in refused.text, problem
    assert just_enough.status_code == 200
    groups = just_enough.json()["groups"]
    assert len(groups) == 1000
    assert (groups[0]["key"], groups[-1]["key"]) == ("2020-01-02", "2022-09-27")
    assert all(g["rates"]["connection_rate"]["denominator"] == 1 for g in groups)
    last = first + timedelta(days=days - 1)
    assert (
        len(weeks.json()["groups"])
        == (first_day("week", last.date()) - date(2019, 12, 30)).days // 7 + 1
    )
    assert [g["key"] for g in months.json()["groups"]][::16] == [
        "2020-01-01",
        "2021-05-01",
        "2022-09-01",
    ]
    assert len(months.json()["groups"]) == 33


BAD_INPUT = [
    ("/rates/by/day", {"since": "0001-01-01T00:00:00Z"}, "query.since"),
    ("/rates/by/week", {"since": "9999-12-31T23:59:59Z"}, "query.since"),
    ("/rates/by/month", {"until": "9999-12-31T23:59:59-23:59"}, "query.until"),
    (
        "/rates/by/week",
        {"since": "2026-03-02T00:00:00+08:00", "until": "2026-03-02T00:00:00+08:00"},
        "query.until",
    ),
    (
        "/rates/by/day",
        {"since": "2026-03-02T00:00:00+08:00", "until": "2026-03-01T00:00:00+08:00"},
        "query.until",
    ),
    ("/rates/by/month", {"channel": "fax"}, "query.channel"),
    ("/rates/by/day", {"department": ""}, "query.department"),
    ("/rates/by/year", {}, "path.dimension"),
]


async def test_bad_input_is_a_422_naming_the_field_and_only_auditors_may_ask(settings):
    async with running_service("metrics", settings, wait_for_broker=False) as metrics:
        refused = [
            (field, await metrics.http.get(path, params=params))
            for path, params, field in BAD_INPUT
        ]
        widest = await metrics.http.get(
            "/rates/by/week",
            params={"since": "2000-01-01T00:00:00Z", "until": "2099-12-31T23:59:59Z"},
        )
        nobody = await (await metrics.as_role(None)).get("/rates/by/week")
        evaluator = await (await metrics.as_role("evaluator")).get("/rates/by/month")
        department = await metrics.department("住建局")
        desk = await department.get("/rates/by/day")

    for field, response in refused:
        problem_of(response, 422, "validation_failed")
        assert problem_fields(response) == {field}, (field, response.text)
    assert widest.status_code == 200
    assert widest.json() == {"by": "week", "groups": []}
    problem_of(nobody, 401, "unauthenticated")
    problem_of(evaluator, 403)
    problem_of(desk, 403)
