"""Followup's routes: parse, call a command or a view, shape the answer. No SQL here."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response, status

from services.followup import commands, views
from services.followup.deps import Deps
from services.followup.models import (
    Callback,
    CallbackCreate,
    CallbackPublic,
    DueCallback,
    DueCallbackPage,
    FollowupTicketPublic,
)
from services.followup.views import Eligibility
from shared.app import ReadDep
from shared.auth.http import Allow
from shared.auth.store import Principal
from shared.clock import utc_now
from shared.errors import not_yet_known_response
from shared.idempotency import IdempotencyKey, idempotent_responses
from shared.inputs import Label, PathId
from shared.openapi import set_location
from shared.pagination import Cursor

router = APIRouter(tags=["followup"])

CallbackDesk = Annotated[Principal, Depends(Allow("callback"))]
Reader = Annotated[Principal, Depends(Allow("callback", "auditor"))]

NOT_YET_KNOWN = not_yet_known_response("followup")


@router.post(
    "/tickets/{ticket_id}/callbacks",
    status_code=status.HTTP_201_CREATED,
    response_model=CallbackPublic,
    responses=idempotent_responses(NOT_YET_KNOWN),
)
async def log_callback(
    caller: CallbackDesk,
    ticket_id: PathId,
    body: CallbackCreate,
    response: Response,
    deps: Deps,
    idempotency: IdempotencyKey,
) -> CallbackPublic:
    """Record a callback (回访); publishes `hotline.callback.logged.v1`.

    `satisfaction` must be null when `reached` is false, and may be null when reached (the
    citizen declined to answer). A reached `unsatisfied` answer reopens the ticket (重办):
    it also publishes `hotline.ticket.reopened.v1`, in the same transaction, and the
    ticket's next work order in dispatch is a redo round. `at` defaults to now; it may not
    be before the ticket's submission (422). The same `Idempotency-Key` and body again give
    the first answer (`Idempotent-Replayed: true`), log no second callback and announce
    nothing again."""
    answer = await commands.log_callback(
        deps.database.unit_of_work,
        ticket_id,
        body,
        now=utc_now(),
        retry_after_seconds=deps.settings.retry_after_seconds,
        actor=caller.actor,
        answer=_callback,
        idempotency=idempotency.of(caller.key_id, body),
    )
    callback = answer.sent_as(CallbackPublic, response)
    # A callback has no URL of its own: it is listed with its ticket.
    set_location(response, "tickets", ticket_id)
    return callback


@router.get("/callbacks/due", response_model=DueCallbackPage)
async def list_due_callbacks(
    caller: Reader,
    db: ReadDep,
    city: Label | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Cursor = None,
) -> DueCallbackPage:
    """Tickets waiting for a callback, longest waiting first; follow `next_cursor`.

    Due: solved at first contact, or a work order got its first reply, and no callback that
    reached the citizen since (the latest of those). After an unsatisfied callback, the
    reply to a new work order makes the ticket due again."""
    due, next_cursor = await views.list_due(db, city=city, limit=limit, cursor=cursor)
    return DueCallbackPage(items=[_due(item) for item in due], next_cursor=next_cursor)


@router.get("/tickets/{ticket_id}", response_model=FollowupTicketPublic, responses=NOT_YET_KNOWN)
async def read_ticket(
    caller: Reader, ticket_id: PathId, db: ReadDep, deps: Deps
) -> FollowupTicketPublic:
    """Followup's view of a ticket: its callbacks, oldest first, and whether one is due."""
    view = await views.get_ticket_view(db, ticket_id, deps.settings.retry_after_seconds)
    ticket, eligibility = view.ticket, view.eligibility
    return FollowupTicketPublic.model_validate(
        {
            "ticket_id": ticket.ticket_id,
            "city": ticket.city,
            "channel": ticket.channel,
            "scenario": ticket.scenario,
            "submitted_at": ticket.submitted_at,
            "resolved_at_first_contact": ticket.resolved_at_first_contact,
            "callback_due": eligibility.due,
            "eligible_since": eligibility.eligible_since,
            "reason": eligibility.reason,
            "callbacks": [_callback(c) for c in view.callbacks],
        }
    )


def _callback(callback: Callback) -> CallbackPublic:
    return CallbackPublic.model_validate(callback, from_attributes=True)


def _due(item: Eligibility) -> DueCallback:
    return DueCallback.model_validate(item, from_attributes=True)
