"""Every rate definition of DESIGN.md, table-driven, from the facts' counters to the rates."""

from dataclasses import fields
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from services.metrics.rates import (
    COUNTERS,
    ZERO,
    Counts,
    TicketFacts,
    Totals,
    callback_counts,
    is_awaiting_reply,
    rates_of,
    ticket_counts,
    transfer_counts,
    wait_of,
    work_order_counts,
)
from shared.names import RATE_NAMES

NOW = datetime(2026, 4, 10, 12, 0, tzinfo=UTC)
DUE = datetime(2026, 4, 8, 16, 0, tzinfo=UTC)  # past due now
LATER_DUE = NOW + timedelta(days=2)  # not due yet


def phone(answered=True, wait=10.0, resolved=False, replied=0, callbacks=0):
    return Totals(
        ticket_counts(
            TicketFacts(
                "phone", answered, wait_of(wait if answered else None), resolved, replied, callbacks
            )
        )
    )


def online(answered=True, resolved=False, replied=0, callbacks=0):
    return Totals(
        ticket_counts(TicketFacts("online", answered, None, resolved, replied, callbacks))
    )


def reopens(answered: int, reopened: bool):
    facts = TicketFacts("phone", True, None, False, answered_callbacks=answered, reopened=reopened)
    return Totals(ticket_counts(facts))


def transfer(connected):
    return Totals(transfer_counts("transfer", connected))


def three_way(connected):
    return Totals(transfer_counts("three_way", connected))


def work_order(reply_at=None, quality="definite", due=DUE):
    counts = work_order_counts(due, reply_at, quality if reply_at else None)
    return Totals(counts, int(is_awaiting_reply(due, reply_at is not None, NOW)))


def callback(reached, satisfaction=None):
    return Totals(callback_counts(reached, satisfaction))


CASES = [
    # (rate, facts, numerator, denominator, value)
    ("connection_rate", [phone(), phone(), phone(answered=False), online()], 2, 3, 2 / 3),
    ("connection_rate", [online(), online(answered=False)], 0, 0, None),
    ("avg_wait_seconds", [phone(wait=10), phone(wait=20.5), phone(answered=False)], 30.5, 2, 15.25),
    ("avg_wait_seconds", [phone(answered=False), online()], 0, 0, None),
    ("answered_within_15s_rate", [phone(wait=15), phone(wait=15.001), phone(wait=3)], 2, 3, 2 / 3),
    ("answered_within_15s_rate", [phone(answered=False)], 0, 0, None),
    (
        "first_contact_resolution_rate",
        [
            phone(resolved=True),
            phone(resolved=False),
            online(resolved=True),
            phone(answered=False),
            online(answered=False),
        ],
        2,
        3,
        2 / 3,
    ),
    ("first_contact_resolution_rate", [phone(answered=False)], 0, 0, None),
    ("transfer_failure_rate", [transfer(True), transfer(False), three_way(False)], 1, 2, 0.5),
    ("transfer_failure_rate", [three_way(True)], 0, 0, None),
    ("three_way_failure_rate", [three_way(True), three_way(False), transfer(False)], 1, 2, 0.5),
    ("three_way_failure_rate", [transfer(False)], 0, 0, None),
    ("unanswered_rate", [work_order(DUE), work_order(), work_order(due=LATER_DUE)], 2, 3, 2 / 3),
    ("unanswered_rate", [phone()], 0, 0, None),
    # A reply exactly at due_at is on time; one microsecond later it is late.
    ("reply_timeliness_rate", [work_order(reply_at=DUE)], 1, 1, 1.0),
    ("reply_timeliness_rate", [work_order(reply_at=DUE + timedelta(microseconds=1))], 0, 1, 0.0),
    # Past due with no reply counts against; not due yet with no reply does not count.
    ("reply_timeliness_rate", [work_order(reply_at=DUE), work_order()], 1, 2, 0.5),
    ("reply_timeliness_rate", [work_order(reply_at=DUE), work_order(due=LATER_DUE)], 1, 1, 1.0),
    ("reply_timeliness_rate", [work_order(due=LATER_DUE)], 0, 0, None),
    (
        "definite_reply_rate",
        [
            work_order(reply_at=DUE, quality="definite"),
            work_order(reply_at=DUE, quality="partial"),
            work_order(reply_at=DUE + timedelta(days=3), quality="none"),
            work_order(),
        ],
        1,
        3,
        1 / 3,
    ),
    ("definite_reply_rate", [work_order(), work_order(due=LATER_DUE)], 0, 0, None),
    (
        "callback_rate",
        [
            phone(resolved=True, callbacks=1),  # eligible, called back
            phone(replied=1),  # eligible by its replied work order, not called back
            online(resolved=True, callbacks=2),  # eligible, called back twice: one ticket
            phone(callbacks=1),  # not eligible: neither resolved nor replied
        ],
        2,
        3,
        2 / 3,
    ),
    ("callback_rate", [phone(callbacks=1), phone(answered=False)], 0, 0, None),
    (
        "satisfaction_rate",
        [
            callback(True, "satisfied"),
            callback(True, "basically_satisfied"),
            callback(True, "unsatisfied"),
            callback(True, None),  # reached, no answer: not in the denominator
            callback(False, "satisfied"),  # not reached: its "answer" is ignored
            callback(False),
        ],
        2,
        3,
        2 / 3,
    ),
    ("satisfaction_rate", [callback(False), callback(True)], 0, 0, None),
    (
        "reopen_rate",
        [
            reopens(answered=1, reopened=True),
            reopens(answered=2, reopened=True),  # reopened twice or once: one ticket
            reopens(answered=1, reopened=False),
            reopens(answered=0, reopened=True),  # its answered callback not known yet
            reopens(answered=0, reopened=False),  # no answer: not in the denominator
        ],
        2,
        3,
        2 / 3,
    ),
    ("reopen_rate", [phone(callbacks=1), callback(True, "unsatisfied")], 0, 0, None),
]


@pytest.mark.parametrize(
    ("rate", "facts", "numerator", "denominator", "value"),
    CASES,
    ids=[f"{case[0]}-{index}" for index, case in enumerate(CASES)],
)
def test_each_rate_is_its_numerator_over_its_denominator(
    rate, facts, numerator, denominator, value
):
    result = rates_of(sum(facts, Totals()))[rate]
    assert result.numerator == pytest.approx(numerator)
    assert result.denominator == denominator
    if value is None:
        assert result.value is None
    else:
        assert result.value == pytest.approx(value)


def test_every_rate_is_reported_in_the_design_order_and_null_when_nothing_is_known():
    rates = rates_of(Totals())
    assert tuple(rates) == RATE_NAMES
    assert all(rate.value is None and rate.denominator == 0 for rate in rates.values())


def test_every_rate_of_every_case_is_defined_by_a_case():
    assert {case[0] for case in CASES} == set(RATE_NAMES)


def test_a_fact_whose_ticket_or_creation_is_unknown_counts_nothing():
    assert ticket_counts(None) == ZERO
    assert work_order_counts(None, DUE, "definite") == ZERO


def test_only_the_first_reply_counts_and_it_counts_once_per_work_order():
    counts = work_order_counts(DUE, DUE - timedelta(hours=1), "partial")
    assert counts.work_orders == 1
    assert counts.replied == 1
    assert counts.replied_on_time == 1
    assert counts.replied_definite == 0


def test_waits_are_exact_to_the_millisecond_so_sums_never_drift():
    waits = [0.1, 0.2, 0.3] * 1000
    total = sum((phone(wait=w).counts for w in waits), ZERO)
    assert total.phone_wait_seconds == Decimal("600.000")
    assert wait_of(12.3456) == Decimal("12.346")
    assert wait_of(None) is None


def test_counts_add_and_subtract_field_by_field():
    a = Counts(tickets=2, phone_wait_seconds=Decimal("1.5"), work_orders=1)
    b = Counts(tickets=1, phone_wait_seconds=Decimal("0.5"))
    assert a + b - b == a
    assert (a - a).is_zero()
    assert a.only(("tickets",)) == Counts(tickets=2)
    assert Counts.of({"tickets": 3, "phone_wait_seconds": 2, "work_orders": None}) == Counts(
        tickets=3, phone_wait_seconds=Decimal(2)
    )


def test_the_counts_fields_are_the_counters_in_order():
    assert tuple(field.name for field in fields(Counts)) == COUNTERS


def test_a_work_order_due_exactly_now_is_still_awaiting_its_reply():
    assert is_awaiting_reply(NOW, replied=False, now=NOW)
    assert not is_awaiting_reply(NOW - timedelta(microseconds=1), replied=False, now=NOW)
    assert not is_awaiting_reply(LATER_DUE, replied=True, now=NOW)
