"""The SQL view Grafana reads, `metrics.unanswered_work_orders`, lists the same work orders
with the same age in working days and overdue flag as GET /audit/unanswered.

Work orders are written straight into metrics's fact table with creation times chosen to
be awkward: Shanghai midnight on either side, today, over statutory holidays and make-up
working days, years back; plus an operator's holiday file that overrides the library for
the current year, which both sides must honour.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import pytest
import sqlalchemy as sa

from services.metrics.calendar_days import FIRST_DAY, last_day
from services.metrics.models import work_order_facts
from shared.workdays import SHANGHAI, WorkCalendar, due_at, local_day
from tests.support import eventually, running_service

pytestmark = pytest.mark.integration


def recent_weekday(today):
    """A Monday-to-Friday at least two days before `today`."""
    day = today - timedelta(days=2)
    while day.weekday() >= 5:
        day -= timedelta(days=1)
    return day


def shanghai(day, clock=time(12)):
    return datetime.combine(day, clock, SHANGHAI)


def creation_times(now):
    today = local_day(now)
    yesterday = today - timedelta(days=1)
    times = [
        now,
        shanghai(today, time(0)),
        shanghai(yesterday, time(23, 59, 59)),
        shanghai(yesterday, time(0)),
        shanghai(today - timedelta(days=2), time(23, 59, 59)),
        shanghai(recent_weekday(today)),
        shanghai(recent_weekday(today) - timedelta(days=1), time(23, 30)),
        now - timedelta(days=9),
        now - timedelta(days=45),
        now - timedelta(days=400),
        # National Day 2025 (Oct 1-8 off, Sun Sep 28 and Sat Oct 11 make-up working days).
        shanghai(date(2025, 9, 27)),
        shanghai(date(2025, 10, 3), time(23, 59, 59)),
        # Spring Festival 2026 (Feb 15-23 off, Sat Feb 14 make-up working day).
        shanghai(date(2026, 2, 14), time(0)),
        shanghai(date(2026, 2, 20)),
        # The table's first day.
        shanghai(FIRST_DAY, time(0, 0, 1)),
    ]
    return [moment for moment in times if moment <= now]


def fact(index, created, calendar, **extra):
    deadline = due_at(created, 5, calendar).due_at
    return {
        "work_order_id": f"wo-{index:03d}",
        "ticket_id": f"t-{index:03d}",
        "department": ("住建局", "人社局", "交通局")[index % 3],
        "created_known": True,
        "created_at": created.astimezone(UTC),
        "due_at": deadline,
        "counted": True,
        "city": ("沈阳", "大连")[index % 2],
        "channel": "phone",
        "scenario": "供暖",
        "submitted_at": created.astimezone(UTC),
        "work_orders": 1,
        "first_reply_at": None,
        "replied_definite": 0,
        **extra,
    }


async def test_the_view_lists_the_audits_work_orders_with_the_same_ages(settings, tmp_path):
    now = datetime.now(UTC)
    overridden = recent_weekday(local_day(now))
    holidays = tmp_path / "holidays.toml"
    holidays.write_text(f'[{overridden.year}]\nholidays = ["{overridden.isoformat()}"]\n')
    settings = settings.model_copy(update={"holiday_file": holidays})
    calendar = WorkCalendar.load(holidays)
    assert not calendar.is_working_day(overridden)

    created = creation_times(now)
    rows = [fact(i, moment, calendar) for i, moment in enumerate(created)]
    rows.append(  # replied: not listed
        fact(90, now - timedelta(days=3), calendar, first_reply_at=now, replied_definite=1)
    )
    rows.append(  # its creation not known yet: not listed
        {**fact(91, now - timedelta(days=3), calendar), "created_known": False}
    )
    rows.append(  # its ticket not known yet: listed with no city
        {**fact(92, now - timedelta(days=6), calendar), "counted": False, "city": None}
    )
    expected_days = (last_day(local_day(now)) - FIRST_DAY).days + 1

    async with running_service("metrics", settings, wait_for_broker=False) as metrics:

        async def calendar_written():
            async with metrics.runtime.database.unit_of_work() as uow:
                count = await uow.execute(sa.text("SELECT count(*) FROM working_days"))
                return count.scalar_one() == expected_days

        await eventually(calendar_written, message="the working-day table filled")
        async with metrics.runtime.database.unit_of_work() as uow:
            connection = await uow.session.connection()
            await connection.execute(sa.insert(work_order_facts), rows)
            await uow.commit()
        audit = (await metrics.http.get("/audit/unanswered", params={"limit": 1000})).json()
        async with metrics.runtime.database.unit_of_work() as uow:
            result = await uow.execute(
                sa.text(
                    "SELECT * FROM metrics.unanswered_work_orders ORDER BY due_at, work_order_id"
                )
            )
            view = [dict(row) for row in result.mappings()]
            stored = await uow.execute(
                sa.text("SELECT is_working_day FROM working_days WHERE day = :day").bindparams(
                    day=overridden
                )
            )
            overridden_is_working = stored.scalar_one()

    assert overridden_is_working is False  # the holiday file, not the library
    assert audit["total"] == len(created) + 1
    assert [row["work_order_id"] for row in view] == [
        item["work_order_id"] for item in audit["items"]
    ]
    for row, item in zip(view, audit["items"], strict=True):
        assert row["ticket_id"] == item["ticket_id"]
        assert row["city"] == item["city"]
        assert row["department"] == item["department"]
        assert row["created_at"] == datetime.fromisoformat(item["created_at"])
        assert row["due_at"] == datetime.fromisoformat(item["due_at"])
        assert row["overdue"] == item["overdue"], row["work_order_id"]
        assert row["age_working_days"] == item["age_working_days"], row["work_order_id"]
    ages = {row["work_order_id"]: row["age_working_days"] for row in view}
    assert ages["wo-000"] == 0  # created now
    assert max(ages.values()) > 5000  # created in 2004
    assert {row["overdue"] for row in view} == {True, False}
