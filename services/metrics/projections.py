"""What each event changes in metrics: upsert the fact, then move its counters into the cells.

The events of one ticket come from three topics, so in any order: a reply before its work
order, a callback before its ticket. Each handler therefore starts from the ticket's row
(created empty when the ticket is not known yet) and upserts its own fact with whatever is
known. A fact's counters go into the cells only once its ticket is known (`counted`); when
the ticket arrives, it takes every waiting fact into the cells with it. A late fact that
changes a counted row (a work order's creation after its reply, a ticket's first replied
work order) adds the difference of the row's counters. So once all facts are in, the cells
are the same whatever the order, and each fact is counted once: facts are keyed by their
own ids, and a resent fact changes nothing.

The handlers of all replicas take one transaction-level advisory lock first: every event
changes the same few all-time cells, and without one writer at a time two replicas' batches
would lock those rows in different orders and deadlock.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy import RowMapping
from sqlalchemy.dialects.postgresql import insert as pg_insert

from services.metrics.cube import CellDeltas, Dims
from services.metrics.models import callback_facts, ticket_facts, transfer_facts, work_order_facts
from services.metrics.rates import (
    CALLBACK_COUNTERS,
    TICKET_COUNTERS,
    TRANSFER_COUNTERS,
    WORK_ORDER_COUNTERS,
    ZERO,
    Counts,
    TicketFacts,
    callback_counts,
    ticket_counts,
    transfer_counts,
    wait_of,
    work_order_counts,
)
from services.metrics.unit_of_work import MetricsTransaction
from shared.events import (
    CallbackLogged,
    TicketSubmitted,
    TransferAttempted,
    WorkOrderCreated,
    WorkOrderReplied,
)
from shared.projections import Projections

Row = RowMapping

projections = Projections[MetricsTransaction]()
"""`hotline.workorder.overdue.v1` is not handled: "past due" is computed from `due_at` at
query time, so the event adds nothing the rates need."""

_ONE_WRITER = sa.text(
    "SELECT pg_advisory_xact_lock(hashtext('hotline-metrics-cells:' || current_schema()))"
)

_CHILD_FACTS = (
    (transfer_facts, TRANSFER_COUNTERS, True),
    (work_order_facts, WORK_ORDER_COUNTERS, True),
    (callback_facts, CALLBACK_COUNTERS, False),
)
"""Facts waiting for their ticket: table, its counters, whether they are per department."""


class UnusableEvent(ValueError):
    """An event that can never be counted (it is dead-lettered with this message)."""


def _require(**values: str) -> None:
    for name, value in values.items():
        if not value:
            raise UnusableEvent(f"{name} must not be empty")


async def _ticket_row(tx: MetricsTransaction, ticket_id: str) -> Row:
    """The ticket's facts row, locked; an empty one (not counted) if the ticket is new."""
    if not tx.holds_writer_lock:
        await tx.execute(_ONE_WRITER)
        tx.holds_writer_lock = True
    insert = pg_insert(ticket_facts).values(ticket_id=ticket_id)
    statement = insert.on_conflict_do_update(
        index_elements=["ticket_id"], set_={"ticket_id": insert.excluded.ticket_id}
    ).returning(*ticket_facts.c)
    return (await tx.execute(statement)).mappings().one()


def _dims(ticket: Row) -> Dims | None:
    if not ticket["counted"]:
        return None
    return Dims(ticket["city"], ticket["channel"], ticket["scenario"], ticket["submitted_at"])


def _dims_values(dims: Dims | None) -> dict[str, Any]:
    """The columns that attribute a child fact to its ticket (or say it waits for it)."""
    if dims is None:
        return {"counted": False}
    return {
        "counted": True,
        "city": dims.city,
        "channel": dims.channel,
        "scenario": dims.scenario,
        "submitted_at": dims.submitted_at,
    }


async def _ticket_changed(
    tx: MetricsTransaction,
    ticket: Row,
    deltas: CellDeltas,
    *,
    replied_work_orders: int = 0,
    callbacks_logged: int = 0,
) -> None:
    """A child fact changed what the ticket counts (callback eligibility): store and move it."""
    replied = ticket["replied_work_orders"] + replied_work_orders
    callbacks = ticket["callbacks_logged"] + callbacks_logged
    facts = None
    if ticket["counted"]:
        facts = TicketFacts(
            channel=ticket["channel"],
            answered=ticket["answered"],
            wait_seconds=ticket["wait_seconds"],
            resolved_at_first_contact=ticket["resolved_at_first_contact"],
            replied_work_orders=replied,
            callbacks_logged=callbacks,
        )
    counts = ticket_counts(facts)
    await tx.execute(
        sa.update(ticket_facts)
        .where(ticket_facts.c.ticket_id == ticket["ticket_id"])
        .values(
            replied_work_orders=replied,
            callbacks_logged=callbacks,
            **counts.values(TICKET_COUNTERS),
        )
    )
    dims = _dims(ticket)
    if dims is not None:
        deltas.add(dims, None, counts - Counts.of(ticket, TICKET_COUNTERS))


@projections.on(TicketSubmitted)
async def record_ticket(tx: MetricsTransaction, event: TicketSubmitted) -> None:
    """Count the ticket, and every fact of it that arrived before it."""
    _require(city=event.city, scenario=event.scenario)
    ticket = await _ticket_row(tx, event.ticket_id)
    if ticket["counted"]:
        return  # the same ticket submitted again under another event id: keep the first
    dims = Dims(event.city, event.channel, event.scenario, event.submitted_at)
    wait = wait_of(event.call.wait_seconds)
    counts = ticket_counts(
        TicketFacts(
            channel=event.channel,
            answered=event.call.answered,
            wait_seconds=wait,
            resolved_at_first_contact=event.call.resolved_at_first_contact,
            replied_work_orders=ticket["replied_work_orders"],
            callbacks_logged=ticket["callbacks_logged"],
        )
    )
    await tx.execute(
        sa.update(ticket_facts)
        .where(ticket_facts.c.ticket_id == event.ticket_id)
        .values(
            **_dims_values(dims),
            answered=event.call.answered,
            wait_seconds=wait,
            resolved_at_first_contact=event.call.resolved_at_first_contact,
            **counts.values(TICKET_COUNTERS),
        )
    )
    deltas = tx.cells
    deltas.add(dims, None, counts)
    for table, names, per_department in _CHILD_FACTS:
        waiting = await tx.execute(
            sa.update(table)
            .where(table.c.ticket_id == event.ticket_id, table.c.counted.is_(False))
            .values(**_dims_values(dims))
            .returning(*[table.c[name] for name in names], *_department_column(table))
        )
        for child in waiting.mappings():
            department = child["department"] if per_department else None
            deltas.add(dims, department, Counts.of(child, names))


def _department_column(table: sa.Table) -> list[sa.ColumnElement[Any]]:
    return [table.c.department] if "department" in table.c else []


@projections.on(TransferAttempted)
async def record_transfer(tx: MetricsTransaction, event: TransferAttempted) -> None:
    """Count a transfer or three-way call once (by `transfer_id`)."""
    _require(department=event.department)
    ticket = await _ticket_row(tx, event.ticket_id)
    dims = _dims(ticket)
    counts = transfer_counts(event.mode, event.connected)
    inserted = await tx.insert_once(
        transfer_facts,
        "transfer_id",
        transfer_id=event.transfer_id,
        ticket_id=event.ticket_id,
        department=event.department,
        mode=event.mode,
        connected=event.connected,
        at=event.at,
        **_dims_values(dims),
        **counts.values(TRANSFER_COUNTERS),
    )
    if not inserted or dims is None:
        return
    deltas = tx.cells
    deltas.add(dims, event.department, counts)


async def _work_order_row(tx: MetricsTransaction, work_order_id: str) -> Row | None:
    result = await tx.execute(
        sa.select(work_order_facts)
        .where(work_order_facts.c.work_order_id == work_order_id)
        .with_for_update()
    )
    return result.mappings().first()


@projections.on(WorkOrderCreated)
async def record_work_order(tx: MetricsTransaction, event: WorkOrderCreated) -> None:
    """Count a work order once its creation (and so its `due_at`) is known."""
    _require(department=event.department)
    ticket = await _ticket_row(tx, event.ticket_id)
    dims = _dims(ticket)
    current = await _work_order_row(tx, event.work_order_id)
    if current is not None and current["created_known"]:
        return
    counts = work_order_counts(
        event.due_at,
        current["first_reply_at"] if current else None,
        current["first_reply_quality"] if current else None,
    )
    values = {
        "ticket_id": event.ticket_id,
        "department": event.department,
        "created_known": True,
        "created_at": event.created_at,
        "due_at": event.due_at,
        **_dims_values(dims),
        **counts.values(WORK_ORDER_COUNTERS),
    }
    if current is None:
        await tx.execute(
            sa.insert(work_order_facts).values(work_order_id=event.work_order_id, **values)
        )
    else:
        await tx.execute(
            sa.update(work_order_facts)
            .where(work_order_facts.c.work_order_id == event.work_order_id)
            .values(**values)
        )
    if dims is None:
        return
    before = Counts.of(current, WORK_ORDER_COUNTERS) if current is not None else ZERO
    deltas = tx.cells
    # Before its creation was known a work order counted nothing, under any department.
    deltas.add(dims, event.department, counts - before)


@projections.on(WorkOrderReplied)
async def record_reply(tx: MetricsTransaction, event: WorkOrderReplied) -> None:
    """Count a work order's first reply; later replies do not change the rates.

    Should two different replies both claim to be first, the earliest (then the lowest
    `reply_id`) wins, so the result does not depend on their order.
    """
    if not event.first:
        return
    _require(department=event.department)
    ticket = await _ticket_row(tx, event.ticket_id)
    dims = _dims(ticket)
    current = await _work_order_row(tx, event.work_order_id)
    had_reply = current is not None and current["first_reply_at"] is not None
    if (
        current is not None
        and had_reply
        and (current["first_reply_at"], current["first_reply_id"]) <= (event.at, event.reply_id)
    ):
        return
    counts = work_order_counts(current["due_at"] if current else None, event.at, event.quality)
    values = {
        "first_reply_id": event.reply_id,
        "first_reply_at": event.at,
        "first_reply_quality": event.quality,
        **counts.values(WORK_ORDER_COUNTERS),
    }
    deltas = tx.cells
    if current is None:
        # The reply came first: keep it until the work order's creation arrives.
        await tx.execute(
            sa.insert(work_order_facts).values(
                work_order_id=event.work_order_id,
                ticket_id=event.ticket_id,
                department=event.department,
                created_known=False,
                **_dims_values(dims),
                **values,
            )
        )
    else:
        await tx.execute(
            sa.update(work_order_facts)
            .where(work_order_facts.c.work_order_id == event.work_order_id)
            .values(**values)
        )
        if dims is not None:
            before = Counts.of(current, WORK_ORDER_COUNTERS)
            deltas.add(dims, current["department"], counts - before)
    if not had_reply:
        await _ticket_changed(tx, ticket, deltas, replied_work_orders=1)


@projections.on(CallbackLogged)
async def record_callback(tx: MetricsTransaction, event: CallbackLogged) -> None:
    """Count a callback once (by `callback_id`), and the ticket as called back."""
    ticket = await _ticket_row(tx, event.ticket_id)
    dims = _dims(ticket)
    counts = callback_counts(event.reached, event.satisfaction)
    inserted = await tx.insert_once(
        callback_facts,
        "callback_id",
        callback_id=event.callback_id,
        ticket_id=event.ticket_id,
        reached=event.reached,
        satisfaction=event.satisfaction,
        at=event.at,
        **_dims_values(dims),
        **counts.values(CALLBACK_COUNTERS),
    )
    if not inserted:
        return
    deltas = tx.cells
    if dims is not None:
        deltas.add(dims, None, counts)
    await _ticket_changed(tx, ticket, deltas, callbacks_logged=1)
