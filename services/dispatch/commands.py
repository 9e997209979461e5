"""What a request changes in dispatch: transfers, work orders, replies, and the sweeps that
announce work orders overdue and due soon (督办). Each command opens its unit of work and
commits the change with the event that announces it.

Work-order rules:
- a ticket may have several work orders, one per department at a time: a new work order
  while the ticket has an unanswered one for the same department is a 409 (reply to that
  one first). A partial unique index makes this hold across replicas too;
- a reopened ticket (an unsatisfied callback, `hotline.ticket.reopened.v1`) gets a new work
  order like any other ticket; the first one created after a reopen is its redo round
  (重办): `redo_round` = the ticket's reopens so far, and it takes every reopen not yet
  taken, so the next one is ordinary again (round 0). The reopens are taken with an UPDATE
  in the work order's transaction: the rows stay locked until it commits, so of two work
  orders created at once (two replicas) only one takes them;
- `due_at` is the end of the N-th working day after the creation day (shared.workdays);
- a work order with no reply is announced due soon once, within the configured lead time
  before `due_at` (`domain.due_soon_cutoff`), and overdue once, after `due_at`; one first
  swept after its deadline is only announced overdue;
- the first reply is recorded once and never changes; later replies are kept. A reply may
  not be dated before its work order, nor before the first reply (the first stays first);
- a transfer or work order may not be dated before the ticket's submission (less the
  allowed clock skew).

A request may carry an Idempotency-Key (`shared.idempotency`): its key is claimed first
thing in the unit of work and its answer (shaped by the route's `answer` function) stored
with the change, so the same request again gets the first answer and changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime

import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy import ColumnElement
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from services.dispatch.domain import DispatchPolicy, due_soon_cutoff
from services.dispatch.models import (
    Reply,
    ReplyCreate,
    TicketReopen,
    Transfer,
    TransferCreate,
    WorkOrder,
    WorkOrderCreate,
)
from services.dispatch.views import known_ticket, visible_to
from shared.clock import not_before, not_before_submission
from shared.db import Transaction, UnitOfWorkFactory, new_id
from shared.errors import Conflict, NotFound
from shared.events import (
    Actor,
    Event,
    TransferAttempted,
    WorkOrderCreated,
    WorkOrderDueSoon,
    WorkOrderOverdue,
    WorkOrderReplied,
)
from shared.idempotency import Answer, IdempotentRequest, claim, commit_answer
from shared.workdays import due_at

log = logging.getLogger(__name__)


class OpenWorkOrderExists(Conflict):
    """The ticket already has an unanswered work order for this department."""

    code = "open_work_order_exists"


async def attempt_transfer(
    new_uow: UnitOfWorkFactory,
    ticket_id: str,
    command: TransferCreate,
    *,
    now: datetime,
    policy: DispatchPolicy,
    actor: Actor,
    answer: Callable[[Transfer], BaseModel],
    idempotency: IdempotentRequest | None = None,
) -> Answer:
    """Record a transfer or three-way call attempt and announce it; answer with
    `answer(transfer)`, or with the first answer to the same idempotent request."""
    async with new_uow() as uow:
        if (earlier := await claim(uow, idempotency)) is not None:
            return earlier
        ticket = await known_ticket(uow, ticket_id, policy)
        at = command.at or now
        not_before_submission(at, ticket.submitted_at)
        transfer = Transfer(
            transfer_id=new_id(),
            ticket_id=ticket_id,
            department=command.department,
            mode=command.mode,
            connected=command.connected,
            at=at,
            recorded_at=now,
        )
        uow.session.add(transfer)
        await uow.emit(
            TransferAttempted(
                actor=actor,
                ticket_id=ticket_id,
                transfer_id=transfer.transfer_id,
                department=command.department,
                mode=command.mode,
                connected=command.connected,
                at=at,
            )
        )
        answered = await commit_answer(uow, idempotency, answer(transfer))
        log.info(
            "transfer attempted",
            extra={"ticket_id": ticket_id, "mode": command.mode, "connected": command.connected},
        )
        return answered


async def create_work_order(
    new_uow: UnitOfWorkFactory,
    ticket_id: str,
    command: WorkOrderCreate,
    *,
    now: datetime,
    policy: DispatchPolicy,
    actor: Actor,
    answer: Callable[[WorkOrder], BaseModel],
    idempotency: IdempotentRequest | None = None,
) -> Answer:
    """Dispatch a work order to a department with its working-day deadline, and announce it;
    answer with `answer(work_order)`, or with the first answer to the same idempotent
    request. The first work order after a reopen of the ticket is its redo round."""
    async with new_uow() as uow:
        if (earlier := await claim(uow, idempotency)) is not None:
            return earlier
        ticket = await known_ticket(uow, ticket_id, policy)
        created_at = command.at or now
        not_before_submission(created_at, ticket.submitted_at)
        await _refuse_second_open(uow, ticket_id, command.department)
        days = command.due_working_days or policy.default_due_working_days
        deadline = due_at(created_at, days, policy.calendar)
        work_order_id = new_id()
        # Before the work order is added: its flush may meet the one-open-per-department
        # index, which the commit below is ready for.
        redo_round = await _take_open_reopens(uow, ticket_id, work_order_id)
        work_order = WorkOrder(
            work_order_id=work_order_id,
            ticket_id=ticket_id,
            city=ticket.city,
            department=command.department,
            created_at=created_at,
            recorded_at=now,
            due_at=deadline.due_at,
            due_working_days=days,
            calendar_source=deadline.source,
            redo_round=redo_round,
        )
        uow.session.add(work_order)
        await uow.emit(
            WorkOrderCreated(
                actor=actor,
                ticket_id=ticket_id,
                work_order_id=work_order.work_order_id,
                department=command.department,
                created_at=created_at,
                due_at=deadline.due_at,
                due_working_days=days,
                calendar_source=deadline.source,
                redo_round=redo_round,
            )
        )
        try:
            answered = await commit_answer(uow, idempotency, answer(work_order))
        except IntegrityError:
            # Another request for the same ticket and department won the race.
            await uow.rollback()
            await _refuse_second_open(uow, ticket_id, command.department)
            raise
        context = {"ticket_id": ticket_id, "work_order_id": work_order.work_order_id}
        log.info(
            "work order created",
            extra={
                **context,
                "due_at": deadline.due_at.isoformat(),
                "calendar_source": deadline.source,
                "redo_round": redo_round,
            },
        )
        if deadline.source == "weekends_only":
            log.warning(
                "work order deadline counts weekends only: no holiday schedule for a year it spans",
                extra={**context, "holiday_file_years": list(policy.calendar.file_years)},
            )
        return answered


async def reply_to_work_order(
    new_uow: UnitOfWorkFactory,
    work_order_id: str,
    command: ReplyCreate,
    *,
    now: datetime,
    actor: Actor,
    answer: Callable[[Reply], BaseModel],
    idempotency: IdempotentRequest | None = None,
) -> Answer:
    """Record a department's reply and announce it; the first reply is marked and kept.
    Answer with `answer(reply)`, or with the first answer to the same idempotent request.

    A department key replies to its own department's work orders only: another's is
    NotFound, as if it did not exist."""
    async with new_uow() as uow:
        if (earlier := await claim(uow, idempotency)) is not None:
            return earlier
        work_order = (
            await uow.session.exec(
                select(WorkOrder).where(WorkOrder.work_order_id == work_order_id).with_for_update()
            )
        ).first()
        if work_order is None or not visible_to(work_order, actor.department):
            raise NotFound(f"work order {work_order_id} not found")
        at = command.at or now
        not_before(at, work_order.created_at, field="at", what="the work order's created_at")
        first = work_order.first_reply_at is None
        if work_order.first_reply_at is not None:
            not_before(
                at, work_order.first_reply_at, field="at", what="the work order's first reply"
            )
        reply = Reply(
            reply_id=new_id(),
            work_order_id=work_order_id,
            ticket_id=work_order.ticket_id,
            quality=command.quality,
            content=command.content,
            at=at,
            recorded_at=now,
            first=first,
        )
        if first:
            work_order.first_reply_id = reply.reply_id
            work_order.first_reply_at = at
            work_order.first_reply_quality = command.quality
        work_order.reply_count += 1
        uow.session.add_all([reply, work_order])
        await uow.emit(
            WorkOrderReplied(
                actor=actor,
                ticket_id=work_order.ticket_id,
                work_order_id=work_order_id,
                reply_id=reply.reply_id,
                department=work_order.department,
                quality=command.quality,
                at=at,
                first=first,
            )
        )
        answered = await commit_answer(uow, idempotency, answer(reply))
        log.info(
            "work order replied",
            extra={
                "ticket_id": work_order.ticket_id,
                "work_order_id": work_order_id,
                "quality": command.quality,
                "first": first,
            },
        )
        return answered


async def sweep_overdue(
    new_uow: UnitOfWorkFactory, *, now: datetime, limit: int = 100
) -> list[str]:
    """Announce up to `limit` work orders past due with no reply, each once; returns their ids.

    Rows another sweeper (another replica) holds are skipped, not waited for; the flag and
    the event are committed together, so no work order is announced twice.
    """
    return await _announce_once(
        new_uow,
        (col(WorkOrder.overdue_at).is_(None), col(WorkOrder.due_at) < now),
        lambda work_order: _flag_overdue(work_order, now),
        limit=limit,
    )


async def sweep_due_soon(
    new_uow: UnitOfWorkFactory, *, now: datetime, policy: DispatchPolicy, limit: int = 100
) -> list[str]:
    """Warn of up to `limit` work orders due soon (督办) with no reply, each once; returns
    their ids. Due soon: within `policy.due_soon_working_days` of the deadline and not past
    it (`domain.is_due_soon`), so a work order first swept after its deadline is only
    announced overdue. Nothing when the warning is off. Replicas sweep at once safely, as
    for `sweep_overdue`."""
    cutoff = due_soon_cutoff(now, policy.due_soon_working_days, policy.calendar)
    if cutoff is None:
        return []
    return await _announce_once(
        new_uow,
        (
            col(WorkOrder.due_soon_at).is_(None),
            col(WorkOrder.due_at) >= now,
            col(WorkOrder.due_at) < cutoff,
        ),
        lambda work_order: _flag_due_soon(work_order, now),
        limit=limit,
    )


async def sweep_all(
    sweep: Callable[[int], Awaitable[list[str]]], *, batch_size: int = 100
) -> list[str]:
    """Run `sweep(limit)` batch after batch (one transaction each) until none is left;
    returns the ids, e.g. `sweep_all(lambda n: sweep_overdue(new_uow, now=now, limit=n))`."""
    swept: list[str] = []
    while True:
        batch = await sweep(batch_size)
        swept.extend(batch)
        if len(batch) < batch_size:
            return swept


async def _announce_once(
    new_uow: UnitOfWorkFactory,
    conditions: Sequence[ColumnElement[bool]],
    flag: Callable[[WorkOrder], Event],
    *,
    limit: int,
) -> list[str]:
    """Flag up to `limit` unanswered work orders meeting `conditions` (which include "not
    flagged yet") and emit the event `flag` returns for each, in one transaction.

    SKIP LOCKED: rows another sweeper holds are skipped, not waited for; since the flag and
    the event commit together, each work order is announced once however many sweep.
    """
    async with new_uow() as uow:
        found = (
            await uow.session.exec(
                select(WorkOrder)
                .where(col(WorkOrder.first_reply_at).is_(None), *conditions)
                .order_by(col(WorkOrder.due_at))
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
        ).all()
        announced: list[tuple[WorkOrder, Event]] = []
        for work_order in found:
            event = flag(work_order)
            uow.session.add(work_order)
            await uow.emit(event)
            announced.append((work_order, event))
        await uow.commit()
        for work_order, event in announced:
            log.info(
                "work order announced",
                extra={
                    "ticket_id": work_order.ticket_id,
                    "work_order_id": work_order.work_order_id,
                    "ce_type": event.ce_type,
                },
            )
        return [work_order.work_order_id for work_order in found]


def _flag_overdue(work_order: WorkOrder, now: datetime) -> WorkOrderOverdue:
    """Flag the work order overdue as of `now`; the event that announces it."""
    work_order.overdue_at = now
    return WorkOrderOverdue(
        ticket_id=work_order.ticket_id,
        work_order_id=work_order.work_order_id,
        department=work_order.department,
        due_at=work_order.due_at,
        detected_at=now,
    )


def _flag_due_soon(work_order: WorkOrder, now: datetime) -> WorkOrderDueSoon:
    """Flag the work order warned as of `now`; the event that announces it."""
    work_order.due_soon_at = now
    return WorkOrderDueSoon(
        ticket_id=work_order.ticket_id,
        work_order_id=work_order.work_order_id,
        department=work_order.department,
        due_at=work_order.due_at,
        warned_at=now,
    )


async def _take_open_reopens(tx: Transaction, ticket_id: str, work_order_id: str) -> int:
    """Mark the ticket's reopens no work order has taken yet as taken by `work_order_id`;
    its redo round: the ticket's reopens so far if it took any, else 0.

    The UPDATE locks what it takes until the transaction ends; a concurrent one waits for
    that and then skips the rows taken (PostgreSQL rechecks the condition), so a reopen is
    taken once. Counted after the UPDATE, the taken ones include this transaction's own
    and every committed one's: the round is right even when reopens arrive meanwhile."""
    taken = await tx.execute(
        sa.update(TicketReopen)
        .where(
            col(TicketReopen.ticket_id) == ticket_id,
            col(TicketReopen.redo_work_order_id).is_(None),
        )
        .values(redo_work_order_id=work_order_id)
        .returning(col(TicketReopen.callback_id))
    )
    if not taken.all():
        return 0
    counted = await tx.execute(
        sa.select(sa.func.count())
        .select_from(TicketReopen)
        .where(
            col(TicketReopen.ticket_id) == ticket_id,
            col(TicketReopen.redo_work_order_id).is_not(None),
        )
    )
    return int(counted.scalar_one())


async def _refuse_second_open(tx: Transaction, ticket_id: str, department: str) -> None:
    open_one = (
        await tx.session.exec(
            select(WorkOrder.work_order_id).where(
                WorkOrder.ticket_id == ticket_id,
                WorkOrder.department == department,
                col(WorkOrder.first_reply_at).is_(None),
            )
        )
    ).first()
    if open_one is not None:
        raise OpenWorkOrderExists(
            f"ticket {ticket_id} already has an unanswered work order for {department} "
            f"({open_one}); a new one for that department can follow its reply"
        )
