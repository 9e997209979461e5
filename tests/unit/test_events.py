"""The event contract: one model per type, forward compatible, strict where it matters."""

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from shared.events import EVENT_TYPES, CallbackLogged, CallOutcome, TicketSubmitted

NOW = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)


def submitted(**overrides):
    fields = {
        "ticket_id": "t-1",
        "city": "沈阳",
        "channel": "phone",
        "scenario": "社保查询",
        "category": "consultation",
        "submitted_at": NOW,
        "call": {"answered": True, "wait_seconds": 12.0, "resolved_at_first_contact": True},
    }
    fields.update(overrides)
    return TicketSubmitted.model_validate(fields)


def test_every_type_is_versioned_past_tense_and_registered_once():
    assert set(EVENT_TYPES) == {
        "hotline.ticket.submitted.v1",
        "hotline.transfer.attempted.v1",
        "hotline.workorder.created.v1",
        "hotline.workorder.replied.v1",
        "hotline.workorder.overdue.v1",
        "hotline.workorder.due_soon.v1",
        "hotline.callback.logged.v1",
        "hotline.ticket.reopened.v1",
    }
    for ce_type, model in EVENT_TYPES.items():
        assert model.ce_type == ce_type
        assert ce_type.rsplit(".", 1)[-1] == "v1"


def test_unknown_fields_are_ignored_so_producers_can_add_optional_ones():
    event = submitted(
        priority="high",
        call={
            "answered": True,
            "wait_seconds": 3,
            "resolved_at_first_contact": False,
            "agent": "x",
        },
    )
    assert "priority" not in event.model_dump()
    assert event.call == CallOutcome(answered=True, wait_seconds=3, resolved_at_first_contact=False)


def test_a_naive_time_is_rejected_because_every_timestamp_carries_its_offset():
    with pytest.raises(ValidationError, match="submitted_at"):
        submitted(submitted_at=datetime(2026, 3, 2, 9, 30))


def test_a_channel_outside_the_contract_is_rejected():
    with pytest.raises(ValidationError, match="channel"):
        submitted(channel="fax")


def test_events_are_frozen_facts():
    event = submitted()
    with pytest.raises(ValidationError):
        event.city = "大连"


def test_occurred_at_is_the_time_of_the_fact():
    callback = CallbackLogged(ticket_id="t", callback_id="c", reached=False, at=NOW)
    assert submitted().occurred_at() == NOW
    assert callback.occurred_at() == NOW
