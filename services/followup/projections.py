"""What followup learns from other services' events: the facts the callback queue is
derived from. Facts are only inserted, never updated, so redelivered events and concurrent
replicas cannot disturb each other."""

from __future__ import annotations

import sqlalchemy as sa

from services.followup.models import RepliedWorkOrder, Ticket
from shared.db import Transaction
from shared.events import TicketSubmitted, WorkOrderReplied
from shared.projections import Projections

projections = Projections[Transaction]()


@projections.on(TicketSubmitted)
async def record_ticket(tx: Transaction, event: TicketSubmitted) -> None:
    """Remember a submitted ticket and whether it was solved at first contact."""
    await tx.insert_once(
        Ticket,
        "ticket_id",
        ticket_id=event.ticket_id,
        city=event.city,
        channel=event.channel,
        scenario=event.scenario,
        submitted_at=event.submitted_at,
        resolved_at_first_contact=event.call.resolved_at_first_contact,
        known_at=sa.func.now(),
    )


@projections.on(WorkOrderReplied)
async def record_reply(tx: Transaction, event: WorkOrderReplied) -> None:
    """Remember a work order's first reply; later replies do not call for another callback."""
    if not event.first:
        return
    await tx.insert_once(
        RepliedWorkOrder,
        "work_order_id",
        work_order_id=event.work_order_id,
        ticket_id=event.ticket_id,
        department=event.department,
        first_reply_at=event.at,
    )
