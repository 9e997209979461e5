"""The facts of a batch in the database: read the rows its events touch, write back the ones
they changed. A few statements per batch, whatever its size: each takes a column of values
per parameter (`unnest`), so it is prepared once and not compiled again per number of rows.

Locks are taken in one order in every transaction (tickets, then work orders, each sorted by
id), and every fact is written only under its ticket's row lock, so replicas applying events
of the same tickets wait for one another and never deadlock. A replica that finds a fact
inserted by another one meanwhile (the same transfer under a new event id, consumed by two
members during a rebalance) raises `Transient`: the batch is rolled back and applied again,
and then sees that fact.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from services.metrics.batch import (
    ID_COLUMN,
    KINDS,
    Batch,
    FactRows,
    Kind,
    Row,
    arriving_tickets,
)
from services.metrics.cube import apply_deltas
from services.metrics.models import callback_facts, ticket_facts, transfer_facts, work_order_facts
from shared.db import Transaction
from shared.events import (
    CallbackLogged,
    Event,
    TransferAttempted,
    WorkOrderCreated,
    WorkOrderReplied,
)
from shared.retry import Transient

TABLES: Final[dict[Kind, sa.Table]] = {
    "ticket": ticket_facts,
    "transfer": transfer_facts,
    "work_order": work_order_facts,
    "callback": callback_facts,
}
COLUMNS: Final[dict[Kind, tuple[str, ...]]] = {
    kind: tuple(column.name for column in table.c if column.computed is None)
    for kind, table in TABLES.items()
}
_DIALECT: Final = postgresql.dialect()  # type: ignore[no-untyped-call]


def _array_of(table: sa.Table, name: str) -> str:
    """The array type a column's values are bound as. Strings as TEXT: an explicit cast to
    VARCHAR(n) would cut a longer value silently, while storing TEXT into the column
    refuses it (the event is then dead-lettered, never counted under a cut name)."""
    column_type = table.c[name].type
    if isinstance(column_type, sa.String):
        return "TEXT[]"
    return f"{column_type.compile(dialect=_DIALECT)}[]"


_LOCK_TICKETS: Final = sa.text(
    "INSERT INTO ticket_facts (ticket_id)\n"
    "SELECT id FROM unnest(CAST(:ids AS TEXT[])) AS id ORDER BY id\n"
    "ON CONFLICT (ticket_id) DO UPDATE SET ticket_id = EXCLUDED.ticket_id\n"
    "RETURNING *"
)
"""Every ticket of the batch, locked in id order; an empty (not counted) row for a new one."""


def _by_ids(kind: Kind, *, lock: bool) -> sa.TextClause:
    table, key = TABLES[kind], ID_COLUMN[kind]
    return sa.text(
        f"SELECT * FROM {table.name} WHERE {key} = ANY(CAST(:ids AS {_array_of(table, key)}))"
        f" ORDER BY {key}" + (" FOR UPDATE" if lock else "")
    )


def _waiting(kind: Kind) -> sa.TextClause:
    table = TABLES[kind]
    return sa.text(
        f"SELECT * FROM {table.name} WHERE NOT counted"
        " AND ticket_id = ANY(CAST(:ids AS TEXT[]))"
        f" ORDER BY {ID_COLUMN[kind]}"
    )


_BY_IDS: Final = {kind: _by_ids(kind, lock=kind == "work_order") for kind in KINDS[1:]}
_WAITING: Final = {kind: _waiting(kind) for kind in KINDS[1:]}


def _upsert(kind: Kind) -> sa.TextClause:
    """Write whole rows; RETURNING says which were inserted (`xmax = 0`) and which updated."""
    table, key, columns = TABLES[kind], ID_COLUMN[kind], COLUMNS[kind]
    arrays = ", ".join(f"CAST(:{name} AS {_array_of(table, name)})" for name in columns)
    updates = ", ".join(f"{name} = EXCLUDED.{name}" for name in columns if name != key)
    return sa.text(
        f"INSERT INTO {table.name} ({', '.join(columns)})\n"
        f"SELECT * FROM unnest({arrays})\n"
        f"ON CONFLICT ({key}) DO UPDATE SET {updates}\n"
        f"RETURNING {key}, (xmax = 0) AS inserted"
    )


_UPSERT: Final = {kind: _upsert(kind) for kind in KINDS}


class FactRaced(Transient):
    """Another transaction inserted a fact this batch took for new: apply the batch again."""


def _ids(events: Iterable[Event], *types: type[Event], attribute: str) -> list[str]:
    return sorted({getattr(event, attribute) for event in events if isinstance(event, types)})


async def load(tx: Transaction, events: Sequence[Event]) -> FactRows:
    """Read (and lock) every row the events can change: what `Batch` needs."""
    loaded = FactRows()
    tickets = await tx.execute(_LOCK_TICKETS, {"ids": _ids(events, Event, attribute="ticket_id")})
    loaded["ticket"].update(_keyed("ticket", tickets.mappings()))
    named = {
        "work_order": _ids(events, WorkOrderCreated, WorkOrderReplied, attribute="work_order_id"),
        "transfer": _ids(events, TransferAttempted, attribute="transfer_id"),
        "callback": _ids(events, CallbackLogged, attribute="callback_id"),
    }
    arriving = arriving_tickets(events, loaded["ticket"])
    for kind in ("work_order", "transfer", "callback"):
        if named[kind]:
            rows = await tx.execute(_BY_IDS[kind], {"ids": named[kind]})
            loaded[kind].update(_keyed(kind, rows.mappings()))
        if arriving:
            rows = await tx.execute(_WAITING[kind], {"ids": arriving})
            loaded[kind].update(_keyed(kind, rows.mappings()))
    return loaded


def _keyed(kind: Kind, rows: Iterable[Any]) -> dict[str, Row]:
    key = ID_COLUMN[kind]
    return {row[key]: {name: row[name] for name in COLUMNS[kind]} for row in rows}


async def apply_events(tx: Transaction, events: Sequence[Event]) -> None:
    """Apply the events set-wise: load their rows, change them in memory, write back the
    changed ones and the cell deltas."""
    if not events:
        return
    batch = Batch(await load(tx, events), COLUMNS)
    for event in events:
        batch.apply(event)
    changes = batch.changes()
    for kind in KINDS:
        rows = changes.written[kind]
        if not rows:
            continue
        parameters = {name: [row[name] for row in rows] for name in COLUMNS[kind]}
        result = await tx.execute(_UPSERT[kind], parameters)
        key = ID_COLUMN[kind]
        inserted = {row[key] for row in result.mappings() if row["inserted"]}
        if changes.new_ids[kind] - inserted:
            raise FactRaced(f"another transaction inserted the same {kind} facts meanwhile")
    await apply_deltas(tx, changes.cells)
