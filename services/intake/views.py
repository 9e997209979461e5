"""What intake answers: one ticket, pages of tickets. Read-only transactions."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlmodel import col, select

from services.intake.models import Ticket
from shared.db import ReadTransaction
from shared.errors import NotFound
from shared.pagination import decode_cursor, encode_cursor


async def get_ticket(
    db: ReadTransaction, ticket_id: str, *, only_submitted_by: str | None = None
) -> Ticket:
    """One ticket, or NotFound; also NotFound if `only_submitted_by` is set and another key
    submitted it (an evaluator's key: never confirm that someone else's ticket exists)."""
    ticket = await db.session.get(Ticket, ticket_id)
    if ticket is None or only_submitted_by not in (None, ticket.submitted_by):
        raise NotFound(f"ticket {ticket_id} not found")
    return ticket


async def list_tickets(
    db: ReadTransaction,
    *,
    city: str | None,
    since: datetime | None,
    until: datetime | None,
    limit: int,
    cursor: str | None,
    only_submitted_by: str | None = None,
) -> tuple[list[Ticket], str | None]:
    """Tickets newest first (by `submitted_at`), filtered, one page after `cursor`; only
    those `only_submitted_by` submitted when it is set (an evaluator's key)."""
    query = select(Ticket)
    if only_submitted_by is not None:
        query = query.where(Ticket.submitted_by == only_submitted_by)
    if city:
        query = query.where(Ticket.city == city)
    if since:
        query = query.where(col(Ticket.submitted_at) >= since)
    if until:
        query = query.where(col(Ticket.submitted_at) < until)
    if cursor:
        at, ticket_id = decode_cursor(cursor)
        query = query.where(
            sa.tuple_(col(Ticket.submitted_at), col(Ticket.ticket_id)) < sa.tuple_(at, ticket_id)
        )
    query = query.order_by(col(Ticket.submitted_at).desc(), col(Ticket.ticket_id).desc())
    rows = list((await db.session.exec(query.limit(limit + 1))).all())
    more = len(rows) > limit
    page = rows[:limit]
    last = page[-1] if more and page else None
    return page, encode_cursor(last.submitted_at, last.ticket_id) if last else None
