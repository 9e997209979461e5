"""Intake's routes: parse, call a command or a view, shape the answer. No SQL here."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Response, status

from services.intake import commands, views
from services.intake.deps import Deps
from services.intake.models import TicketCreate, TicketCreated, TicketPage, TicketPublic
from shared.app import ReadDep
from shared.auth.http import Allow
from shared.auth.store import Principal
from shared.idempotency import idempotent_responses
from shared.inputs import Label, PathId, QueryTime, SafeText
from shared.openapi import set_location
from shared.pagination import Cursor

router = APIRouter(tags=["tickets"])

Evaluator = Annotated[Principal, Depends(Allow("evaluator"))]
Reader = Annotated[Principal, Depends(Allow("evaluator", "operator", "auditor"))]
"""An evaluator reads the tickets its own key submitted (another's is a 404)."""


def _own_only(caller: Principal) -> str | None:
    return caller.key_id if caller.role == "evaluator" else None


@router.post(
    "/tickets",
    status_code=status.HTTP_201_CREATED,
    response_model=TicketCreated,
    responses=idempotent_responses({}),
)
async def create_ticket(
    caller: Evaluator,
    body: TicketCreate,
    response: Response,
    deps: Deps,
    idempotency_key: Annotated[
        SafeText | None, Header(alias="Idempotency-Key", min_length=1, max_length=255)
    ] = None,
) -> TicketCreated:
    """Record a citizen's request. The same Idempotency-Key and body give the same ticket."""
    result = await commands.submit_ticket(
        deps.database,
        body,
        hasher=deps.hasher,
        cities=deps.cities,
        actor=caller.actor,
        idempotency_key=idempotency_key,
    )
    if result.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    set_location(response, "tickets", result.ticket_id)
    return TicketCreated(ticket_id=result.ticket_id)


@router.get(
    "/tickets/{ticket_id}",
    response_model=TicketPublic,
    responses={404: {"description": "No such ticket (or not one this evaluator submitted)"}},
)
async def read_ticket(caller: Reader, ticket_id: PathId, db: ReadDep) -> TicketPublic:
    """One ticket, with its phone number masked."""
    ticket = await views.get_ticket(db, ticket_id, only_submitted_by=_own_only(caller))
    return TicketPublic.of(ticket)


@router.get("/tickets", response_model=TicketPage)
async def list_tickets(
    caller: Reader,
    db: ReadDep,
    deps: Deps,
    city: Label | None = None,
    since: Annotated[QueryTime | None, Query(description="submitted at or after")] = None,
    until: Annotated[QueryTime | None, Query(description="submitted before")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Cursor = None,
) -> TicketPage:
    """Tickets newest first; follow `next_cursor` for the next page. An evaluator's key
    lists the tickets it submitted. `city` may be given by either of its names."""
    tickets, next_cursor = await views.list_tickets(
        db,
        city=deps.cities.canonical(city) or city if city else None,
        since=since,
        until=until,
        limit=limit,
        cursor=cursor,
        only_submitted_by=_own_only(caller),
    )
    return TicketPage(items=[TicketPublic.of(t) for t in tickets], next_cursor=next_cursor)
