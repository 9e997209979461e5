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
    TicketSubmitted,
    TransferAttempted,
    WorkOrderCreated,
    WorkOrderReplied,
)
from shared.projections import Projections

projections = Projections[MetricsTransaction]()
"""`hotline.workorder.overdue.v1` is not handled: "past due" is computed from `due_at` at
query time, so the event adds nothing the rates need."""


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
    """Count a work order's first reply; later replies do not change the rates."""
    if event.first:
        require(department=event.department)
        tx.queue(event)


@projections.on(CallbackLogged)
async def record_callback(tx: MetricsTransaction, event: CallbackLogged) -> None:
    """Count a callback once (by `callback_id`), and the ticket as called back."""
    tx.queue(event)
