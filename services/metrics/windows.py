"""Which aggregate cells, plus which raw facts, answer a time window of `submitted_at`.

Cells exist per all time, per month and per day (Asia/Shanghai); a window is covered by
whole months, then whole days, and the partial days at its edges are read from the facts.
Pure: no database.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Final, Literal

from shared.workdays import SHANGHAI, local_day

Grain = Literal["all", "month", "day"]
GRAINS: Final[tuple[Grain, ...]] = ("all", "month", "day")
ALL_TIME: Final = date(1970, 1, 1)
"""The period of the all-time cells."""


@dataclass(frozen=True)
class PeriodRange:
    """Cells of one grain with `start <= period < end` (None: unbounded)."""

    grain: Grain
    start: date | None = None
    end: date | None = None


@dataclass(frozen=True)
class TimeRange:
    """Raw facts of tickets with `start <= submitted_at < end` (None: unbounded)."""

    start: datetime | None = None
    end: datetime | None = None


@dataclass(frozen=True)
class WindowPlan:
    """What answers a window: sums of cells, plus sums of raw facts for partial days."""

    cells: tuple[PeriodRange, ...]
    raw: tuple[TimeRange, ...] = ()


def midnight(day: date) -> datetime:
    """00:00 Asia/Shanghai at the start of `day`."""
    return datetime.combine(day, time(0), tzinfo=SHANGHAI)


def plan_window(since: datetime | None, until: datetime | None) -> WindowPlan:
    """Cover [since, until) with whole months, then whole days, then raw partial days.

    No window: the all-time cells alone.
    """
    if since is None and until is None:
        return WindowPlan(cells=(PeriodRange("all"),))
    if since is not None and until is not None and since >= until:
        return WindowPlan(cells=())
    raw: list[TimeRange] = []
    first_day: date | None = None  # first whole day in the window
    end_day: date | None = None  # day after the last whole day
    if since is not None:
        first_day = local_day(since)
        if midnight(first_day) < since:
            first_day += timedelta(days=1)
    if until is not None:
        end_day = local_day(until)
    if first_day is not None and end_day is not None and first_day >= end_day:
        return WindowPlan(cells=(), raw=(TimeRange(since, until),))
    if first_day is not None and since is not None and since < midnight(first_day):
        raw.append(TimeRange(since, midnight(first_day)))
    if end_day is not None and until is not None and midnight(end_day) < until:
        raw.append(TimeRange(midnight(end_day), until))
    return WindowPlan(cells=tuple(_whole_days(first_day, end_day)), raw=tuple(raw))


def _whole_days(first: date | None, end: date | None) -> Iterator[PeriodRange]:
    """Days [first, end) as whole months where possible, days at either side."""
    first_month = first if first is None or first.day == 1 else _next_month(first)
    end_month = None if end is None else end.replace(day=1)
    if first_month is not None and end_month is not None and first_month >= end_month:
        yield PeriodRange("day", first, end)
        return
    yield PeriodRange("month", first_month, end_month)
    if first is not None and first_month is not None and first < first_month:
        yield PeriodRange("day", first, first_month)
    if end is not None and end_month is not None and end_month < end:
        yield PeriodRange("day", end_month, end)


def _next_month(day: date) -> date:
    return (day.replace(day=28) + timedelta(days=4)).replace(day=1)
