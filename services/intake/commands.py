"""What a request changes in intake: a ticket recorded and announced, in one transaction."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from services.intake.models import Ticket, TicketCreate
from services.intake.privacy import PhoneHasher, mask_phone
from shared.cities import MAX_NAME_LENGTH, Cities
from shared.clock import utc_now
from shared.db import UnitOfWork, UnitOfWorkFactory, new_id
from shared.events import Actor, CallOutcome, TicketSubmitted
from shared.idempotency import IdempotencyKeyReused, body_fingerprint

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Submitted:
    """The ticket, and whether it was an earlier submission replayed by its idempotency key."""

    ticket: Ticket
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


async def submit_ticket(
    new_uow: UnitOfWorkFactory,
    command: TicketCreate,
    *,
    hasher: PhoneHasher,
    cities: Cities,
    actor: Actor,
    idempotency_key: str | None = None,
) -> Submitted:
    """Store the ticket and its `ticket.submitted` event together, once per idempotency key.
    The city is stored and announced by its canonical name: one city, one name."""
    command = command.model_copy(update={"city": known_city(cities, command.city)})
    async with new_uow() as uow:
        return await _submit(
            uow, command, hasher=hasher, actor=actor, idempotency_key=idempotency_key
        )


async def _submit(
    uow: UnitOfWork,
    command: TicketCreate,
    *,
    hasher: PhoneHasher,
    actor: Actor,
    idempotency_key: str | None,
) -> Submitted:
    # The body alone: the route is always `POST /tickets` (and stored fingerprints stay valid).
    body_print = body_fingerprint(command) if idempotency_key else None
    if idempotency_key:
        earlier = await _by_idempotency_key(uow, actor.key_id, idempotency_key)
        if earlier is not None:
            return _replay(earlier, body_print)
    now = utc_now()
    ticket = Ticket(
        ticket_id=new_id(),
        city=command.city,
        channel=command.channel,
        scenario=command.scenario,
        category=command.category,
        content=command.content,
        citizen_phone_masked=mask_phone(command.citizen_phone) if command.citizen_phone else None,
        citizen_phone_hash=hasher.hash(command.citizen_phone) if command.citizen_phone else None,
        evaluator=command.evaluator,
        submitted_at=command.submitted_at or now,
        recorded_at=now,
        call_answered=command.call.answered,
        wait_seconds=command.call.wait_seconds,
        resolved_at_first_contact=command.call.resolved_at_first_contact,
        idempotency_key=idempotency_key,
        request_fingerprint=body_print,
        submitted_by=actor.key_id,
    )
    uow.session.add(ticket)
    await uow.emit(
        TicketSubmitted(
            actor=actor,
            ticket_id=ticket.ticket_id,
            city=ticket.city,
            channel=command.channel,
            scenario=ticket.scenario,
            category=command.category,
            submitted_at=ticket.submitted_at,
            evaluator=ticket.evaluator,
            call=CallOutcome.model_validate(command.call.model_dump()),
        )
    )
    try:
        await uow.commit()
    except IntegrityError:
        # Another request with the same key won the race: answer as it did.
        await uow.rollback()
        earlier = (
            await _by_idempotency_key(uow, actor.key_id, idempotency_key)
            if idempotency_key
            else None
        )
        if earlier is None:
            raise
        return _replay(earlier, body_print)
    log.info("ticket submitted", extra={"ticket_id": ticket.ticket_id, "city": ticket.city})
    return Submitted(ticket, replayed=False)


def _replay(earlier: Ticket, body_print: str | None) -> Submitted:
    if earlier.request_fingerprint != body_print:
        raise IdempotencyKeyReused("Idempotency-Key was already used with a different request body")
    return Submitted(earlier, replayed=True)


async def _by_idempotency_key(uow: UnitOfWork, key_id: str, key: str) -> Ticket | None:
    result = await uow.session.exec(
        select(Ticket).where(Ticket.submitted_by == key_id, Ticket.idempotency_key == key)
    )
    return result.first()
