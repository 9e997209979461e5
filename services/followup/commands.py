"""What a request changes in followup: a callback (回访) logged and announced, in one
transaction the command opens and commits."""

from __future__ import annotations

import logging
from datetime import datetime

from services.followup.models import Callback, CallbackCreate
from services.followup.views import known_ticket
from shared.clock import not_before_submission
from shared.db import UnitOfWorkFactory, new_id
from shared.events import Actor, CallbackLogged

log = logging.getLogger(__name__)


async def log_callback(
    new_uow: UnitOfWorkFactory,
    ticket_id: str,
    command: CallbackCreate,
    *,
    now: datetime,
    retry_after_seconds: int,
    actor: Actor,
) -> Callback:
    """Record a callback and announce it (`hotline.callback.logged.v1`)."""
    async with new_uow() as uow:
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
        await uow.commit()
        log.info(
            "callback logged",
            extra={
                "ticket_id": ticket_id,
                "reached": command.reached,
                "satisfaction": command.satisfaction,
            },
        )
        return callback
