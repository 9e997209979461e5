"""The aggregate cells: which cells a fact's counters go to, applying changes to them, and
rebuilding them from the facts (`windows` says which cells answer a time window).

A fact of a ticket submitted at `t` in city C, channel H, scenario S adds its counters to
the cells of three periods (all time, the month of `t`, the day of `t`, in Asia/Shanghai)
times every grouping set of (C, H, S): each dimension either its value or ALL. Counters
of a department (transfers, work orders) also go to that department's cells; those of a
ticket (calls, callbacks) only to department ALL. So `GET /rates` with any combination of
filters sums the rows of one grouping set, and a breakdown by one dimension reads one row
per group: at most (months + ~60 days) rows per group for a window, one with no window.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Final

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
from services.metrics.windows import ALL_TIME, GRAINS, Grain
from shared.db import Transaction
from shared.workdays import local_day


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
    just before the batch commits (`unit_of_work.MetricsUnitOfWork`)."""

    def __init__(self) -> None:
        self._deltas: dict[CellKey, Counts] = {}

    def merge(self, other: CellDeltas) -> None:
        """Take in the changes of an event whose savepoint succeeded."""
        for key, counts in other._deltas.items():
            self._deltas[key] = self._deltas.get(key, ZERO) + counts

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


async def apply_deltas(tx: Transaction, deltas: CellDeltas) -> None:
    """Add the collected changes to the cells (creating the cells that do not exist yet)."""
    rows = deltas.rows()
    if not rows:
        return
    columns = {name: [row[name] for row in rows] for name in _CELL_COLUMNS}
    await tx.execute(_UPSERT_CELLS.bindparams(**columns))


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


async def replace_cells(tx: Transaction) -> None:
    """Replace every cell by the sums of the counted facts (in the caller's transaction)."""
    await tx.execute(sa.delete(rate_cells))
    for grain in GRAINS:
        await tx.execute(sa.text(rebuild_cells_sql(grain)))
