"""Dispatch's routes: parse, call a command or a view, shape the answer. No SQL here."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response, status

from services.dispatch import commands, views
from services.dispatch.deps import Deps
from services.dispatch.domain import calendar_note, is_overdue, work_order_status
from services.dispatch.models import (
    DispatchTicketPublic,
    FirstReply,
    Reply,
    ReplyCreate,
    ReplyPublic,
    Transfer,
    TransferCreate,
    TransferPublic,
    WorkOrder,
    WorkOrderCreate,
    WorkOrderDetail,
    WorkOrderPage,
    WorkOrderPublic,
)
from services.dispatch.views import StatusFilter
from shared.app import ReadDep
from shared.auth.http import Allow
from shared.auth.store import Principal
from shared.clock import utc_now
from shared.errors import not_yet_known_response
from shared.idempotency import IdempotencyKey, idempotent_responses
from shared.inputs import Label, PathId
from shared.openapi import set_location
from shared.pagination import Cursor

router = APIRouter(tags=["dispatch"])

Operator = Annotated[Principal, Depends(Allow("operator"))]
Department = Annotated[Principal, Depends(Allow("department"))]
Reader = Annotated[Principal, Depends(Allow("operator", "auditor", "department"))]
"""Department keys see their own department's work orders only (another's is a 404)."""
TicketReader = Annotated[Principal, Depends(Allow("operator", "auditor"))]

NOT_YET_KNOWN = not_yet_known_response("dispatch")
NO_WORK_ORDER: dict[int | str, dict[str, Any]] = {404: {"description": "No such work order"}}


@router.post(
    "/tickets/{ticket_id}/transfers",
    status_code=status.HTTP_201_CREATED,
    response_model=TransferPublic,
    responses=idempotent_responses(NOT_YET_KNOWN),
)
async def attempt_transfer(
    caller: Operator,
    ticket_id: PathId,
    body: TransferCreate,
    response: Response,
    deps: Deps,
    idempotency: IdempotencyKey,
) -> TransferPublic:
    """Record a transfer (`mode=transfer`, 转接) or a three-way call (`three_way`, 第三方通话)
    and whether it connected; publishes `hotline.transfer.attempted.v1`.

    `at` defaults to now; it may not be before the ticket's submission (422). The same
    `Idempotency-Key` and body again give the first answer (`Idempotent-Replayed: true`)."""
    answer = await commands.attempt_transfer(
        deps.database.unit_of_work,
        ticket_id,
        body,
        now=utc_now(),
        policy=deps.policy,
        actor=caller.actor,
        answer=_transfer,
        idempotency=idempotency.of(caller.key_id, body),
    )
    transfer = answer.sent_as(TransferPublic, response)
    # A transfer has no URL of its own: it is listed with its ticket.
    set_location(response, "tickets", ticket_id)
    return transfer


@router.post(
    "/tickets/{ticket_id}/work-orders",
    status_code=status.HTTP_201_CREATED,
    response_model=WorkOrderPublic,
    responses=idempotent_responses(
        not_yet_known_response(
            "dispatch",
            also="it already has an unanswered work order for this department "
            "(code `open_work_order_exists`)",
        )
    ),
)
async def create_work_order(
    caller: Operator,
    ticket_id: PathId,
    body: WorkOrderCreate,
    response: Response,
    deps: Deps,
    idempotency: IdempotencyKey,
) -> WorkOrderPublic:
    """Dispatch a work order (工单) to a department; publishes `hotline.workorder.created.v1`.

    `due_at` is 24:00 Asia/Shanghai of the `due_working_days`-th working day (default 5)
    after the creation day, counting statutory holidays and make-up working days (调休);
    `calendar_source` says what counted them, and `calendar_note` warns when a year was
    counted on weekends only. Rules: several work orders per ticket are fine, but only one
    unanswered per department (a second is a 409 until the first is replied to); a reopened
    ticket (重办) gets a new work order the same way, and the first one after a reopen is
    its redo round (`redo_round`: the ticket's reopens so far; 0 for an ordinary work order;
    also in `hotline.workorder.created.v1`). `at` may not be before the ticket's
    submission (422). The same `Idempotency-Key` and body again give the first answer
    (`Idempotent-Replayed: true`), `status` and `overdue` as they were then."""
    now = utc_now()
    answer = await commands.create_work_order(
        deps.database.unit_of_work,
        ticket_id,
        body,
        now=now,
        policy=deps.policy,
        actor=caller.actor,
        answer=lambda work_order: _work_order(work_order, now),
        idempotency=idempotency.of(caller.key_id, body),
    )
    work_order = answer.sent_as(WorkOrderPublic, response)
    set_location(response, "work-orders", work_order.work_order_id)
    return work_order


@router.post(
    "/work-orders/{work_order_id}/replies",
    status_code=status.HTTP_201_CREATED,
    response_model=ReplyPublic,
    responses=idempotent_responses(NO_WORK_ORDER),
)
async def reply_to_work_order(
    caller: Department,
    work_order_id: PathId,
    body: ReplyCreate,
    response: Response,
    deps: Deps,
    idempotency: IdempotencyKey,
) -> ReplyPublic:
    """Record a department's reply (部门回复); publishes `hotline.workorder.replied.v1`.

    The first reply is what the rates use and never changes (`first: true`); later replies
    are kept with `first: false`. `at` may not be before the work order's `created_at` nor
    before its first reply (422). The same `Idempotency-Key` and body again give the first
    answer (`Idempotent-Replayed: true`) and add no reply."""
    answer = await commands.reply_to_work_order(
        deps.database.unit_of_work,
        work_order_id,
        body,
        now=utc_now(),
        actor=caller.actor,
        answer=_reply,
        idempotency=idempotency.of(caller.key_id, body),
    )
    reply = answer.sent_as(ReplyPublic, response)
    # A reply has no URL of its own: it is listed with its work order.
    set_location(response, "work-orders", work_order_id)
    return reply


@router.get("/work-orders/{work_order_id}", response_model=WorkOrderDetail, responses=NO_WORK_ORDER)
async def read_work_order(caller: Reader, work_order_id: PathId, db: ReadDep) -> WorkOrderDetail:
    """One work order with all its replies, oldest first."""
    work_order, replies = await views.get_work_order(
        db, work_order_id, only_department=caller.department
    )
    shown = _work_order(work_order, utc_now())
    return WorkOrderDetail(**shown.model_dump(), replies=[_reply(r) for r in replies])


@router.get("/work-orders", response_model=WorkOrderPage)
async def list_work_orders(
    caller: Reader,
    db: ReadDep,
    status: Annotated[
        StatusFilter | None,
        Query(
            description="`unanswered`: no reply yet, overdue or not; `overdue`: no reply and "
            "past `due_at`; `replied`: has a first reply"
        ),
    ] = None,
    city: Label | None = None,
    department: Label | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Cursor = None,
) -> WorkOrderPage:
    """Work orders, earliest `due_at` first (the most overdue lead); follow `next_cursor`."""
    now = utc_now()
    work_orders, next_cursor = await views.list_work_orders(
        db,
        status=status,
        city=city,
        department=department,
        now=now,
        limit=limit,
        cursor=cursor,
        only_department=caller.department,
    )
    return WorkOrderPage(items=[_work_order(w, now) for w in work_orders], next_cursor=next_cursor)


@router.get("/tickets/{ticket_id}", response_model=DispatchTicketPublic, responses=NOT_YET_KNOWN)
async def read_ticket(
    caller: TicketReader, ticket_id: PathId, db: ReadDep, deps: Deps
) -> DispatchTicketPublic:
    """Dispatch's view of a ticket: transfers, work orders and whether it is reopened (重办).

    An unsatisfied callback reopens the ticket (`reopened: true`, `reopen_count` + 1); it
    stays reopened, through any new work order, until a later callback is answered
    satisfied or basically satisfied. The first work order created after a reopen shows
    its redo round (`redo_round`)."""
    now = utc_now()
    view = await views.get_ticket_view(db, ticket_id, deps.policy)
    ticket = view.ticket
    return DispatchTicketPublic(
        ticket_id=ticket.ticket_id,
        city=ticket.city,
        channel=ticket.channel,
        scenario=ticket.scenario,
        submitted_at=ticket.submitted_at,
        reopened=view.reopen.reopened,
        reopen_count=view.reopen.count,
        reopened_at=view.reopen.reopened_at,
        transfers=[_transfer(t) for t in view.transfers],
        work_orders=[_work_order(w, now) for w in view.work_orders],
    )


def _transfer(transfer: Transfer) -> TransferPublic:
    return TransferPublic.model_validate(transfer, from_attributes=True)


def _reply(reply: Reply) -> ReplyPublic:
    return ReplyPublic.model_validate(reply, from_attributes=True)


def _work_order(work_order: WorkOrder, now: datetime) -> WorkOrderPublic:
    first_reply = None
    if work_order.first_reply_id and work_order.first_reply_at and work_order.first_reply_quality:
        first_reply = FirstReply(
            reply_id=work_order.first_reply_id,
            at=work_order.first_reply_at,
            quality=work_order.first_reply_quality,
        )
    return WorkOrderPublic(
        work_order_id=work_order.work_order_id,
        ticket_id=work_order.ticket_id,
        city=work_order.city,
        department=work_order.department,
        created_at=work_order.created_at,
        due_at=work_order.due_at,
        due_working_days=work_order.due_working_days,
        calendar_source=work_order.calendar_source,
        calendar_note=calendar_note(work_order.calendar_source),
        status=work_order_status(work_order.first_reply_at),
        overdue=is_overdue(work_order.first_reply_at, work_order.due_at, now),
        first_reply=first_reply,
        reply_count=work_order.reply_count,
        redo_round=work_order.redo_round,
    )
