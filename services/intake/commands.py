"""What a request changes in intake: a ticket recorded and announced, in one transaction."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import sqlalchemy as sa
from fastapi.exceptions import RequestValidationError
from sqlmodel import select

from services.intake.models import Ticket, TicketCreate
from shared.cities import MAX_NAME_LENGTH, Cities
from shared.clock import utc_now
from shared.db import Database, new_id
from shared.events import Actor, CallOutcome, TicketSubmitted
from shared.idempotency import IdempotencyKeyReused, body_fingerprint
from shared.outbox import insert_with_event
from shared.privacy import PhoneHasher

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Submitted:
    """The ticket's id, and whether it was an earlier submission replayed by its idempotency
    key."""

    ticket_id: str
    replayed: bool


def known_city(cities: Cities, name: str) -> str:
    """The canonical name of the city `name` names; a 422 on `city` (FastAPI's shape, the
    input cut to 64 characters) for a name not in the list."""
    canonical = cities.canonical(name)
    if canonical is None:
        raise RequestValidationError(
            [
                {
                    "type": "value_error",
                    "loc": ("body", "city"),
                    "msg": "unknown city: not in the list of cities (name it like 沈阳 or "
                    "沈阳市; a 地区, 盟 or 自治州 in full, like 延边朝鲜族自治州)",
                    "input": name[:MAX_NAME_LENGTH],
                }
            ]
        )
    return canonical


_TICKETS: sa.Table = Ticket.__table__  # type: ignore[attr-defined]
_COLUMNS = tuple(column.name for column in _TICKETS.columns)
_SUBMIT = insert_with_event(
    _TICKETS,
    _COLUMNS,
    unique="tickets_idempotency_per_key",
)
"""The ticket and its `ticket.submitted` event in one statement, once per idempotency key."""


async def submit_ticket(
    database: Database,
    command: TicketCreate,
    *,
    hasher: PhoneHasher,
    cities: Cities,
    actor: Actor,
    idempotency_key: str | None = None,
) -> Submitted:
    """Store the ticket and its `ticket.submitted` event together, once per idempotency key.
    The city is stored and announced by its canonical name: one city, one name.

    One statement, one round trip (`Database.store_with_event`); a key already used is
    looked up first, and a request that loses the race for a new key to another is answered
    as that one was.
    """
    command = command.model_copy(update={"city": known_city(cities, command.city)})
    # The body alone: the route is always `POST /tickets` (and stored fingerprints stay valid).
    body_print = body_fingerprint(command) if idempotency_key else None
    if idempotency_key:
        earlier = await _by_idempotency_key(database, actor.key_id, idempotency_key)
        if earlier is not None:
            return _replay(earlier, body_print)
    now = utc_now()
    masked = hashed = None
    if command.citizen_phone:
        masked, hashed = hasher.masked_and_hashed(command.citizen_phone)
    submitted_at = command.submitted_at or now
    # The row as a plain dict: building the ORM object only to dump it again was a
    # measurable part of a request (benchmarks/README.md).
    ticket_id = new_id()
    ticket = {
        "ticket_id": ticket_id,
        "city": command.city,
        "channel": command.channel,
        "scenario": command.scenario,
        "category": command.category,
        "content": command.content,
        "citizen_phone_masked": masked,
        "citizen_phone_hash": hashed,
        "evaluator": command.evaluator,
        "submitted_at": submitted_at,
        "recorded_at": now,
        "call_answered": command.call.answered,
        "wait_seconds": command.call.wait_seconds,
        "resolved_at_first_contact": command.call.resolved_at_first_contact,
        "idempotency_key": idempotency_key,
        "request_fingerprint": body_print,
        "submitted_by": actor.key_id,
    }
    event = TicketSubmitted(
        actor=actor,
        ticket_id=ticket_id,
        city=command.city,
        channel=command.channel,
        scenario=command.scenario,
        category=command.category,
        submitted_at=submitted_at,
        evaluator=command.evaluator,
        citizen_phone_hash=hashed,
        call=CallOutcome.model_validate(command.call.model_dump()),
    )
    if not await database.store_with_event(_SUBMIT, ticket, event):
        # Another request with the same key won the race: answer as it did.
        earlier = (
            await _by_idempotency_key(database, actor.key_id, idempotency_key)
            if idempotency_key
            else None
        )
        if earlier is None:
            raise RuntimeError("the ticket was not stored, and no earlier one has its key")
        return _replay(earlier, body_print)
    log.info("ticket submitted", extra={"ticket_id": ticket_id, "city": command.city})
    return Submitted(ticket_id, replayed=False)


def _replay(earlier: Ticket, body_print: str | None) -> Submitted:
    if earlier.request_fingerprint != body_print:
        raise IdempotencyKeyReused("Idempotency-Key was already used with a different request body")
    return Submitted(earlier.ticket_id, replayed=True)


async def _by_idempotency_key(database: Database, key_id: str, key: str) -> Ticket | None:
    async with database.read() as db:
        result = await db.session.exec(
            select(Ticket).where(Ticket.submitted_by == key_id, Ticket.idempotency_key == key)
        )
        return result.first()
