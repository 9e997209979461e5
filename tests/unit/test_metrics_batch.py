"""The set-wise batch of metrics, in memory: the facts and cells it leaves do not depend on the
order of the events nor on how they were cut into batches, and equal the sums of the facts.

`MemoryFacts` plays the database the way `fact_store` does (load what the events touch,
write back what changed, add the cell deltas); the database itself is exercised by the
end-to-end tests of metrics.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.metrics.batch import (
    COUNTERS_OF,
    ID_COLUMN,
    KINDS,
    PER_DEPARTMENT_KINDS,
    Batch,
    FactRows,
    arriving_tickets,
    empty_row,
)
from services.metrics.cube import Dims, cell_keys
from services.metrics.fact_store import COLUMNS
from services.metrics.rates import ZERO, Counts
from shared.events import (
    CallbackLogged,
    CallOutcome,
    Event,
    TicketSubmitted,
    TransferAttempted,
    WorkOrderCreated,
    WorkOrderReplied,
)

T0 = datetime(2026, 3, 2, 1, 30, tzinfo=UTC)


class MemoryFacts:
    """The fact tables and the cells, as `fact_store` reads and writes them."""

    def __init__(self) -> None:
        self.tables: dict[str, dict[str, dict[str, Any]]] = {kind: {} for kind in KINDS}
        self.cells: dict[Any, Counts] = defaultdict(lambda: ZERO)

    def load(self, events: list[Event]) -> FactRows:
        loaded = FactRows()
        for event in events:
            ticket = self.tables["ticket"].setdefault(
                event.ticket_id, empty_row("ticket", event.ticket_id, COLUMNS["ticket"])
            )
            loaded["ticket"][event.ticket_id] = dict(ticket)
        for kind, attribute in (
            ("work_order", "work_order_id"),
            ("transfer", "transfer_id"),
            ("callback", "callback_id"),
        ):
            for event in events:
                ident = getattr(event, attribute, None)
                if ident is not None and ident in self.tables[kind]:
                    loaded[kind][ident] = dict(self.tables[kind][ident])
        arriving = arriving_tickets(events, loaded["ticket"])
        for kind in ("work_order", "transfer", "callback"):
            for ident, row in self.tables[kind].items():
                if row["ticket_id"] in arriving and not row["counted"]:
                    loaded[kind][ident] = dict(row)
        return loaded

    def apply(self, events: list[Event]) -> None:
        batch = Batch(self.load(events), COLUMNS)
        for event in events:
            batch.apply(event)
        changes = batch.changes()
        for kind in KINDS:
            for row in changes.written[kind]:
                self.tables[kind][row[ID_COLUMN[kind]]] = dict(row)
        for row in changes.cells.rows():
            key = tuple(row[name] for name in ("city", "channel", "scenario", "department"))
            key += (row["grain"], row["period"])
            self.cells[key] += Counts.of(row)

    def nonzero_cells(self) -> dict[Any, Counts]:
        return {key: counts for key, counts in self.cells.items() if not counts.is_zero()}


def summed_from_facts(tables: dict[str, dict[str, dict[str, Any]]]) -> dict[Any, Counts]:
    """The cells as a rebuild from the counted facts makes them."""
    cells: dict[Any, Counts] = defaultdict(lambda: ZERO)
    for kind in KINDS:
        for row in tables[kind].values():
            if not row["counted"]:
                continue
            dims = Dims(row["city"], row["channel"], row["scenario"], row["submitted_at"])
            department = row["department"] if kind in PER_DEPARTMENT_KINDS else None
            for key in cell_keys(dims, department):
                cell = (key.city, key.channel, key.scenario, key.department, key.grain, key.period)
                cells[cell] += Counts.of(row, COUNTERS_OF[kind])
    return {key: counts for key, counts in cells.items() if not counts.is_zero()}


CALL = {"answered": True, "wait_seconds": 12.5, "resolved_at_first_contact": False}


def ticket(ticket_id: str, city: str, channel: str, at: datetime, **call: Any) -> TicketSubmitted:
    return TicketSubmitted(
        ticket_id=ticket_id,
        city=city,
        channel=channel,
        scenario="heat",
        category="help",
        submitted_at=at,
        call=CallOutcome(
            **{"answered": True, "wait_seconds": 12.5, "resolved_at_first_contact": False, **call}
        ),
    )


def reply(work_order: str, reply_id: str, at: datetime, *, first: bool = True) -> WorkOrderReplied:
    return WorkOrderReplied(
        ticket_id="A",
        work_order_id=work_order,
        reply_id=reply_id,
        department="housing",
        quality="definite" if reply_id != "late-claim" else "partial",
        at=at,
        first=first,
    )


def work_order(ticket_id: str, work_order_id: str, department: str) -> WorkOrderCreated:
    return WorkOrderCreated(
        ticket_id=ticket_id,
        work_order_id=work_order_id,
        department=department,
        created_at=T0 + timedelta(hours=1),
        due_at=T0 + timedelta(days=3),
        due_working_days=3,
        calendar_source="chinesecalendar",
    )


def transfer(ticket_id: str, transfer_id: str, connected: bool) -> TransferAttempted:
    return TransferAttempted(
        ticket_id=ticket_id,
        transfer_id=transfer_id,
        department="housing",
        mode="transfer",
        connected=connected,
        at=T0,
    )


def callback(ticket_id: str, callback_id: str, satisfaction: str | None) -> CallbackLogged:
    return CallbackLogged(
        ticket_id=ticket_id,
        callback_id=callback_id,
        reached=satisfaction is not None,
        satisfaction=satisfaction,
        at=T0 + timedelta(days=5),
    )


EVENTS: list[Event] = [
    ticket("A", "沈阳", "phone", T0),
    ticket("A", "沈阳", "phone", T0),  # the same ticket sent again
    ticket("B", "大连", "online", T0 + timedelta(hours=20), answered=False, wait_seconds=None),
    ticket("C", "大连", "phone", T0 + timedelta(days=1), resolved_at_first_contact=True),
    transfer("A", "x1", False),
    transfer("A", "x1", False),  # the same transfer under another event id
    transfer("B", "x2", True),
    work_order("A", "w1", "housing"),
    work_order("B", "w2", "water"),
    work_order("D", "w3", "water"),  # its ticket never arrives: never counted
    reply("w1", "late-claim", T0 + timedelta(days=4)),  # late; an earlier first reply wins
    reply("w1", "early", T0 + timedelta(days=2)),
    reply("w1", "second", T0 + timedelta(days=2, hours=1), first=False),
    callback("A", "c1", "satisfied"),
    callback("A", "c2", None),
    callback("B", "c3", "unsatisfied"),
]


def one_at_a_time() -> MemoryFacts:
    facts = MemoryFacts()
    for event in EVENTS:
        facts.apply([event])
    return facts


def test_the_cells_equal_the_sums_of_the_counted_facts():
    facts = one_at_a_time()
    assert facts.nonzero_cells() == summed_from_facts(facts.tables)
    all_time = facts.cells[("", "", "", "", "all", next(iter(facts.cells))[5])]
    assert all_time.tickets == 3
    assert (all_time.transfers, all_time.transfers_failed) == (2, 1)
    assert all_time.work_orders == 2  # w3 waits for ticket D
    assert (all_time.replied_definite, all_time.replied_on_time_definite) == (1, 1)
    assert all_time.replied_partial == 0  # the later claim lost to the earlier reply
    assert (all_time.callbacks, all_time.callbacks_reached, all_time.callbacks_satisfied) == (
        3,
        2,
        1,
    )
    assert all_time.phone_wait_seconds == Decimal("25.0")  # A and C waited 12.5 s each
    assert facts.tables["work_order"]["w1"]["first_reply_id"] == "early"
    assert facts.tables["ticket"]["A"]["callbacks_logged"] == 2
    assert not facts.tables["work_order"]["w3"]["counted"]


@settings(max_examples=150, deadline=None)
@given(order=st.permutations(EVENTS), cuts=st.lists(st.integers(1, 6), min_size=1))
def test_order_and_batching_change_nothing(order, cuts):
    expected = one_at_a_time()
    facts = MemoryFacts()
    position, sizes = 0, iter(cuts * len(EVENTS))
    while position < len(order):
        size = next(sizes)
        facts.apply(list(order[position : position + size]))
        position += size
    assert facts.tables == expected.tables
    assert facts.nonzero_cells() == expected.nonzero_cells()


def test_a_batch_of_nothing_new_writes_nothing():
    facts = one_at_a_time()
    batch = Batch(facts.load(EVENTS), COLUMNS)
    for event in EVENTS:
        batch.apply(event)
    changes = batch.changes()
    assert all(rows == [] for rows in changes.written.values())
    assert changes.cells.rows() == []


def test_a_fact_before_its_ticket_waits_then_counts_with_it():
    facts = MemoryFacts()
    facts.apply([transfer("E", "x9", False), callback("E", "c9", "satisfied")])
    assert facts.nonzero_cells() == {}
    assert not facts.tables["transfer"]["x9"]["counted"]
    facts.apply([ticket("E", "沈阳", "online", T0)])
    assert facts.tables["transfer"]["x9"]["city"] == "沈阳"
    cells = facts.nonzero_cells()
    assert cells == summed_from_facts(facts.tables)
    department_cells = [key for key in cells if key[3] == "housing"]
    assert department_cells
    assert all(cells[key].transfers_failed == 1 for key in department_cells)


@pytest.mark.parametrize("cut", [1, 2, len(EVENTS)])
def test_new_ids_are_the_rows_the_batch_creates(cut):
    facts = MemoryFacts()
    facts.apply(EVENTS[:cut])
    batch = Batch(facts.load(EVENTS), COLUMNS)
    for event in EVENTS:
        batch.apply(event)
    changes = batch.changes()
    for kind in KINDS:
        written = {row[ID_COLUMN[kind]] for row in changes.written[kind]}
        assert changes.new_ids[kind] == written - facts.tables[kind].keys()
