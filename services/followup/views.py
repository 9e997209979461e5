"""What followup answers: the queue of callbacks due (回访) and a ticket's callbacks.
Read-only transactions.

The queue is derived, never stored: followup keeps facts per ticket (the ticket, each work
order's first reply, each callback) and computes on reading:

- a ticket becomes eligible for a callback when it is solved at first contact (at its
  submission) or when one of its work orders gets its first reply (at that reply); its
  `eligible_since` is the latest of these;
- it is due while no callback that reached the citizen was made at or after
  `eligible_since`. A callback that did not reach anyone leaves it due (and is counted as
  an attempt): nobody was asked.

So after an unsatisfied callback (重办) and a new work order's reply, the ticket is due
again; and events may arrive in any order (a reply before the ticket, from another topic)
without making the queue wrong. Facts are only inserted, never updated, so redelivered
events and concurrent replicas cannot disturb each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import col, select

from services.followup.models import Callback, RepliedWorkOrder, Ticket
from shared.db import Queryable, ReadTransaction
from shared.errors import NotYetKnown
from shared.pagination import decode_cursor, encode_cursor, keyset_page


@dataclass(frozen=True)
class Eligibility:
    """Whether and since when a ticket waits for a callback."""

    ticket_id: str
    city: str
    channel: str
    scenario: str
    submitted_at: datetime
    eligible_since: datetime | None
    reason: str | None
    due: bool
    unreached_attempts: int


@dataclass(frozen=True)
class TicketView:
    """A ticket, its callbacks (oldest first) and its place in the queue."""

    ticket: Ticket
    eligibility: Eligibility
    callbacks: list[Callback]


async def known_ticket(db: Queryable, ticket_id: str, retry_after_seconds: int) -> Ticket:
    """The ticket, or NotYetKnown (409 + Retry-After): its event may still be on its way."""
    ticket = await db.session.get(Ticket, ticket_id)
    if ticket is None:
        raise NotYetKnown(
            f"ticket {ticket_id} is not known to followup yet; its event may still be on its way",
            retry_after_seconds,
        )
    return ticket


def _eligibility() -> sa.Subquery:
    """Every known ticket with `eligible_since` (null if never eligible) and `due`."""
    last_reply = (
        sa.select(
            col(RepliedWorkOrder.ticket_id),
            sa.func.max(col(RepliedWorkOrder.first_reply_at)).label("at"),
        )
        .group_by(col(RepliedWorkOrder.ticket_id))
        .subquery("last_reply")
    )
    solved_at_first_contact = sa.case(
        (col(Ticket.resolved_at_first_contact), col(Ticket.submitted_at))
    )
    # GREATEST ignores nulls: the later of the two, or whichever exists.
    since = sa.func.greatest(solved_at_first_contact, last_reply.c.at)
    since_callbacks = sa.and_(
        col(Callback.ticket_id) == col(Ticket.ticket_id), col(Callback.at) >= since
    )
    reached_since = sa.exists().where(since_callbacks, col(Callback.reached))
    unreached_since = (
        sa.select(sa.func.count())
        .where(since_callbacks, sa.not_(col(Callback.reached)))
        .scalar_subquery()
    )
    reason = sa.case(
        (last_reply.c.at == since, sa.literal("work_order_replied")),
        (since.is_not(None), sa.literal("resolved_at_first_contact")),
    )
    return (
        sa.select(
            col(Ticket.ticket_id),
            col(Ticket.city),
            col(Ticket.channel),
            col(Ticket.scenario),
            col(Ticket.submitted_at),
            since.label("eligible_since"),
            reason.label("reason"),
            sa.and_(since.is_not(None), sa.not_(reached_since)).label("due"),
            unreached_since.label("unreached_attempts"),
        )
        .select_from(
            sa.join(
                Ticket, last_reply, last_reply.c.ticket_id == col(Ticket.ticket_id), isouter=True
            )
        )
        .subquery("eligibility")
    )


async def list_due(
    db: ReadTransaction, *, city: str | None, limit: int, cursor: str | None
) -> tuple[list[Eligibility], str | None]:
    """Tickets due for a callback, longest waiting first, one page after `cursor`."""
    queue = _eligibility()
    query = sa.select(queue).where(queue.c.due)
    if city:
        query = query.where(queue.c.city == city)
    after = decode_cursor(cursor) if cursor else None
    key = (queue.c.eligible_since, queue.c.ticket_id)
    rows, more = await keyset_page(db, query, key, after, limit)
    page = [Eligibility(**row) for row in rows]
    if not more or not page:
        return page, None
    last = page[-1]
    assert last.eligible_since is not None  # due implies eligible
    return page, encode_cursor(last.eligible_since, last.ticket_id)


async def get_ticket_view(
    db: ReadTransaction, ticket_id: str, retry_after_seconds: int
) -> TicketView:
    """A ticket's callbacks and whether one is due; NotYetKnown if followup has not heard of it."""
    ticket = await known_ticket(db, ticket_id, retry_after_seconds)
    queue = _eligibility()
    row = (await db.execute(sa.select(queue).where(queue.c.ticket_id == ticket_id))).one()
    callbacks = await db.session.exec(
        select(Callback)
        .where(Callback.ticket_id == ticket_id)
        .order_by(col(Callback.at), col(Callback.callback_id))
    )
    return TicketView(
        ticket=ticket, eligibility=Eligibility(**row._mapping), callbacks=list(callbacks)
    )
