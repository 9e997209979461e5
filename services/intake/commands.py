"""What a request changes in intake: a ticket recorded and announced, in one transaction."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from services.intake.models import Ticket, TicketCreate
from services.intake.privacy import PhoneHasher, mask_phone
from shared.clock import utc_now
from shared.db import UnitOfWork, UnitOfWorkFactory, new_id
from shared.errors import Conflict
from shared.events import CallOutcome, TicketSubmitted

log = logging.getLogger(__name__)


class IdempotencyKeyReused(Conflict):
    """The Idempotency-Key was used before with a different body."""

    code = "idempotency_key_reused"


@dataclass(frozen=True)
class Submitted:
    """The ticket, and whether it was an earlier submission replayed by its idempotency key."""

    ticket: Ticket
    replayed: bool


def fingerprint(command: TicketCreate) -> str:
    """The body as given (defaults not filled in), hashed: equal bodies, equal fingerprints."""
    canonical = json.dumps(command.model_dump(mode="json", exclude_unset=True), sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


async def submit_ticket(
    new_uow: UnitOfWorkFactory,
    command: TicketCreate,
    *,
    hasher: PhoneHasher,
    idempotency_key: str | None = None,
) -> Submitted:
    """Store the ticket and its `ticket.submitted` event together, once per idempotency key."""
    async with new_uow() as uow:
        return await _submit(uow, command, hasher=hasher, idempotency_key=idempotency_key)


async def _submit(
    uow: UnitOfWork, command: TicketCreate, *, hasher: PhoneHasher, idempotency_key: str | None
) -> Submitted:
    body_print = fingerprint(command) if idempotency_key else None
    if idempotency_key:
        earlier = await _by_idempotency_key(uow, idempotency_key)
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
    )
    uow.session.add(ticket)
    await uow.emit(
        TicketSubmitted(
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
        earlier = await _by_idempotency_key(uow, idempotency_key) if idempotency_key else None
        if earlier is None:
            raise
        return _replay(earlier, body_print)
    log.info("ticket submitted", extra={"ticket_id": ticket.ticket_id, "city": ticket.city})
    return Submitted(ticket, replayed=False)


def _replay(earlier: Ticket, body_print: str | None) -> Submitted:
    if earlier.request_fingerprint != body_print:
        raise IdempotencyKeyReused("Idempotency-Key was already used with a different request body")
    return Submitted(earlier, replayed=True)


async def _by_idempotency_key(uow: UnitOfWork, key: str) -> Ticket | None:
    result = await uow.session.exec(select(Ticket).where(Ticket.idempotency_key == key))
    return result.first()
