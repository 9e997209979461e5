"""Periods of `submitted_at` (days, weeks from Monday, months; Asia/Shanghai) and which
cells, plus which raw facts, answer one period group of a since/until window. Pure: no
database.

`GET /rates/by/day|week|month` answers one group per period, keyed by its first day. A
group holds the tickets of that period inside the window: the first and last periods may be
cut by `since` and `until`, and then equal `/rates` over the cut window, not the whole
period.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Final, Literal, get_args

from services.metrics.windows import (
    Grain,
    PeriodRange,
    TimeRange,
    WindowPlan,
    midnight,
    plan_window,
)
from shared.workdays import local_day

Period = Literal["day", "week", "month"]
PERIODS: Final[tuple[Period, ...]] = get_args(Period)
MAX_PERIOD_GROUPS: Final = 1000
"""The most groups one answer holds (about 2.7 years of days, 19 years of weeks)."""


def period_start(period: Period, day: date) -> date:
    """The first day of the period holding `day`: itself, the Monday before it, the 1st."""
    if period == "day":
        return day
    if period == "week":
        return day - timedelta(days=day.weekday())
    return day.replace(day=1)


def next_period_start(period: Period, start: date) -> date:
    """The first day of the period after the one starting at `start`."""
    if period == "day":
        return start + timedelta(days=1)
    if period == "week":
        return start + timedelta(days=7)
    return (start.replace(day=28) + timedelta(days=4)).replace(day=1)


def period_of(period: Period, moment: datetime) -> date:
    """The first day (Asia/Shanghai) of the period `moment` falls in."""
    return period_start(period, local_day(moment))


def group_window(
    period: Period, start: date, since: datetime | None, until: datetime | None
) -> tuple[datetime, datetime]:
    """[from, to) of the group keyed `start`: the period, cut by the window's ends. Its rates
    are those of `/rates?since=from&until=to`."""
    begin = midnight(start)
    end = midnight(next_period_start(period, start))
    return (
        begin if since is None else max(begin, since),
        end if until is None else min(end, until),
    )


def plan_periods(period: Period, since: datetime | None, until: datetime | None) -> WindowPlan:
    """The cells and raw partial days that cover [since, until) so that every cell lies in
    one period: for months the plan of `/rates` (whole months, then days), for days and weeks
    day cells only. No window: every day cell, or every month cell."""
    grain: Grain = "month" if period == "month" else "day"
    if since is None and until is None:
        return WindowPlan(cells=(PeriodRange(grain),))
    plan = plan_window(since, until)
    if period == "month":
        return plan
    # A whole-month range [first of a month, first of a later month) is the same days.
    days = tuple(PeriodRange("day", cells.start, cells.end) for cells in plan.cells)
    return WindowPlan(cells=days, raw=plan.raw)


def split_by_day(ranges: tuple[TimeRange, ...]) -> list[tuple[date, TimeRange]]:
    """Bounded time ranges cut at midnight (Asia/Shanghai): each piece with its day, so it
    lies in one period whatever the period. The raw ranges of a plan span two days at most."""
    pieces: list[tuple[date, TimeRange]] = []
    for whole in ranges:
        if whole.start is None or whole.end is None:
            raise ValueError(f"an unbounded raw range {whole!r}")
        start = whole.start
        while start < whole.end:
            day = local_day(start)
            end = min(whole.end, midnight(day + timedelta(days=1)))
            pieces.append((day, TimeRange(start, end)))
            start = end
    return pieces


class TooManyPeriods(Exception):
    """More groups than `MAX_PERIOD_GROUPS` would be in the answer."""

    def __init__(self, period: Period, groups: int) -> None:
        super().__init__(
            f"{groups} {period}s have tickets in this window, more than the "
            f"{MAX_PERIOD_GROUPS} an answer holds: give a later since (or an earlier until), "
            "or ask by a longer period"
        )
        self.period = period
        self.groups = groups
