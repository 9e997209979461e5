"""The timeline's pure rules: the order of a ticket's events, each deadline's outcome, and
the state at a moment, whatever order the events arrived in."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from services.metrics.timeline import Entry, story

T0 = datetime(2026, 3, 2, 1, tzinfo=UTC)


def at(days: float) -> datetime:
    return T0 + timedelta(days=days)


def submitted(resolved: bool = False) -> Entry:
    call = {"answered": True, "wait_seconds": 3, "resolved_at_first_contact": resolved}
    return Entry("e-t", "hotline.ticket.submitted.v1", T0, None, {"call": call})


def created(wo: str, days: float, due: float, redo: int = 0) -> Entry:
    data = {
        "department": "住建局",
        "created_at": at(days).isoformat(),
        "due_at": at(due).isoformat(),
    }
    return Entry(
        f"e-c-{wo}", "hotline.workorder.created.v1", at(days), wo, data | {"redo_round": redo}
    )


def replied(wo: str, days: float, reply: str = "r") -> Entry:
    return Entry(
        f"e-r-{wo}-{reply}", "hotline.workorder.replied.v1", at(days), wo, {"department": "住建局"}
    )


def callback(cid: str, days: float, satisfaction: str | None, reached: bool = True) -> Entry:
    data = {"reached": reached, "satisfaction": satisfaction}
    return Entry(f"e-cb-{cid}", "hotline.callback.logged.v1", at(days), None, data)


def state(entries: list[Entry], days: float) -> str:
    return story(entries, as_of=at(days)).state


def test_states_through_a_ticket_with_a_reopen_and_a_redo():
    entries = [
        submitted(),
        created("W1", 0.1, 5),
        replied("W1", 3),
        callback("C1", 4, "unsatisfied"),
        created("W2", 4.5, 9, redo=1),
        replied("W2", 10),
        callback("C2", 11, "satisfied"),
    ]
    expected = {0.05: "open", 1: "awaiting_reply", 3.5: "replied", 4.2: "reopened",
                5: "awaiting_reply", 9.5: "overdue", 10.5: "replied", 12: "closed"}  # fmt: skip
    for order in range(5):  # arrival order does not matter
        random.Random(order).shuffle(entries)
        assert {days: state(entries, days) for days in expected} == expected


@pytest.mark.parametrize(
    ("entries", "expected"),
    [
        ([submitted(resolved=True)], "closed"),
        ([submitted(resolved=False)], "open"),
        ([submitted(), callback("C", 1, None)], "open"),  # declined to answer: changes nothing
        ([submitted(), callback("C", 1, "unsatisfied", reached=False)], "open"),
        ([submitted(resolved=True), callback("C", 1, "unsatisfied")], "reopened"),
        ([created("W", 1, 3)], "overdue"),  # the ticket's own event still on its way
        ([replied("W", 1)], "replied"),  # a reply before its work order's creation
    ],
)
def test_the_state_of_partial_stories(entries, expected):
    assert state(entries, 20) == expected


def test_a_deadline_is_met_missed_or_still_open():
    entries = [
        *(created("ON", 0, 5), replied("ON", 5)),
        *(created("LATE", 0, 5), replied("LATE", 5.01)),
        *(created("TWICE", 0, 5), replied("TWICE", 3, "second"), replied("TWICE", 2, "first")),
    ]
    met = {d.work_order_id: d.met for d in story(entries, as_of=at(6)).deadlines}
    assert met == {"ON": True, "LATE": False, "TWICE": True}
    pending = story([created("P", 0, 5)], as_of=at(4)).deadlines[0]
    assert (pending.met, pending.first_reply_at) == (None, None)
    assert story([created("P", 0, 5)], as_of=at(5.5)).deadlines[0].met is False
    earliest = story(entries, as_of=at(6)).deadlines[2]
    assert earliest.first_reply_at == at(2)


def test_events_after_the_moment_are_left_out_and_same_instant_ones_keep_the_lifecycle():
    same = T0
    reply_first = [
        Entry("a", "hotline.workorder.replied.v1", same, "W", {}),
        Entry("b", "hotline.workorder.created.v1", same, "W", {}),
        Entry("c", "hotline.ticket.submitted.v1", same, None, {}),
    ]
    told = story(reply_first, as_of=same)
    assert [e.event_id for e in told.events] == ["c", "b", "a"]
    assert story(reply_first, as_of=same - timedelta(microseconds=1)).events == []
