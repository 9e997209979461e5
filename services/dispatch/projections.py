"""What dispatch learns from other services' events. Facts are only added, never updated,
so events may arrive in any order and twice without changing the outcome, and no two
batches lock the same rows."""

from __future__ import annotations

import logging

import sqlalchemy as sa

from services.dispatch.models import Callback, Ticket, TicketReopen
from shared.db import Transaction
from shared.events import CallbackLogged, TicketReopened, TicketSubmitted
from shared.projections import Projections

log = logging.getLogger(__name__)

projections = Projections[Transaction]()


@projections.on(TicketSubmitted)
async def record_ticket(tx: Transaction, event: TicketSubmitted) -> None:
    """Remember a submitted ticket (city, channel, scenario, submission time)."""
    await tx.insert_once(
        Ticket,
        "ticket_id",
        ticket_id=event.ticket_id,
        city=event.city,
        channel=event.channel,
        scenario=event.scenario,
        submitted_at=event.submitted_at,
        known_at=sa.func.now(),
    )


@projections.on(CallbackLogged)
async def record_callback(tx: Transaction, event: CallbackLogged) -> None:
    """Remember a callback: the reopen state a ticket shows is derived from them (`domain`)."""
    await tx.insert_once(
        Callback,
        "callback_id",
        callback_id=event.callback_id,
        ticket_id=event.ticket_id,
        reached=event.reached,
        satisfaction=event.satisfaction,
        at=event.at,
    )


@projections.on(TicketReopened)
async def record_reopen(tx: Transaction, event: TicketReopened) -> None:
    """Remember a reopen (重办), not yet taken: the ticket's next work order is its redo
    round (`commands.create_work_order`). Once per callback, however often it comes."""
    inserted = await tx.insert_once(
        TicketReopen,
        "callback_id",
        callback_id=event.callback_id,
        ticket_id=event.ticket_id,
        at=event.at,
        redo_work_order_id=None,
    )
    if inserted:
        log.info("ticket reopened by an unsatisfied callback", extra={"ticket_id": event.ticket_id})
