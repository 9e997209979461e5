"""What each event changes in metrics: checked here, applied set-wise per batch.

A handler only checks that its event can be counted and queues it on the batch's
transaction; the unit of work applies the queued events together when the batch is flushed
(`fact_store.apply_events`, with the rules in `batch`): a few statements per batch instead
of several per event. An event whose handler raises `batch.UnusableEvent` is dead-lettered.
"""

from __future__ import annotations

from services.metrics.batch import require
from services.metrics.unit_of_work import MetricsTransaction
from shared.events import (
    CallbackLogged,
    TicketReopened,
    TicketSubmitted,
    TransferAttempted,
    WorkOrderCreated,
    WorkOrderDueSoon,
    WorkOrderOverdue,
    WorkOrderReplied,
)
from shared.projections import Projections

projections = Projections[MetricsTransaction]()
"""Every event is also kept in its ticket's history (`history`)."""


@projections.on(TicketSubmitted)
async def record_ticket(tx: MetricsTransaction, event: TicketSubmitted) -> None:
    """Count the ticket, and every fact of it that arrived before it."""
    require(city=event.city, scenario=event.scenario)
    tx.queue(event)


@projections.on(TransferAttempted)
async def record_transfer(tx: MetricsTransaction, event: TransferAttempted) -> None:
    """Count a transfer or three-way call once (by `transfer_id`)."""
    require(department=event.department)
    tx.queue(event)


@projections.on(WorkOrderCreated)
async def record_work_order(tx: MetricsTransaction, event: WorkOrderCreated) -> None:
    """Count a work order once its creation (and so its `due_at`) is known."""
    require(department=event.department)
    tx.queue(event)


@projections.on(WorkOrderReplied)
async def record_reply(tx: MetricsTransaction, event: WorkOrderReplied) -> None:
    """Count a work order's first reply; later replies are only kept in the history."""
    require(department=event.department)
    tx.queue(event, counts=event.first)


@projections.on(WorkOrderOverdue)
async def record_overdue(tx: MetricsTransaction, event: WorkOrderOverdue) -> None:
    """Keep dispatch's announcement in the history ("past due" in the rates is computed
    from `due_at` at query time, so the rates need nothing from it)."""
    tx.queue(event, counts=False)


@projections.on(WorkOrderDueSoon)
async def record_due_soon(tx: MetricsTransaction, event: WorkOrderDueSoon) -> None:
    """Keep dispatch's due-soon warning in the history."""
    tx.queue(event, counts=False)


@projections.on(TicketReopened)
async def record_reopened(tx: MetricsTransaction, event: TicketReopened) -> None:
    """Count the ticket as reopened (重办), once whatever the number of its reopens."""
    tx.queue(event)


@projections.on(CallbackLogged)
async def record_callback(tx: MetricsTransaction, event: CallbackLogged) -> None:
    """Count a callback once (by `callback_id`), and the ticket as called back."""
    tx.queue(event)
