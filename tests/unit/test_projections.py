"""A projection is registered with the event type it handles, and only that one."""

import pytest

from shared.db import Transaction
from shared.events import CallbackLogged, TicketSubmitted, WorkOrderReplied
from shared.projections import Projections


def test_a_handler_is_found_for_its_own_event_type_only():
    projections = Projections[Transaction]()

    @projections.on(TicketSubmitted)
    async def record(tx: Transaction, event: TicketSubmitted) -> None: ...

    ticket = TicketSubmitted.model_construct(ticket_id="t")
    callback = CallbackLogged.model_construct(ticket_id="t")
    assert projections.handler_for(ticket) is record
    assert projections.handler_for(callback) is None
    assert projections.event_types == {TicketSubmitted}


def test_a_handler_annotated_for_another_event_type_is_refused():
    projections = Projections[Transaction]()

    async def record_reply(tx: Transaction, event: WorkOrderReplied) -> None: ...

    with pytest.raises(TypeError, match="WorkOrderReplied"):
        projections.on(TicketSubmitted)(record_reply)  # type: ignore[arg-type]


def test_a_second_handler_for_one_type_is_refused():
    projections = Projections[Transaction]()

    async def one(tx: Transaction, event: TicketSubmitted) -> None: ...

    async def two(tx: Transaction, event: TicketSubmitted) -> None: ...

    projections.on(TicketSubmitted)(one)
    with pytest.raises(ValueError, match="already has a handler"):
        projections.on(TicketSubmitted)(two)


def test_a_handler_must_take_a_transaction_and_an_event():
    projections = Projections[Transaction]()

    async def lonely(event: TicketSubmitted) -> None: ...

    with pytest.raises(TypeError, match="transaction, event"):
        projections.on(TicketSubmitted)(lonely)  # type: ignore[arg-type]
