"""What followup does: log callbacks (回访) and keep the queue of callbacks due.

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

import logging
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlmodel import col, select

from services.followup.models import Callback, CallbackCreate, RepliedWorkOrder, Ticket
from shared.clock import not_before_submission
from shared.db import UnitOfWork, new_id
from shared.errors import NotYetKnown
from shared.events import CallbackLogged, TicketSubmitted, WorkOrderReplied
from shared.pagination import decode_cursor, encode_cursor

log = logging.getLogger(__name__)


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


# Events from other services.


async def record_ticket(uow: UnitOfWork, event: TicketSubmitted) -> None:
    """Remember a submitted ticket and whether it was solved at first contact."""
    await uow.execute(
        insert(Ticket)
        .values(
            ticket_id=event.ticket_id,
            city=event.city,
            channel=event.channel,
            scenario=event.scenario,
            submitted_at=event.submitted_at,
            resolved_at_first_contact=event.call.resolved_at_first_contact,
            known_at=sa.func.now(),
        )
        .on_conflict_do_nothing(index_elements=["ticket_id"])
    )


async def record_reply(uow: UnitOfWork, event: WorkOrderReplied) -> None:
    """Remember a work order's first reply; later replies do not call for another callback."""
    if not event.first:
        return
    await uow.execute(
        insert(RepliedWorkOrder)
        .values(
            work_order_id=event.work_order_id,
            ticket_id=event.ticket_id,
            department=event.department,
            first_reply_at=event.at,
        )
        .on_conflict_do_nothing(index_elements=["work_order_id"])
    )


# Commands.


async def known_ticket(uow: UnitOfWork, ticket_id: str, retry_after_seconds: int) -> Ticket:
    """The ticket, or NotYetKnown (409 + Retry-After): its event may still be on its way."""
    ticket = await uow.session.get(Ticket, ticket_id)
    if ticket is None:
        raise NotYetKnown(
            f"ticket {ticket_id} is not known to followup yet; its event may still be on its way",
            retry_after_seconds,
        )
    return ticket


async def log_callback(
    uow: UnitOfWork,
    ticket_id: str,
    command: CallbackCreate,
    *,
    now: datetime,
    retry_after_seconds: int,
) -> Callback:
    """Record a callback and announce it (`hotline.callback.logged.v1`)."""
    ticket = await known_ticket(uow, ticket_id, retry_after_seconds)
    at = command.at or now
    not_before_submission(at, ticket.submitted_at)
    callback = Callback(
        callback_id=new_id(),
        ticket_id=ticket_id,
        reached=command.reached,
        satisfaction=command.satisfaction,
        at=at,
        recorded_at=now,
    )
    uow.session.add(callback)
    await uow.emit(
        CallbackLogged(
            ticket_id=ticket_id,
            callback_id=callback.callback_id,
            reached=command.reached,
            satisfaction=command.satisfaction,
            at=at,
        )
    )
    await uow.commit()
    log.info(
        "callback logged",
        extra={
            "ticket_id": ticket_id,
            "reached": command.reached,
            "satisfaction": command.satisfaction,
        },
    )
    return callback


# Queries.


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
    uow: UnitOfWork, *, city: str | None, limit: int, cursor: str | None
) -> tuple[list[Eligibility], str | None]:
    """Tickets due for a callback, longest waiting first, one page after `cursor`."""
    queue = _eligibility()
    query = sa.select(queue).where(queue.c.due)
    if city:
        query = query.where(queue.c.city == city)
    if cursor:
        at, ticket_id = decode_cursor(cursor)
        query = query.where(
            sa.tuple_(queue.c.eligible_since, queue.c.ticket_id) > sa.tuple_(at, ticket_id)
        )
    query = query.order_by(queue.c.eligible_since, queue.c.ticket_id).limit(limit + 1)
    rows = [Eligibility(**row._mapping) for row in await uow.execute(query)]
    page = rows[:limit]
    if len(rows) <= limit or not page:
        return page, None
    last = page[-1]
    assert last.eligible_since is not None  # due implies eligible
    return page, encode_cursor(last.eligible_since, last.ticket_id)


async def get_ticket_view(uow: UnitOfWork, ticket_id: str, retry_after_seconds: int) -> TicketView:
    """A ticket's callbacks and whether one is due; NotYetKnown if followup has not heard of it."""
    ticket = await known_ticket(uow, ticket_id, retry_after_seconds)
    queue = _eligibility()
    row = (await uow.execute(sa.select(queue).where(queue.c.ticket_id == ticket_id))).one()
    callbacks = await uow.session.exec(
        select(Callback)
        .where(Callback.ticket_id == ticket_id)
        .order_by(col(Callback.at), col(Callback.callback_id))
    )
    return TicketView(
        ticket=ticket, eligibility=Eligibility(**row._mapping), callbacks=list(callbacks)
    )
