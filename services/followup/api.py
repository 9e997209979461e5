"""Followup's routes: parse, call a handler, shape the answer. No SQL here."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, status

from services.followup import handlers
from services.followup.handlers import Eligibility
from services.followup.models import (
    Callback,
    CallbackCreate,
    CallbackPublic,
    DueCallback,
    DueCallbackPage,
    FollowupTicketPublic,
)
from shared.clock import utc_now
from shared.errors import MALFORMED_JSON
from shared.runtime import UowDep
from shared.settings import Settings

router = APIRouter(tags=["followup"])

NOT_YET_KNOWN: dict[int | str, dict[str, Any]] = {
    409: {
        "description": "The ticket is not known to followup yet (its event may still be on "
        "its way): retry after `Retry-After` seconds",
    },
}


def get_retry_after(request: Request) -> int:
    """What a 409 for a ticket not known yet tells the client to wait, in seconds."""
    settings: Settings = request.app.state.settings
    return settings.retry_after_seconds


RetryAfterDep = Annotated[int, Depends(get_retry_after)]


@router.post(
    "/tickets/{ticket_id}/callbacks",
    status_code=status.HTTP_201_CREATED,
    response_model=CallbackPublic,
    responses={**NOT_YET_KNOWN, **MALFORMED_JSON},
)
async def log_callback(
    ticket_id: str, body: CallbackCreate, uow: UowDep, retry_after: RetryAfterDep
) -> CallbackPublic:
    """Record a callback (回访); publishes `hotline.callback.logged.v1`.

    `satisfaction` must be null when `reached` is false, and may be null when reached (the
    citizen declined to answer). An `unsatisfied` answer reopens the ticket in dispatch
    (重办). `at` defaults to now; it may not be before the ticket's submission (422)."""
    async with uow:
        callback = await handlers.log_callback(
            uow, ticket_id, body, now=utc_now(), retry_after_seconds=retry_after
        )
    return _callback(callback)


@router.get("/callbacks/due", response_model=DueCallbackPage)
async def list_due_callbacks(
    uow: UowDep,
    city: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: str | None = None,
) -> DueCallbackPage:
    """Tickets waiting for a callback, longest waiting first; follow `next_cursor`.

    Due: solved at first contact, or a work order got its first reply, and no callback that
    reached the citizen since (the latest of those). After an unsatisfied callback, the
    reply to a new work order makes the ticket due again."""
    async with uow:
        due, next_cursor = await handlers.list_due(uow, city=city, limit=limit, cursor=cursor)
    return DueCallbackPage(items=[_due(item) for item in due], next_cursor=next_cursor)


@router.get("/tickets/{ticket_id}", response_model=FollowupTicketPublic, responses=NOT_YET_KNOWN)
async def read_ticket(
    ticket_id: str, uow: UowDep, retry_after: RetryAfterDep
) -> FollowupTicketPublic:
    """Followup's view of a ticket: its callbacks, oldest first, and whether one is due."""
    async with uow:
        view = await handlers.get_ticket_view(uow, ticket_id, retry_after)
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
