"""What metrics answers: the rates of a selection of tickets, and the unanswered work orders.
Read-only transactions.

The rates add three sums, none of which reads every ticket:
1. cells: the grouping set of the filters, for the whole months and days of the window
   (or all time), found by primary key or `rate_cells_by_grouping_set`;
2. raw facts of the partial days at the window's edges (by `submitted_at` indexes);
3. work orders awaiting a reply (no reply, not past due now), by the partial `due_at`
   index: only those due from now on, a few days' worth.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Final, Literal, get_args

import sqlalchemy as sa

from services.metrics.models import (
    ALL,
    UnansweredWorkOrder,
    callback_facts,
    grouping_of,
    rate_cells,
    ticket_events,
    ticket_facts,
    transfer_facts,
    work_order_facts,
)
from services.metrics.rates import (
    CALLBACK_COUNTERS,
    COUNTERS,
    PER_DEPARTMENT,
    PER_TICKET,
    TICKET_COUNTERS,
    TRANSFER_COUNTERS,
    WORK_ORDER_COUNTERS,
    ZERO,
    Counts,
    Totals,
)
from services.metrics.timeline import Entry
from services.metrics.windows import PeriodRange, TimeRange, WindowPlan, plan_window
from shared.db import ReadTransaction
from shared.pagination import STREAM_CHUNK, every_row, keyset_page
from shared.workdays import WorkCalendar, working_days_between

Dimension = Literal["city", "channel", "scenario", "department"]
DIMENSIONS: Final[tuple[Dimension, ...]] = get_args(Dimension)
TICKET_DIMENSIONS: Final[tuple[Dimension, ...]] = ("city", "channel", "scenario")


@dataclass(frozen=True)
class RateFilter:
    """Which tickets (and which departments' facts) the rates are over."""

    city: str | None = None
    channel: str | None = None
    scenario: str | None = None
    department: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def value_of(self, dimension: Dimension) -> str | None:
        """The filter's value for one dimension, if any."""
        value: str | None = getattr(self, dimension)
        return value


_Sums = dict[tuple[str, str], Counts]
"""(group key, department key) -> summed counters; department key ALL for ticket counters."""


async def read_totals(
    db: ReadTransaction, filters: RateFilter, *, by: Dimension | None, now: datetime
) -> dict[str, Totals]:
    """The totals of the selection, per value of `by` (one entry keyed ALL without `by`)."""
    plan = plan_window(filters.since, filters.until)
    sums: _Sums = defaultdict(lambda: ZERO)
    await _add_cells(db, filters, by, plan, sums)
    if plan.raw:
        await add_fact_sums(db, filters, by, plan.raw, sums)
    awaiting = await awaiting_reply(db, filters, by, now)
    return _combine(filters, by, sums, awaiting)


def _combine(
    filters: RateFilter, by: Dimension | None, sums: _Sums, awaiting: dict[str, int]
) -> dict[str, Totals]:
    """Ticket counters from the department-ALL sums, department counters from the filter's."""
    totals: dict[str, Totals] = {}
    if by == "department":
        per_ticket = sums.get((ALL, ALL), ZERO).only(PER_TICKET)
        departments = {dept for key, dept in sums if dept != ALL} | set(awaiting)
        for dept in sorted(departments):
            counts = per_ticket + sums.get((dept, dept), ZERO).only(PER_DEPARTMENT)
            totals[dept] = Totals(counts, awaiting.get(dept, 0))
        return totals
    department = filters.department or ALL
    keys = ({key for key, _ in sums} | set(awaiting)) if by else {ALL}
    for key in sorted(keys):
        counts = sums.get((key, ALL), ZERO).only(PER_TICKET) + sums.get(
            (key, department), ZERO
        ).only(PER_DEPARTMENT)
        totals[key] = Totals(counts, awaiting.get(key, 0))
    return totals


def dimension_conditions(
    table: sa.Table, filters: RateFilter, by: Dimension | None, *, cells: bool
) -> list[sa.ColumnElement[bool]]:
    """Equality for a filtered dimension; in the cells, ALL for the others."""
    conditions = []
    for name in TICKET_DIMENSIONS:
        value = filters.value_of(name)
        if value is not None:
            conditions.append(table.c[name] == value)
        elif cells:
            conditions.append(table.c[name] != ALL if by == name else table.c[name] == ALL)
    return conditions


def _key_column(
    table: sa.Table, by: Dimension | None
) -> tuple[sa.ColumnElement[Any], list[sa.ColumnElement[Any]]]:
    """The group key to select (ALL without a breakdown) and what to GROUP BY for it."""
    if by is None or by not in table.c:
        return sa.literal_column("''").label("key"), []
    return table.c[by].label("key"), [table.c[by]]


async def _add_cells(
    db: ReadTransaction, filters: RateFilter, by: Dimension | None, plan: WindowPlan, sums: _Sums
) -> None:
    if not plan.cells:
        return
    cells = rate_cells.c
    chosen = {name: filters.value_of(name) is not None or by == name for name in DIMENSIONS}
    ticket_set = grouping_of(chosen["city"], chosen["channel"], chosen["scenario"], False)
    department_set = grouping_of(chosen["city"], chosen["channel"], chosen["scenario"], True)
    conditions = dimension_conditions(rate_cells, filters, by, cells=True)
    if by == "department" or filters.department is not None:
        # The department-ALL row for ticket counters, the department's rows for the rest.
        conditions.append(cells.grouping_set.in_([ticket_set, department_set]))
        if filters.department is not None:
            conditions.append(cells.department.in_([ALL, filters.department]))
    else:
        conditions.append(cells.department == ALL)
        conditions.append(cells.grouping_set == ticket_set)
    conditions.append(sa.or_(*[period_condition(period) for period in plan.cells]))
    key, grouped = _key_column(rate_cells, by)
    statement = (
        sa.select(
            key, cells.department, *[sa.func.sum(cells[name]).label(name) for name in COUNTERS]
        )
        .where(*conditions)
        .group_by(*grouped, cells.department)
    )
    for row in await db.execute(statement):
        group, dept, *values = tuple[Any, ...](row)
        sums[(group, dept)] += Counts.summed(COUNTERS, values)


def period_condition(period: PeriodRange) -> sa.ColumnElement[bool]:
    cells = rate_cells.c
    condition = [cells.grain == period.grain]
    if period.start is not None:
        condition.append(cells.period >= period.start)
    if period.end is not None:
        condition.append(cells.period < period.end)
    return sa.and_(*condition)


def _time_condition(table: sa.Table, ranges: tuple[TimeRange, ...]) -> sa.ColumnElement[bool]:
    return sa.or_(*[submitted_within(table, window) for window in ranges])


def submitted_within(table: sa.Table, time_range: TimeRange) -> sa.ColumnElement[bool]:
    condition: list[sa.ColumnElement[bool]] = [sa.true()]
    if time_range.start is not None:
        condition.append(table.c.submitted_at >= time_range.start)
    if time_range.end is not None:
        condition.append(table.c.submitted_at < time_range.end)
    return sa.and_(*condition)


_RAW_SOURCES: Final = (
    (ticket_facts, TICKET_COUNTERS, False),
    (callback_facts, CALLBACK_COUNTERS, False),
    (transfer_facts, TRANSFER_COUNTERS, True),
    (work_order_facts, WORK_ORDER_COUNTERS, True),
)


async def add_fact_sums(
    db: ReadTransaction,
    filters: RateFilter,
    by: Dimension | None,
    ranges: tuple[TimeRange, ...],
    sums: _Sums,
) -> None:
    """Add the sums of the counted facts in `ranges`, read straight from the fact tables.

    With `TimeRange()` it is the naive GROUP BY over every fact: the benchmark's baseline.
    """
    for table, names, per_department in _RAW_SOURCES:
        conditions = [table.c.counted, _time_condition(table, ranges)]
        conditions += dimension_conditions(table, filters, by, cells=False)
        department: sa.ColumnElement[Any] = sa.literal_column("''")
        key, grouped = _key_column(table, by)
        if per_department and filters.department is not None:
            conditions.append(table.c.department == filters.department)
        if per_department and (filters.department is not None or by == "department"):
            department = table.c.department
            grouped.append(department)
        statement = (
            sa.select(
                key,
                department.label("department"),
                *[sa.func.sum(table.c[name]).label(name) for name in names],
            )
            .where(*conditions)
            .group_by(*grouped)
        )
        for row in await db.execute(statement):
            group, dept, *values = tuple[Any, ...](row)
            sums[(group, dept)] += Counts.summed(names, values)


def unreplied(table: sa.Table = work_order_facts) -> list[sa.ColumnElement[bool]]:
    """Matches the partial index `work_order_facts_unreplied`."""
    return [table.c.first_reply_at.is_(None), table.c.created_known]


async def awaiting_reply(
    db: ReadTransaction, filters: RateFilter, by: Dimension | None, now: datetime
) -> dict[str, int]:
    """Counted work orders with no reply whose `due_at` is now or later, per group key."""
    facts = work_order_facts
    conditions = [*unreplied(), facts.c.due_at >= now, facts.c.counted]
    conditions += dimension_conditions(facts, filters, by, cells=False)
    if filters.department is not None:
        conditions.append(facts.c.department == filters.department)
    conditions.append(submitted_within(facts, TimeRange(filters.since, filters.until)))
    key, grouped = _key_column(facts, by)
    statement = sa.select(key, sa.func.count().label("n")).where(*conditions).group_by(*grouped)
    return {row["key"]: row["n"] for row in (await db.execute(statement)).mappings()}


async def outcomes_by_city_and_channel(db: ReadTransaction) -> dict[tuple[str, str], Counts]:
    """All-time counters per (city, channel): the cells of that grouping set."""
    cells = rate_cells.c
    statement = (
        sa.select(cells.city, cells.channel, *[sa.func.sum(cells[name]) for name in COUNTERS])
        .where(
            cells.grouping_set == grouping_of(True, True, False, False),
            cells.grain == "all",
            cells.department == ALL,
        )
        .group_by(cells.city, cells.channel)
    )
    rows = [tuple[Any, ...](row) for row in await db.execute(statement)]
    return {(row[0], row[1]): Counts.summed(COUNTERS, row[2:]) for row in rows}


# --- The audit of unanswered work orders --------------------------------------------------


@dataclass(frozen=True)
class UnansweredQuery:
    """Filters and position of one page of the audit."""

    city: str | None = None
    department: str | None = None
    overdue_only: bool = False
    limit: int = 100
    after: tuple[datetime, str] | None = None
    """The (due_at, work_order_id) of the last row of the previous page."""
    as_of: datetime | None = None
    """Those unanswered at this moment, by the events' times (None: those unanswered now)."""


async def unanswered_work_orders(
    db: ReadTransaction, query: UnansweredQuery, *, now: datetime, calendar: WorkCalendar
) -> tuple[int, list[UnansweredWorkOrder], bool]:
    """(total, one page most overdue first, whether more follow); `now` is `query.as_of`
    when it is given.

    Lists every work order whose creation is known and that has no reply, also those whose
    ticket has not arrived yet (their `city` is null until it does).
    """
    conditions = _unanswered_conditions(query, now)
    total = (await db.execute(sa.select(sa.func.count()).where(*conditions))).scalar_one()
    items, more = await unanswered_page(db, query, now=now, calendar=calendar)
    return int(total), items, more


def _unanswered_conditions(query: UnansweredQuery, now: datetime) -> list[sa.ColumnElement[bool]]:
    facts = work_order_facts
    if query.as_of is None:
        conditions = unreplied()
    else:
        conditions = [
            facts.c.created_known,
            facts.c.created_at <= query.as_of,
            sa.or_(facts.c.first_reply_at.is_(None), facts.c.first_reply_at > query.as_of),
        ]
    if query.city is not None:
        conditions.append(facts.c.city == query.city)
    if query.department is not None:
        conditions.append(facts.c.department == query.department)
    if query.overdue_only:
        conditions.append(facts.c.due_at < now)
    return conditions


async def unanswered_page(
    db: ReadTransaction, query: UnansweredQuery, *, now: datetime, calendar: WorkCalendar
) -> tuple[list[UnansweredWorkOrder], bool]:
    """One page of the audit after `query.after`, and whether more follow."""
    facts = work_order_facts
    statement = sa.select(facts).where(*_unanswered_conditions(query, now))
    key = (facts.c.due_at, facts.c.work_order_id)
    rows, more = await keyset_page(db, statement, key, query.after, query.limit)
    items = [
        UnansweredWorkOrder(
            work_order_id=row["work_order_id"],
            ticket_id=row["ticket_id"],
            city=row["city"],
            department=row["department"],
            created_at=row["created_at"],
            due_at=row["due_at"],
            overdue=row["due_at"] < now,
            age_working_days=working_days_between(row["created_at"], now, calendar),
        )
        for row in rows
    ]
    return items, more


async def every_unanswered(
    db: ReadTransaction, query: UnansweredQuery, *, now: datetime, calendar: WorkCalendar
) -> AsyncIterator[UnansweredWorkOrder]:
    """Every row of the audit after `query.after`, a chunk at a time (one snapshot)."""

    async def page(after: tuple[datetime, str] | None) -> tuple[list[UnansweredWorkOrder], bool]:
        chunk = replace(query, limit=STREAM_CHUNK, after=after)
        return await unanswered_page(db, chunk, now=now, calendar=calendar)

    async for item in every_row(page, lambda item: (item.due_at, item.work_order_id), query.after):
        yield item


# --- A ticket's history -------------------------------------------------------------------


async def ticket_history(db: ReadTransaction, ticket_id: str) -> list[Entry]:
    """Every event kept of the ticket (in no particular order)."""
    events = ticket_events.c
    rows = await db.execute(sa.select(ticket_events).where(events.ticket_id == ticket_id))
    return [
        Entry(
            event_id=row["event_id"],
            ce_type=row["ce_type"],
            at=row["at"],
            work_order_id=row["work_order_id"],
            changes=row["changes"],
            actor_key_id=row["actor_key_id"],
            actor_role=row["actor_role"],
            actor_department=row["actor_department"],
        )
        for row in rows.mappings()
    ]


# --- Overdue work orders (督办) -------------------------------------------------------------

OverdueDimension = Literal["department", "city"]


@dataclass(frozen=True)
class OverdueGroup:
    """The overdue work orders of one group (a department, a city, or both)."""

    key: tuple[str | None, ...]
    """The group's values, in the order asked; a city is None for work orders whose
    ticket's own event has not arrived."""
    overdue: int
    working_days_late_total: int
    working_days_late_max: int


_OVERDUE_SQL: Final = """
SELECT {keys}, count(*) AS overdue,
       COALESCE(sum(late), 0) AS late_total, COALESCE(max(late), 0) AS late_max
FROM (
    SELECT w.department, w.city,
           GREATEST(0, today.working_days_before - after_due.working_days_before) AS late
    FROM work_order_facts AS w
    LEFT JOIN working_days AS today
           ON today.day = (CAST(:now AS TIMESTAMPTZ) AT TIME ZONE 'Asia/Shanghai')::date
    LEFT JOIN working_days AS after_due
           ON after_due.day = ((w.due_at - INTERVAL '1 microsecond')
                               AT TIME ZONE 'Asia/Shanghai')::date + 1
    WHERE w.first_reply_at IS NULL AND w.created_known AND w.due_at < :now
      AND (CAST(:city AS TEXT) IS NULL OR w.city = :city)
      AND (CAST(:department AS TEXT) IS NULL OR w.department = :department)
) AS late_work_orders
GROUP BY {keys}
ORDER BY {keys} NULLS LAST
"""
OVERDUE_GROUPINGS: Final[tuple[tuple[OverdueDimension, ...], ...]] = (
    ("department",),
    ("city",),
    ("department", "city"),
)
_OVERDUE: Final = {
    keys: sa.text(_OVERDUE_SQL.format(keys=", ".join(keys))) for keys in OVERDUE_GROUPINGS
}


async def overdue_by(
    db: ReadTransaction,
    by: tuple[OverdueDimension, ...],
    *,
    now: datetime,
    city: str | None = None,
    department: str | None = None,
) -> list[OverdueGroup]:
    """Work orders past due with no reply, per group of `by` (one of OVERDUE_GROUPINGS),
    with how many working days late they are: the working days (Asia/Shanghai) wholly
    between the deadline and today. The `working_days` table counts them; a day outside it
    counts none."""
    rows = await db.execute(_OVERDUE[by], {"now": now, "city": city, "department": department})
    return [
        OverdueGroup(
            key=tuple(row[name] for name in by),
            overdue=int(row["overdue"]),
            working_days_late_total=int(row["late_total"]),
            working_days_late_max=int(row["late_max"]),
        )
        for row in rows.mappings()
    ]
