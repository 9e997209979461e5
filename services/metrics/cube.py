"""The aggregate cells: which cells a fact's counters go to, applying changes to them, and
which cells (plus which raw facts) answer a time window.

A fact of a ticket submitted at `t` in city C, channel H, scenario S adds its counters to
the cells of three periods (all time, the month of `t`, the day of `t`, in Asia/Shanghai)
times every grouping set of (C, H, S): each dimension either its value or ALL. Counters
of a department (transfers, work orders) also go to that department's cells; those of a
ticket (calls, callbacks) only to department ALL. So `GET /rates` with any combination of
filters sums the rows of one grouping set, and a breakdown by one dimension reads one row
per group: at most (months + ~60 days) rows per group for a window, one with no window.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any, Final, Literal

import sqlalchemy as sa

from services.metrics.models import (
    ALL,
    CELL_DIMENSIONS,
    callback_facts,
    rate_cells,
    ticket_facts,
    transfer_facts,
    work_order_facts,
)
from services.metrics.rates import (
    CALLBACK_COUNTERS,
    COUNTERS,
    DECIMAL_COUNTERS,
    TICKET_COUNTERS,
    TRANSFER_COUNTERS,
    WORK_ORDER_COUNTERS,
    ZERO,
    Counts,
)
from shared.db import UnitOfWork
from shared.workdays import SHANGHAI, local_day

Grain = Literal["all", "month", "day"]
GRAINS: Final[tuple[Grain, ...]] = ("all", "month", "day")
ALL_TIME: Final = date(1970, 1, 1)
"""The period of the all-time cells."""


@dataclass(frozen=True)
class Dims:
    """The ticket's dimensions every one of its facts is counted under."""

    city: str
    channel: str
    scenario: str
    submitted_at: datetime


def periods_of(submitted_at: datetime) -> tuple[tuple[Grain, date], ...]:
    """All time, the month and the day (Asia/Shanghai) a ticket's facts are counted in."""
    day = local_day(submitted_at)
    return (("all", ALL_TIME), ("month", day.replace(day=1)), ("day", day))


@dataclass(frozen=True, order=True)
class CellKey:
    """The primary key of one cell."""

    city: str
    channel: str
    scenario: str
    department: str
    grain: Grain
    period: date


def cell_keys(dims: Dims, department: str | None) -> list[CellKey]:
    """Every cell a fact goes to; `department` None for a ticket's own (and callback) counters."""
    departments = (ALL,) if department is None else (department, ALL)
    return [
        CellKey(city, channel, scenario, dept, grain, period)
        for grain, period in periods_of(dims.submitted_at)
        for city in (dims.city, ALL)
        for channel in (dims.channel, ALL)
        for scenario in (dims.scenario, ALL)
        for dept in departments
    ]


class CellDeltas:
    """Changes to cells collected across a batch of events, then written in one statement
    just before the batch commits (a UnitOfWork accumulator)."""

    def __init__(self) -> None:
        self._deltas: dict[CellKey, Counts] = {}

    def merge(self, other: CellDeltas) -> None:
        """Take in the changes of an event whose savepoint succeeded."""
        for key, counts in other._deltas.items():
            self._deltas[key] = self._deltas.get(key, ZERO) + counts

    async def flush(self, uow: UnitOfWork) -> None:
        """Write the changes into the cells."""
        await apply_deltas(uow, self)

    def add(self, dims: Dims, department: str | None, counts: Counts) -> None:
        """Add (or, negative, remove) `counts` in every cell of the fact."""
        if counts.is_zero():
            return
        for key in cell_keys(dims, department):
            self._deltas[key] = self._deltas.get(key, ZERO) + counts

    def rows(self) -> list[dict[str, Any]]:
        """One row per changed cell, in key order (a stable lock order)."""
        return [
            {**_key_values(key), **counts.values()}
            for key, counts in sorted(self._deltas.items())
            if not counts.is_zero()
        ]


def _key_values(key: CellKey) -> dict[str, Any]:
    return {
        "city": key.city,
        "channel": key.channel,
        "scenario": key.scenario,
        "department": key.department,
        "grain": key.grain,
        "period": key.period,
    }


CELL_KEY_COLUMNS: Final = (*CELL_DIMENSIONS, "grain", "period")
_CELL_COLUMNS: Final = (*CELL_KEY_COLUMNS, *COUNTERS)
_ARRAY_TYPES: Final = {
    **dict.fromkeys(CELL_DIMENSIONS, "text[]"),
    "grain": "text[]",
    "period": "date[]",
    **{name: "numeric[]" if name in DECIMAL_COUNTERS else "bigint[]" for name in COUNTERS},
}
_UPSERT_CELLS: Final = sa.text(
    f"INSERT INTO rate_cells ({', '.join(_CELL_COLUMNS)})\n"
    "SELECT * FROM unnest("
    + ", ".join(f"CAST(:{name} AS {_ARRAY_TYPES[name]})" for name in _CELL_COLUMNS)
    + ")\n"
    f"ON CONFLICT ({', '.join(CELL_KEY_COLUMNS)}) DO UPDATE SET "
    + ", ".join(f"{name} = rate_cells.{name} + EXCLUDED.{name}" for name in COUNTERS)
)
"""One statement for any number of cells (a column of values per parameter), so it is
prepared once; a multi-row VALUES would be compiled anew for every number of rows."""


async def apply_deltas(uow: UnitOfWork, deltas: CellDeltas) -> None:
    """Add the collected changes to the cells (creating the cells that do not exist yet)."""
    rows = deltas.rows()
    if not rows:
        return
    columns = {name: [row[name] for row in rows] for name in _CELL_COLUMNS}
    await uow.execute(_UPSERT_CELLS.bindparams(**columns))


# --- Windows ------------------------------------------------------------------------------


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


# --- Rebuilding the cells from the facts --------------------------------------------------

_FACT_SOURCES: Final = (
    (ticket_facts, TICKET_COUNTERS, False),
    (callback_facts, CALLBACK_COUNTERS, False),
    (transfer_facts, TRANSFER_COUNTERS, True),
    (work_order_facts, WORK_ORDER_COUNTERS, True),
)
_PERIOD_SQL: Final[dict[Grain, str]] = {
    "all": f"DATE '{ALL_TIME.isoformat()}'",
    "month": "date_trunc('month', submitted_at AT TIME ZONE 'Asia/Shanghai')::date",
    "day": "(submitted_at AT TIME ZONE 'Asia/Shanghai')::date",
}


def _contributions_sql(grain: Grain) -> str:
    """Every counted fact as one row: dimensions, period, and all counters (0 if not its)."""
    parts = []
    for table, names, per_department in _FACT_SOURCES:
        department = "department" if per_department else "''"
        counters = ", ".join(name if name in names else f"0 AS {name}" for name in COUNTERS)
        parts.append(
            f"SELECT city, channel, scenario, {department} AS department, "
            f"{_PERIOD_SQL[grain]} AS period, {counters} FROM {table.name} WHERE counted"
        )
    return "\nUNION ALL\n".join(parts)


def _grouping_sets() -> str:
    sets = []
    for mask in range(16):
        chosen = [name for bit, name in enumerate(CELL_DIMENSIONS) if mask & (1 << bit)]
        sets.append("(" + ", ".join(chosen) + ")")
    return ", ".join(sets)


def rebuild_cells_sql(grain: Grain) -> str:
    """INSERT the cells of one grain, summed from the facts (for loads, repairs and checks).

    The same cells the consumer maintains one event at a time: ticket counters sit in the
    department-ALL rows only, and department rows hold department counters.
    """
    dims = ", ".join(
        f"CASE WHEN GROUPING({name}) = 1 THEN '' ELSE {name} END" for name in CELL_DIMENSIONS
    )
    sums = ", ".join(f"SUM({name})" for name in COUNTERS)
    nonzero = " OR ".join(f"SUM({name}) <> 0" for name in COUNTERS)
    return (
        f"INSERT INTO rate_cells ({', '.join(CELL_DIMENSIONS)}, grain, period, "
        f"{', '.join(COUNTERS)})\n"
        f"SELECT {dims}, '{grain}', period, {sums}\n"
        f"FROM ({_contributions_sql(grain)}) AS facts\n"
        f"GROUP BY period, GROUPING SETS ({_grouping_sets()})\n"
        f"HAVING (GROUPING(department) = 1 OR department <> '') AND ({nonzero})"
    )


async def rebuild_cells(uow: UnitOfWork) -> None:
    """Replace every cell by the sums of the counted facts (in the caller's transaction)."""
    await uow.execute(sa.delete(rate_cells))
    for grain in GRAINS:
        await uow.execute(sa.text(rebuild_cells_sql(grain)))
