"""What dispatch answers: a ticket with its transfers and work orders, work orders and
their replies. Read-only transactions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import sqlalchemy as sa
from sqlmodel import col, select

from services.dispatch.domain import CallbackFact, DispatchPolicy, ReopenState, reopen_state
from services.dispatch.models import Callback, Reply, Ticket, Transfer, WorkOrder
from shared.db import Queryable, ReadTransaction
from shared.errors import NotFound, NotYetKnown
from shared.pagination import decode_cursor, encode_cursor

StatusFilter = Literal["unanswered", "overdue", "replied"]


@dataclass(frozen=True)
class TicketView:
    """A ticket with its transfers, work orders and reopen state."""

    ticket: Ticket
    transfers: list[Transfer]
    work_orders: list[WorkOrder]
    reopen: ReopenState


async def known_ticket(db: Queryable, ticket_id: str, policy: DispatchPolicy) -> Ticket:
    """The ticket, or NotYetKnown (409 + Retry-After): its event may still be on its way."""
    ticket = await db.session.get(Ticket, ticket_id)
    if ticket is None:
        raise NotYetKnown(
            f"ticket {ticket_id} is not known to dispatch yet; its event may still be on its way",
            policy.retry_after_seconds,
        )
    return ticket


async def get_ticket_view(
    db: ReadTransaction, ticket_id: str, policy: DispatchPolicy
) -> TicketView:
    """A ticket with its transfers and work orders (oldest first) and its reopen state."""
    ticket = await known_ticket(db, ticket_id, policy)
    transfers = await db.session.exec(
        select(Transfer)
        .where(Transfer.ticket_id == ticket_id)
        .order_by(col(Transfer.at), col(Transfer.transfer_id))
    )
    work_orders = await db.session.exec(
        select(WorkOrder)
        .where(WorkOrder.ticket_id == ticket_id)
        .order_by(col(WorkOrder.created_at), col(WorkOrder.work_order_id))
    )
    callbacks = await db.session.exec(select(Callback).where(Callback.ticket_id == ticket_id))
    facts = [
        CallbackFact(
            callback_id=c.callback_id, at=c.at, reached=c.reached, satisfaction=c.satisfaction
        )
        for c in callbacks
    ]
    return TicketView(
        ticket=ticket,
        transfers=list(transfers),
        work_orders=list(work_orders),
        reopen=reopen_state(facts),
    )


def visible_to(work_order: WorkOrder, only_department: str | None) -> bool:
    """Whether a caller restricted to `only_department` (a department's key) may see it."""
    return only_department is None or work_order.department == only_department


async def get_work_order(
    db: ReadTransaction, work_order_id: str, *, only_department: str | None = None
) -> tuple[WorkOrder, list[Reply]]:
    """A work order and all its replies, oldest first; NotFound if there is none, or if it
    belongs to another department than `only_department` (never confirm that it exists)."""
    work_order = await db.session.get(WorkOrder, work_order_id)
    if work_order is None or not visible_to(work_order, only_department):
        raise NotFound(f"work order {work_order_id} not found")
    replies = await db.session.exec(
        select(Reply)
        .where(Reply.work_order_id == work_order_id)
        .order_by(col(Reply.at), col(Reply.recorded_at))
    )
    return work_order, list(replies)


async def list_work_orders(
    db: ReadTransaction,
    *,
    status: StatusFilter | None,
    city: str | None,
    department: str | None,
    now: datetime,
    limit: int,
    cursor: str | None,
    only_department: str | None = None,
) -> tuple[Sequence[WorkOrder], str | None]:
    """Work orders, earliest due first (the most overdue lead), one page after `cursor`;
    only `only_department`'s when set (a department's key)."""
    query = select(WorkOrder)
    if only_department is not None:
        query = query.where(WorkOrder.department == only_department)
    if status == "replied":
        query = query.where(col(WorkOrder.first_reply_at).is_not(None))
    elif status in ("unanswered", "overdue"):
        query = query.where(col(WorkOrder.first_reply_at).is_(None))
    if status == "overdue":
        query = query.where(col(WorkOrder.due_at) < now)
    if city:
        query = query.where(WorkOrder.city == city)
    if department:
        query = query.where(WorkOrder.department == department)
    if cursor:
        at, work_order_id = decode_cursor(cursor)
        query = query.where(
            sa.tuple_(col(WorkOrder.due_at), col(WorkOrder.work_order_id))
            > sa.tuple_(at, work_order_id)
        )
    query = query.order_by(col(WorkOrder.due_at), col(WorkOrder.work_order_id))
    rows = list((await db.session.exec(query.limit(limit + 1))).all())
    page = rows[:limit]
    if len(rows) <= limit or not page:
        return page, None
    return page, encode_cursor(page[-1].due_at, page[-1].work_order_id)
