"""A batch of events applied to the facts in memory: from the rows the events touch, as they
were before the batch, to the rows after it, and the cell changes between the two.

The events of one ticket come from three topics, so in any order: a reply before its work
order, a callback before its ticket. Each event changes its own fact with whatever is known:
- a ticket's event fills its row (the first one wins; a ticket seen again changes nothing);
- a transfer or a callback is a new row, once per id (a resent fact changes nothing);
- a work order's creation and its first reply fill the one row of the work order, whichever
  comes first; should two replies both claim to be first, the earliest (then the lowest
  `reply_id`) wins;
- a ticket's first replied work order and its callbacks change what it counts (callback
  eligibility, reopen eligibility), so they are counted on the ticket's row too;
- a reopen (重办) sets the ticket's `reopened_at` to the earliest reopen's time: a reopen
  seen again, under any event id, changes nothing.

A fact's counters are a function of its row alone (`rates`), and a fact is in the cells once
its ticket is known (`counted`, with the ticket's dimensions copied onto it). So the cells
change by exactly (each touched row's contribution after) - (its contribution before), and
once all facts are in, the cells are the same whatever the order of the events and however
they were cut into batches. Nothing here reads the database: `fact_store` loads the rows and
writes the changed ones back, which keeps this part a plain function for the unit tests.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from services.metrics.cube import CellDeltas, Dims
from services.metrics.rates import (
    CALLBACK_COUNTERS,
    TICKET_COUNTERS,
    TRANSFER_COUNTERS,
    WORK_ORDER_COUNTERS,
    Counts,
    TicketFacts,
    callback_counts,
    ticket_counts,
    transfer_counts,
    wait_of,
    work_order_counts,
)
from shared.events import (
    CallbackLogged,
    Event,
    TicketReopened,
    TicketSubmitted,
    TransferAttempted,
    WorkOrderCreated,
    WorkOrderReplied,
)

Kind = Literal["ticket", "transfer", "work_order", "callback"]
KINDS: Final[tuple[Kind, ...]] = ("ticket", "transfer", "work_order", "callback")
"""Also the order rows are locked and written in, the same in every transaction."""

Row = dict[str, Any]

COUNTERS_OF: Final[dict[Kind, tuple[str, ...]]] = {
    "ticket": TICKET_COUNTERS,
    "transfer": TRANSFER_COUNTERS,
    "work_order": WORK_ORDER_COUNTERS,
    "callback": CALLBACK_COUNTERS,
}
PER_DEPARTMENT_KINDS: Final = frozenset({"transfer", "work_order"})
"""Kinds whose counters also go to their department's cells."""
DIMENSION_COLUMNS: Final = ("city", "channel", "scenario", "submitted_at")


class UnusableEvent(ValueError):
    """An event that can never be counted (it is dead-lettered with this message)."""


def require(**values: str) -> None:
    """UnusableEvent unless every named value is non-empty."""
    for name, value in values.items():
        if not value:
            raise UnusableEvent(f"{name} must not be empty")


@dataclass
class FactRows:
    """Rows by kind and id: those the batch touches, with every column of their table."""

    rows: dict[Kind, dict[str, Row]] = field(default_factory=lambda: {k: {} for k in KINDS})

    def copy(self) -> FactRows:
        """An independent copy (rows are mutated in place)."""
        return FactRows({kind: _copied(rows) for kind, rows in self.rows.items()})

    def __getitem__(self, kind: Kind) -> dict[str, Row]:
        return self.rows[kind]


def _copied(rows: dict[str, Row]) -> dict[str, Row]:
    return {ident: dict(row) for ident, row in rows.items()}


@dataclass(frozen=True)
class BatchChanges:
    """What a batch changes: rows to write, by kind, and the cell deltas between."""

    written: dict[Kind, list[Row]]
    """Changed and new rows, sorted by id (a stable lock order)."""
    new_ids: dict[Kind, set[str]]
    """The ids of rows that did not exist before the batch."""
    cells: CellDeltas


def arriving_tickets(events: Iterable[Event], tickets: Mapping[str, Row]) -> list[str]:
    """The tickets whose own event is among `events` and that were not counted before: their
    waiting facts must be loaded too (`Batch` counts them with the ticket)."""
    return sorted(
        {
            event.ticket_id
            for event in events
            if isinstance(event, TicketSubmitted) and not tickets[event.ticket_id]["counted"]
        }
    )


def empty_row(kind: Kind, ident: str, columns: Iterable[str]) -> Row:
    """A row that records nothing yet: every column None, flags False, counters 0."""
    row: Row = dict.fromkeys(columns)
    row.update({"counted": False}, **dict.fromkeys(COUNTERS_OF[kind], 0))
    if kind == "ticket":
        row.update(ticket_id=ident, replied_work_orders=0, callbacks_logged=0, answered_callbacks=0)
    elif kind == "work_order":
        row.update(work_order_id=ident, created_known=False)
    return row


class Batch:
    """Applies events to the loaded rows; `changes()` then says what to write.

    `loaded` must hold every ticket the events name (an empty row for a new one), every
    existing work order, transfer and callback they name, and the not-yet-counted facts of
    every ticket whose own event is in the batch and was not counted before.
    """

    def __init__(self, loaded: FactRows, columns: Mapping[Kind, tuple[str, ...]]) -> None:
        self._before = loaded.copy()
        self._rows = loaded
        self._columns = columns

    def apply(self, event: Event) -> None:
        """Change the rows as `event` says (an event of no fact's type changes nothing)."""
        if isinstance(event, TicketSubmitted):
            self._ticket(event)
        elif isinstance(event, TransferAttempted):
            self._once("transfer", event.transfer_id, event.ticket_id, _transfer_values(event))
        elif isinstance(event, WorkOrderCreated):
            self._work_order(event)
        elif isinstance(event, WorkOrderReplied):
            self._reply(event)
        elif isinstance(event, CallbackLogged) and self._once(
            "callback", event.callback_id, event.ticket_id, _callback_values(event)
        ):
            ticket = self._rows["ticket"][event.ticket_id]
            ticket["callbacks_logged"] += 1
            if event.reached and event.satisfaction is not None:
                ticket["answered_callbacks"] += 1
        elif isinstance(event, TicketReopened):
            ticket = self._rows["ticket"][event.ticket_id]
            if ticket["reopened_at"] is None or event.at < ticket["reopened_at"]:
                ticket["reopened_at"] = event.at

    def _ticket(self, event: TicketSubmitted) -> None:
        ticket = self._rows["ticket"][event.ticket_id]
        if ticket["counted"]:
            return  # the same ticket submitted again under another event id: keep the first
        ticket.update(
            counted=True,
            city=event.city,
            channel=event.channel,
            scenario=event.scenario,
            submitted_at=event.submitted_at,
            category=event.category,
            evaluator=event.evaluator,
            citizen_phone_hash=event.citizen_phone_hash,
            answered=event.call.answered,
            wait_seconds=wait_of(event.call.wait_seconds),
            resolved_at_first_contact=event.call.resolved_at_first_contact,
        )

    def _once(self, kind: Kind, ident: str, ticket_id: str, values: Row) -> bool:
        """Add a fact unless one with its id exists; True if added."""
        if ident in self._rows[kind]:
            return False
        row = empty_row(kind, ident, self._columns[kind])
        row.update(values, ticket_id=ticket_id)
        self._rows[kind][ident] = row
        return True

    def _work_order(self, event: WorkOrderCreated) -> None:
        row = self._work_order_row(event.work_order_id, event.ticket_id)
        if row["created_known"]:
            return
        row.update(
            ticket_id=event.ticket_id,
            department=event.department,
            created_known=True,
            created_at=event.created_at,
            due_at=event.due_at,
        )

    def _reply(self, event: WorkOrderReplied) -> None:
        if not event.first:
            return
        known = event.work_order_id in self._rows["work_order"]
        row = self._work_order_row(event.work_order_id, event.ticket_id)
        had_reply = row["first_reply_at"] is not None
        if had_reply and (row["first_reply_at"], row["first_reply_id"]) <= (
            event.at,
            event.reply_id,
        ):
            return
        if not known:
            row["department"] = event.department  # until the creation says otherwise
        row.update(
            first_reply_id=event.reply_id,
            first_reply_at=event.at,
            first_reply_quality=event.quality,
        )
        if not had_reply:
            self._rows["ticket"][event.ticket_id]["replied_work_orders"] += 1

    def _work_order_row(self, work_order_id: str, ticket_id: str) -> Row:
        rows = self._rows["work_order"]
        if work_order_id not in rows:
            row = empty_row("work_order", work_order_id, self._columns["work_order"])
            rows[work_order_id] = {**row, "ticket_id": ticket_id}
        return rows[work_order_id]

    def changes(self) -> BatchChanges:
        """The rows to write and the cell deltas, with every fact's counters recomputed."""
        tickets = self._rows["ticket"]
        for kind in KINDS:
            for row in self._rows[kind].values():
                if kind != "ticket":
                    _attach(row, tickets.get(row["ticket_id"]))
                row.update(_counts_of(kind, row).values(COUNTERS_OF[kind]))
        written: dict[Kind, list[Row]] = {}
        new_ids: dict[Kind, set[str]] = {}
        cells = CellDeltas()
        for kind in KINDS:
            before = self._before[kind]
            changed = []
            for ident, row in sorted(self._rows[kind].items()):
                old = before.get(ident)
                if old == row:
                    continue
                changed.append(row)
                if old is not None:
                    _contribute(cells, kind, old, -1)
                _contribute(cells, kind, row, +1)
            written[kind] = changed
            new_ids[kind] = {_id_of(kind, row) for row in changed} - before.keys()
        return BatchChanges(written, new_ids, cells)


def _transfer_values(event: TransferAttempted) -> Row:
    return {
        "transfer_id": event.transfer_id,
        "department": event.department,
        "mode": event.mode,
        "connected": event.connected,
        "at": event.at,
    }


def _callback_values(event: CallbackLogged) -> Row:
    return {
        "callback_id": event.callback_id,
        "reached": event.reached,
        "satisfaction": event.satisfaction,
        "at": event.at,
    }


def _attach(row: Row, ticket: Row | None) -> None:
    """Copy the ticket's dimensions onto its fact once the ticket is known."""
    if ticket is not None and ticket["counted"] and not row["counted"]:
        row["counted"] = True
        row.update({name: ticket[name] for name in DIMENSION_COLUMNS})


def _counts_of(kind: Kind, row: Row) -> Counts:
    """A fact's counters, from its row alone."""
    if kind == "ticket":
        if not row["counted"]:
            return ticket_counts(None)
        return ticket_counts(
            TicketFacts(
                channel=row["channel"],
                answered=row["answered"],
                wait_seconds=row["wait_seconds"],
                resolved_at_first_contact=row["resolved_at_first_contact"],
                replied_work_orders=row["replied_work_orders"],
                callbacks_logged=row["callbacks_logged"],
                answered_callbacks=row["answered_callbacks"],
                reopened=row["reopened_at"] is not None,
            )
        )
    if kind == "transfer":
        return transfer_counts(row["mode"], row["connected"])
    if kind == "work_order":
        return work_order_counts(row["due_at"], row["first_reply_at"], row["first_reply_quality"])
    return callback_counts(row["reached"], row["satisfaction"])


def _contribute(cells: CellDeltas, kind: Kind, row: Row, sign: int) -> None:
    if not row["counted"]:
        return
    counts = Counts.of(row, COUNTERS_OF[kind])
    dims = Dims(row["city"], row["channel"], row["scenario"], row["submitted_at"])
    department = row["department"] if kind in PER_DEPARTMENT_KINDS else None
    cells.add(dims, department, counts if sign > 0 else Counts() - counts)


ID_COLUMN: Final[dict[Kind, str]] = {
    "ticket": "ticket_id",
    "transfer": "transfer_id",
    "work_order": "work_order_id",
    "callback": "callback_id",
}


def _id_of(kind: Kind, row: Row) -> str:
    ident: str = row[ID_COLUMN[kind]]
    return ident
