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

import operator
import random
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Final, NamedTuple

import sqlalchemy as sa

from services.metrics.models import (
    ALL,
    CELL_DIMENSIONS,
    CELL_SHARDS,
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


def periods_of(day: date) -> tuple[tuple[Grain, date], ...]:
    """All time, the month and the day (Asia/Shanghai) of a fact's ticket: its cells' periods."""
    return (("all", ALL_TIME), ("month", day.replace(day=1)), ("day", day))


CELL_KEY_COLUMNS: Final = (*CELL_DIMENSIONS, "grain", "period")


class CellKey(NamedTuple):
    """The primary key of one cell (a tuple: cheap to hash and to sort)."""

    city: str
    channel: str
    scenario: str
    department: str
    grain: Grain
    period: date


def cell_keys(dims: Dims, department: str | None) -> list[CellKey]:
    """Every cell a fact goes to; `department` None for a ticket's own (and callback) counters."""
    day = local_day(dims.submitted_at)
    return _keys_of(dims.city, dims.channel, dims.scenario, department, day)


def _keys_of(
    city: str, channel: str, scenario: str, department: str | None, day: date
) -> list[CellKey]:
    departments = (ALL,) if department is None else (department, ALL)
    return [
        CellKey(city_key, channel_key, scenario_key, dept, grain, period)
        for grain, period in periods_of(day)
        for city_key in (city, ALL)
        for channel_key in (channel, ALL)
        for scenario_key in (scenario, ALL)
        for dept in departments
    ]


_Base = tuple[str, str, str, str | None, date]
"""A fact's own dimensions, department (None for ticket counters) and day: the facts of a
batch that share one add to the same cells, so they are summed first and spread once."""


class CellDeltas:
    """Changes to cells collected across a batch of events, then written in one statement
    (`apply_deltas`). Each fact is summed into its own dimensions and day first; only the
    sums are spread over the few dozen cells each goes to, as plain lists of numbers in
    `COUNTERS` order."""

    def __init__(self) -> None:
        self._bases: dict[_Base, list[Any]] = {}

    def add(self, dims: Dims, department: str | None, counts: Counts) -> None:
        """Add (or, negative, remove) `counts` in every cell of the fact."""
        values = counts.values().values()
        if not any(values):
            return
        base = (dims.city, dims.channel, dims.scenario, department, local_day(dims.submitted_at))
        sums = self._bases.get(base)
        if sums is None:
            self._bases[base] = list(values)
        else:
            for i, value in enumerate(values):
                sums[i] += value

    def _cells(self) -> dict[CellKey, list[Any]]:
        cells: dict[CellKey, list[Any]] = {}
        for base, sums in self._bases.items():
            changed = [(i, value) for i, value in enumerate(sums) if value]
            if not changed:
                continue
            for key in _keys_of(*base):
                cell = cells.get(key)
                if cell is None:
                    cells[key] = list(sums)
                    continue
                for i, value in changed:
                    cell[i] += value
        return cells

    def _changed(self) -> list[tuple[CellKey, list[Any]]]:
        changed = [(key, sums) for key, sums in self._cells().items() if any(sums)]
        return sorted(changed, key=operator.itemgetter(0))

    def rows(self) -> list[dict[str, Any]]:
        """One row per changed cell, in key order (a stable lock order)."""
        return [
            {**key._asdict(), **dict(zip(COUNTERS, sums, strict=True))}
            for key, sums in self._changed()
        ]

    def columns(self) -> dict[str, list[Any]]:
        """The changed cells as one list per column, in key order; empty if none changed."""
        changed = self._changed()
        if not changed:
            return {}
        keys = zip(*[key for key, _ in changed], strict=True)
        sums = zip(*[values for _, values in changed], strict=True)
        return {
            **{name: list(values) for name, values in zip(CELL_KEY_COLUMNS, keys, strict=True)},
            **{name: list(values) for name, values in zip(COUNTERS, sums, strict=True)},
        }


_CELL_COLUMNS: Final = (*CELL_KEY_COLUMNS, *COUNTERS)
_ARRAY_TYPES: Final = {
    **dict.fromkeys(CELL_DIMENSIONS, "text[]"),
    "grain": "text[]",
    "period": "date[]",
    **{name: "numeric[]" if name in DECIMAL_COUNTERS else "bigint[]" for name in COUNTERS},
}
_UPSERT_CELLS: Final = sa.text(
    f"INSERT INTO rate_cells (shard, {', '.join(_CELL_COLUMNS)})\n"
    "SELECT :shard, * FROM unnest("
    + ", ".join(f"CAST(:{name} AS {_ARRAY_TYPES[name]})" for name in _CELL_COLUMNS)
    + ")\n"
    f"ON CONFLICT ({', '.join(CELL_KEY_COLUMNS)}, shard) DO UPDATE SET "
    + ", ".join(f"{name} = rate_cells.{name} + EXCLUDED.{name}" for name in COUNTERS)
)
"""One statement for any number of cells (a column of values per parameter), so it is
prepared once; a multi-row VALUES would be compiled anew for every number of rows."""

_SHARD_LOCK: Final = "hashtext('hotline-metrics-cells:' || current_schema())"
_FREE_SHARD: Final = sa.text(
    f"SELECT shard FROM generate_series(0, {CELL_SHARDS - 1}) AS shard"
    f" WHERE pg_try_advisory_xact_lock({_SHARD_LOCK}, shard) LIMIT 1"
)
_WAIT_FOR_SHARD: Final = sa.text(f"SELECT pg_advisory_xact_lock({_SHARD_LOCK}, :shard)")
_ALL_SHARDS: Final = sa.text(
    f"SELECT count(pg_advisory_xact_lock({_SHARD_LOCK}, shard))"
    f" FROM generate_series(0, {CELL_SHARDS - 1}) AS shard"
)


async def lock_shard(tx: Transaction) -> int:
    """A shard of the cells no other transaction writes until this one ends.

    The first free one, so a single writer always writes shard 0 and readers sum as few
    rows as there were writers at once; with every shard taken, it waits for one.
    """
    free = (await tx.execute(_FREE_SHARD)).scalar()
    if free is not None:
        return int(free)
    shard = random.randrange(CELL_SHARDS)  # noqa: S311 (spreads waiters, not a secret)
    await tx.execute(_WAIT_FOR_SHARD, {"shard": shard})
    return shard


async def apply_deltas(tx: Transaction, deltas: CellDeltas) -> None:
    """Add the collected changes to the cells of a shard this transaction alone writes
    (creating the cells that do not exist yet there)."""
    columns = deltas.columns()
    if not columns:
        return
    await tx.execute(_UPSERT_CELLS, {"shard": await lock_shard(tx), **columns})


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
    """Replace every cell by the sums of the counted facts (in the caller's transaction),
    all in shard 0; it waits until no other transaction writes any shard."""
    await tx.execute(_ALL_SHARDS)
    await tx.execute(sa.delete(rate_cells))
    for grain in GRAINS:
        await tx.execute(sa.text(rebuild_cells_sql(grain)))
