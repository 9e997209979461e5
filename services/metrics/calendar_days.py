"""The working-day calendar as a table, so SQL can count working days (the view
`unanswered_work_orders` ages work orders with it; Grafana reads the view).

One row per date from 2004-01-01 (the first year `chinesecalendar` covers) through the end
of next year, each a working day or not as the service's `WorkCalendar` decides (the
operator's holiday file, then chinesecalendar, then weekends only), with the number of
working days before it. Every replica writes the same rows at start and again every
`working_days_refresh_seconds` (the table then reaches into a new year); a row that did not
change is not rewritten, so replicas starting together only wait on each other briefly.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Final

import sqlalchemy as sa

from shared.background import Periodic
from shared.clock import utc_now
from shared.db import Transaction
from shared.runtime import BackgroundWorkFactory, WorkContext
from shared.workdays import WorkCalendar, local_day

log = logging.getLogger(__name__)

FIRST_DAY: Final = date(2004, 1, 1)


@dataclass(frozen=True)
class CalendarDay:
    """One row of `working_days`."""

    day: date
    is_working_day: bool
    working_days_before: int


def last_day(today: date) -> date:
    """The table's last day: the end of the year after `today`'s."""
    return date(today.year + 1, 12, 31)


def calendar_days(calendar: WorkCalendar, first: date, last: date) -> list[CalendarDay]:
    """Every day from `first` to `last`, with the working days from `first` before it."""
    days = []
    before = 0
    day = first
    while day <= last:
        working = calendar.is_working_day(day)
        days.append(CalendarDay(day, working, before))
        before += int(working)
        day += timedelta(days=1)
    return days


_UPSERT: Final = sa.text(
    "INSERT INTO working_days (day, is_working_day, working_days_before)\n"
    "SELECT * FROM unnest(CAST(:day AS date[]), CAST(:is_working_day AS boolean[]),"
    " CAST(:working_days_before AS integer[]))\n"
    "ON CONFLICT (day) DO UPDATE SET is_working_day = EXCLUDED.is_working_day,"
    " working_days_before = EXCLUDED.working_days_before\n"
    "WHERE (working_days.is_working_day, working_days.working_days_before)"
    " IS DISTINCT FROM (EXCLUDED.is_working_day, EXCLUDED.working_days_before)"
)
"""One statement for all the rows (a column of values per parameter), in date order."""


async def store_calendar_days(tx: Transaction, days: list[CalendarDay]) -> None:
    """Insert the days, or update those that changed (in the caller's transaction)."""
    if not days:
        return
    await tx.execute(
        _UPSERT.bindparams(
            day=[d.day for d in days],
            is_working_day=[d.is_working_day for d in days],
            working_days_before=[d.working_days_before for d in days],
        )
    )


def working_days_keeper(calendar: WorkCalendar) -> BackgroundWorkFactory:
    """Background work that writes the calendar now and every refresh interval."""

    def make(context: WorkContext) -> Periodic:
        async def write() -> None:
            last = last_day(local_day(utc_now()))
            # Deciding ~9,000 days the first time takes a while: not on the event loop.
            days = await asyncio.to_thread(calendar_days, calendar, FIRST_DAY, last)
            async with context.new_uow() as uow:
                await store_calendar_days(uow, days)
                await uow.commit()
            log.debug("working-day calendar written", extra={"through": days[-1].day.isoformat()})

        return Periodic(
            "working-days",
            write,
            interval=context.settings.working_days_refresh_seconds,
            max_backoff=context.settings.consumer_max_backoff_seconds,
        )

    return make
