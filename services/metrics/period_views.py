"""The rates per day, week or month of `submitted_at`: the read behind
`GET /rates/by/day|week|month`. Read-only.

The same three sums as `views.read_totals`, grouped by period instead of by a dimension:
1. cells of the filters' grouping set: day cells (days, weeks: a week is its seven days),
   or month cells for the months wholly inside the window and day cells for the rest, each
   row's period folded into the period group it lies in (`periods.period_start`);
2. raw facts of the partial days at the window's edges, each day's sums added to its group;
3. work orders awaiting a reply (no reply, not past due now), counted per day of their
   ticket's `submitted_at` and folded the same way.
So every group equals `/rates` over the group's window (`periods.group_window`).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa

from services.metrics.models import ALL, grouping_of, rate_cells, work_order_facts
from services.metrics.periods import (
    MAX_PERIOD_GROUPS,
    Period,
    TooManyPeriods,
    period_start,
    plan_periods,
    split_by_day,
)
from services.metrics.rates import COUNTERS, PER_DEPARTMENT, PER_TICKET, ZERO, Counts, Totals
from services.metrics.views import (
    RateFilter,
    add_fact_sums,
    dimension_conditions,
    period_condition,
    submitted_within,
    unreplied,
)
from services.metrics.windows import PeriodRange, TimeRange
from shared.db import ReadTransaction
from shared.workdays import SHANGHAI

# The conditions taken from `views` above are exactly those `/rates` uses.

_Sums = dict[tuple[date, str], Counts]
"""(period start, department key) -> summed counters; department key ALL for ticket ones."""


async def read_period_totals(
    db: ReadTransaction, filters: RateFilter, period: Period, *, now: datetime
) -> dict[date, Totals]:
    """The totals of the selection per period that has tickets, by the period's first day,
    in order. Raises TooManyPeriods beyond MAX_PERIOD_GROUPS groups."""
    plan = plan_periods(period, filters.since, filters.until)
    sums: _Sums = defaultdict(lambda: ZERO)
    await _add_period_cells(db, filters, period, plan.cells, sums)
    for day, piece in split_by_day(plan.raw):
        day_sums: dict[tuple[str, str], Counts] = defaultdict(lambda: ZERO)
        await add_fact_sums(db, filters, None, (piece,), day_sums)
        for (_, department), counts in day_sums.items():
            sums[(period_start(period, day), department)] += counts
    awaiting: dict[date, int] = defaultdict(int)
    for day, number in (await _awaiting_reply_by_day(db, filters, now)).items():
        awaiting[period_start(period, day)] += number
    totals = _per_period(filters, sums, awaiting)
    if len(totals) > MAX_PERIOD_GROUPS:
        raise TooManyPeriods(period, len(totals))
    return totals


def _per_period(filters: RateFilter, sums: _Sums, awaiting: dict[date, int]) -> dict[date, Totals]:
    """Ticket counters from the department-ALL sums, department counters from the filter's;
    only periods with tickets."""
    department = filters.department or ALL
    totals: dict[date, Totals] = {}
    for start in sorted({start for start, _ in sums}):
        per_ticket = sums.get((start, ALL), ZERO).only(PER_TICKET)
        if not per_ticket.tickets:
            continue
        per_department = sums.get((start, department), ZERO).only(PER_DEPARTMENT)
        totals[start] = Totals(per_ticket + per_department, awaiting.get(start, 0))
    return totals


async def _add_period_cells(
    db: ReadTransaction,
    filters: RateFilter,
    period: Period,
    ranges: tuple[PeriodRange, ...],
    sums: _Sums,
) -> None:
    """Sum the cells of the filters' grouping set in `ranges` per cell period, then fold each
    cell period (a day, or a whole month) into its period group."""
    if not ranges:
        return
    cells = rate_cells.c
    city, channel, scenario = (
        filters.value_of(name) is not None for name in ("city", "channel", "scenario")
    )
    ticket_set = grouping_of(city, channel, scenario, False)
    conditions = dimension_conditions(rate_cells, filters, None, cells=True)
    if filters.department is None:
        conditions += [cells.department == ALL, cells.grouping_set == ticket_set]
    else:
        # The department-ALL row for ticket counters, the department's rows for the rest.
        department_set = grouping_of(city, channel, scenario, True)
        conditions += [
            cells.grouping_set.in_([ticket_set, department_set]),
            cells.department.in_([ALL, filters.department]),
        ]
    conditions.append(sa.or_(*[period_condition(cells_range) for cells_range in ranges]))
    statement = (
        sa.select(
            cells.period,
            cells.department,
            *[sa.func.sum(cells[name]).label(name) for name in COUNTERS],
        )
        .where(*conditions)
        .group_by(cells.period, cells.department)
    )
    for row in await db.execute(statement):
        cell_period, department, *values = tuple[Any, ...](row)
        sums[(period_start(period, cell_period), department)] += Counts.summed(COUNTERS, values)


async def _awaiting_reply_by_day(
    db: ReadTransaction, filters: RateFilter, now: datetime
) -> dict[date, int]:
    """Counted work orders with no reply whose `due_at` is now or later, per day
    (Asia/Shanghai) of their ticket's `submitted_at`: `views.awaiting_reply` by day."""
    facts = work_order_facts
    # The zone as a literal, not a parameter: SELECT and GROUP BY must be the same text.
    zone: sa.ColumnElement[str] = sa.literal_column(f"'{SHANGHAI.key}'")
    day = sa.cast(sa.func.timezone(zone, facts.c.submitted_at), sa.Date).label("day")
    conditions = [*unreplied(), facts.c.due_at >= now, facts.c.counted]
    conditions += dimension_conditions(facts, filters, None, cells=False)
    if filters.department is not None:
        conditions.append(facts.c.department == filters.department)
    conditions.append(submitted_within(facts, TimeRange(filters.since, filters.until)))
    statement = sa.select(day, sa.func.count().label("n")).where(*conditions).group_by(day)
    return {row["day"]: int(row["n"]) for row in (await db.execute(statement)).mappings()}
