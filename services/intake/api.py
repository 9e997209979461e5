"""Intake's routes: parse, call a handler, shape the answer. No SQL here."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request, Response, status
from pydantic import AwareDatetime

from services.intake import handlers
from services.intake.models import TicketCreate, TicketCreated, TicketPage, TicketPublic
from services.intake.privacy import PhoneHasher
from shared.errors import MALFORMED_JSON
from shared.runtime import UowDep

router = APIRouter(tags=["tickets"])


def get_hasher(request: Request) -> PhoneHasher:
    """The phone hasher made at startup."""
    hasher: PhoneHasher = request.app.state.phone_hasher
    return hasher


HasherDep = Annotated[PhoneHasher, Depends(get_hasher)]


@router.post(
    "/tickets",
    status_code=status.HTTP_201_CREATED,
    response_model=TicketCreated,
    responses={
        409: {"description": "Idempotency-Key already used with a different body"},
        **MALFORMED_JSON,
    },
)
async def create_ticket(
    body: TicketCreate,
    response: Response,
    uow: UowDep,
    hasher: HasherDep,
    idempotency_key: Annotated[
        str | None, Header(alias="Idempotency-Key", min_length=1, max_length=255)
    ] = None,
) -> TicketCreated:
    """Record a citizen's request. The same Idempotency-Key and body give the same ticket."""
    async with uow:
        result = await handlers.submit_ticket(
            uow, body, hasher=hasher, idempotency_key=idempotency_key
        )
    if result.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    response.headers["Location"] = f"/tickets/{result.ticket.ticket_id}"
    return TicketCreated(ticket_id=result.ticket.ticket_id)


@router.get("/tickets/{ticket_id}", response_model=TicketPublic, responses={404: {}})
async def read_ticket(ticket_id: str, uow: UowDep) -> TicketPublic:
    """One ticket, with its phone number masked."""
    async with uow:
        return TicketPublic.of(await handlers.get_ticket(uow, ticket_id))


@router.get("/tickets", response_model=TicketPage)
async def list_tickets(
    uow: UowDep,
    city: str | None = None,
    since: Annotated[AwareDatetime | None, Query(description="submitted at or after")] = None,
    until: Annotated[AwareDatetime | None, Query(description="submitted before")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: str | None = None,
) -> TicketPage:
    """Tickets newest first; follow `next_cursor` for the next page."""
    async with uow:
        tickets, next_cursor = await handlers.list_tickets(
            uow, city=city, since=since, until=until, limit=limit, cursor=cursor
        )
    return TicketPage(items=[TicketPublic.of(t) for t in tickets], next_cursor=next_cursor)
