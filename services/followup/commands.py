"""What a request changes in followup: a callback (回访) logged and announced, in one
transaction the command opens and commits. A request's Idempotency-Key is claimed and its
answer stored in that transaction too (`shared.idempotency`).

A reached callback answered `unsatisfied` also reopens the ticket (重办): every such
callback, not only the first, announces `hotline.ticket.reopened.v1` in the same
transaction as its `hotline.callback.logged.v1`, so either both are published or neither.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from pydantic import BaseModel

from services.followup.models import Callback, CallbackCreate
from services.followup.views import known_ticket
from shared.clock import not_before_submission
from shared.db import UnitOfWorkFactory, new_id
from shared.events import Actor, CallbackLogged, TicketReopened
from shared.idempotency import Answer, IdempotentRequest, claim, commit_answer

log = logging.getLogger(__name__)


def reopens_ticket(command: CallbackCreate) -> bool:
    """Whether the callback reopens its ticket: the citizen was reached and unsatisfied."""
    return command.reached and command.satisfaction == "unsatisfied"


async def log_callback(
    new_uow: UnitOfWorkFactory,
    ticket_id: str,
    command: CallbackCreate,
    *,
    now: datetime,
    retry_after_seconds: int,
    actor: Actor,
    answer: Callable[[Callback], BaseModel],
    idempotency: IdempotentRequest | None = None,
) -> Answer:
    """Record a callback and announce it (`hotline.callback.logged.v1`, and
    `hotline.ticket.reopened.v1` if it reopens the ticket); answer with `answer(callback)`,
    or with the first answer to the same idempotent request (which emits nothing again)."""
    async with new_uow() as uow:
        if (earlier := await claim(uow, idempotency)) is not None:
            return earlier
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
                actor=actor,
                ticket_id=ticket_id,
                callback_id=callback.callback_id,
                reached=command.reached,
                satisfaction=command.satisfaction,
                at=at,
            )
        )
        reopened = reopens_ticket(command)
        if reopened:
            await uow.emit(
                TicketReopened(
                    actor=actor, ticket_id=ticket_id, callback_id=callback.callback_id, at=at
                )
            )
        answered = await commit_answer(uow, idempotency, answer(callback))
        log.info(
            "callback logged",
            extra={
                "ticket_id": ticket_id,
                "reached": command.reached,
                "satisfaction": command.satisfaction,
                "reopened": reopened,
            },
        )
        return answered
