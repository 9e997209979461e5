"""The simulator's own rate calculator, on hand-made tickets: DESIGN.md's definitions."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from hotline.simulator.truth import (
    Expected,
    Selection,
    SentCallback,
    SentReply,
    SentTicket,
    SentTransfer,
    SentWorkOrder,
    combined,
    expected_rates,
)
from shared.names import RATE_NAMES

NOW = datetime(2026, 6, 1, tzinfo=UTC)
T0 = datetime(2026, 3, 2, 9, tzinfo=UTC)


def ticket(n=0, *, channel="phone", answered=True, wait=10.0, resolved=False, **parts):
    return SentTicket(
        ticket_id=f"t{n}",
        city=parts.pop("city", "沈阳"),
        channel=channel,
        scenario=parts.pop("scenario", "退休一件事"),
        submitted_at=parts.pop("submitted_at", T0 + timedelta(hours=n)),
        answered=answered,
        wait_seconds=wait if channel == "phone" and answered else None,
        resolved_at_first_contact=resolved,
        **parts,
    )


def transfer(mode="transfer", connected=True, department="人社"):
    return SentTransfer(department, mode, connected, T0)


def order(*replies, due=T0 + timedelta(days=7), department="人社"):
    return SentWorkOrder(
        work_order_id="w",
        department=department,
        created_at=T0,
        due_at=due,
        replies=[SentReply(quality, at) for quality, at in replies],
    )


def callback(reached=True, satisfaction="satisfied"):
    return SentCallback(reached, satisfaction, T0 + timedelta(days=1))


ON_TIME = T0 + timedelta(days=3)
LATE = T0 + timedelta(days=9)
DUE = T0 + timedelta(days=7)


CASES = [
    pytest.param([], {name: (None, 0, 0) for name in RATE_NAMES}, id="nothing-sent-all-null"),
    pytest.param(
        [
            ticket(0, wait=10.0),
            ticket(1, wait=15.0),
            ticket(2, wait=20.5),
            ticket(3, answered=False),
            ticket(4, channel="online"),
        ],
        {
            "connection_rate": (0.75, 3, 4),
            "avg_wait_seconds": (15.166666666666666, Decimal("45.5"), 3),
            "answered_within_15s_rate": (2 / 3, 2, 3),
            "first_contact_resolution_rate": (0.0, 0, 4),
            "transfer_failure_rate": (None, 0, 0),
        },
        id="calls-exactly-15s-is-quick-online-has-no-wait",
    ),
    pytest.param(
        [
            ticket(0, resolved=True),
            ticket(1, channel="online", resolved=True),
            ticket(2, channel="online", answered=False),
            ticket(3),
        ],
        {"first_contact_resolution_rate": (2 / 3, 2, 3), "connection_rate": (1.0, 2, 2)},
        id="resolution-counts-answered-contacts-of-both-channels",
    ),
    pytest.param(
        [
            ticket(
                0,
                transfers=[
                    transfer(),
                    transfer(connected=False),
                    transfer(connected=False),
                    transfer("three_way"),
                ],
            )
        ],
        {"transfer_failure_rate": (2 / 3, 2, 3), "three_way_failure_rate": (0.0, 0, 1)},
        id="transfers-and-three-way-calls-counted-apart",
    ),
    pytest.param(
        [
            ticket(
                0,
                work_orders=[
                    order(("definite", ON_TIME)),
                    order(("partial", DUE)),
                    order(("definite", LATE)),
                    order(),
                    order(due=NOW + timedelta(days=1)),
                ],
            )
        ],
        {
            "unanswered_rate": (0.4, 2, 5),
            # on time: by due_at, inclusive; denominator: 3 replied + 1 past due unanswered
            "reply_timeliness_rate": (0.5, 2, 4),
            "definite_reply_rate": (2 / 3, 2, 3),
        },
        id="work-orders-on-time-at-due-late-never-not-yet-due",
    ),
    pytest.param(
        [ticket(0, work_orders=[order(("partial", ON_TIME), ("definite", LATE))])],
        {"definite_reply_rate": (0.0, 0, 1), "reply_timeliness_rate": (1.0, 1, 1)},
        id="only-the-first-reply-counts",
    ),
    pytest.param(
        [
            ticket(0, resolved=True, callbacks=[callback(reached=False), callback()]),
            ticket(1, resolved=True),
            ticket(2, work_orders=[order(("none", ON_TIME))], callbacks=[callback(False)]),
            ticket(3, work_orders=[order()], callbacks=[callback(True, "unsatisfied")]),
            ticket(4, answered=False),
        ],
        {
            # eligible: 0, 1, 2 (resolved, or a replied work order); called: 0 and 2
            "callback_rate": (2 / 3, 2, 3),
            # reached with an answer: ticket 0's second and ticket 3's (eligible or not)
            "satisfaction_rate": (0.5, 1, 2),
        },
        id="callbacks-eligibility-and-satisfaction",
    ),
    pytest.param(
        [
            ticket(
                0,
                resolved=True,
                callbacks=[callback(True, None), callback(True, "basically_satisfied")],
            )
        ],
        {"satisfaction_rate": (1.0, 1, 1), "callback_rate": (1.0, 1, 1)},
        id="declined-answers-leave-satisfaction-basically-satisfied-counts",
    ),
    pytest.param(
        [
            ticket(0, callbacks=[callback(True, "unsatisfied"), callback(True, "satisfied")]),
            ticket(1, callbacks=[callback(True, "unsatisfied"), callback(True, "unsatisfied")]),
            ticket(2, callbacks=[callback(True, "basically_satisfied")]),
            ticket(3, callbacks=[callback(False, "unsatisfied"), callback(True, None)]),
        ],
        # answered: 0, 1, 2 (3's only reached callback declined); reopened: 0 and 1, once each
        {"reopen_rate": (2 / 3, 2, 3), "satisfaction_rate": (0.4, 2, 5)},
        id="reopens-count-tickets-with-an-unsatisfied-answer",
    ),
]


@pytest.mark.parametrize(("tickets", "expected"), CASES)
def test_expected_rates_follow_the_design_definitions(tickets, expected):
    rates = expected_rates(tickets, now=NOW)
    assert list(rates) == list(RATE_NAMES)
    for name, (value, numerator, denominator) in expected.items():
        rate = rates[name]
        assert (rate.numerator, rate.denominator) == (numerator, denominator), name
        if value is None:
            assert rate.value is None, name
        else:
            assert rate.value == pytest.approx(value), name


def test_the_window_takes_since_inclusive_and_until_exclusive():
    since, until = T0, T0 + timedelta(days=1)
    tickets = [
        ticket(0, submitted_at=since - timedelta(seconds=1)),
        ticket(1, submitted_at=since),
        ticket(2, submitted_at=until - timedelta(seconds=1)),
        ticket(3, submitted_at=until),
    ]
    rates = expected_rates(tickets, now=NOW, selection=Selection(since=since, until=until))
    assert rates["connection_rate"].denominator == 2


def test_city_channel_and_scenario_select_tickets():
    tickets = [
        ticket(0, city="沈阳"),
        ticket(1, city="青岛"),
        ticket(2, city="青岛", channel="online"),
        ticket(3, city="青岛", scenario="育儿补贴领取"),
    ]
    rates = expected_rates(tickets, now=NOW, selection=Selection(city="青岛", channel="phone"))
    assert rates["connection_rate"].denominator == 2
    rates = expected_rates(tickets, now=NOW, selection=Selection(scenario="育儿补贴领取"))
    assert rates["connection_rate"].denominator == 1


def test_department_narrows_transfers_and_work_orders_but_not_calls_or_callbacks():
    tickets = [
        ticket(
            0,
            transfers=[transfer(department="税务"), transfer(connected=False, department="人社")],
            work_orders=[order(("definite", ON_TIME), department="税务")],
            callbacks=[callback()],
        )
    ]
    rates = expected_rates(tickets, now=NOW, selection=Selection(department="人社"))
    assert (
        rates["transfer_failure_rate"].numerator,
        rates["transfer_failure_rate"].denominator,
    ) == (
        1,
        1,
    )
    assert rates["unanswered_rate"].denominator == 0
    assert rates["unanswered_rate"].value is None
    assert rates["connection_rate"].denominator == 1
    # Eligible through the 税务 work order's reply, department filter or not.
    assert (rates["callback_rate"].numerator, rates["callback_rate"].denominator) == (1, 1)


def test_waits_are_summed_exactly_to_the_millisecond():
    tickets = [ticket(n, wait=0.1) for n in range(3)]
    rate = expected_rates(tickets, now=NOW)["avg_wait_seconds"]
    assert rate.numerator == Decimal("0.300")
    assert rate.value == pytest.approx(0.1)


def test_a_baseline_adds_numerators_and_denominators():
    first = {name: Expected.of(1, 2) for name in RATE_NAMES}
    second = {name: Expected.of(0, 0) for name in RATE_NAMES}
    second["connection_rate"] = Expected.of(3, 6)
    total = combined(first, second)
    assert total["connection_rate"] == Expected.of(4, 8)
    assert total["connection_rate"].value == 0.5
    assert total["satisfaction_rate"] == Expected.of(1, 2)
    assert Expected.of(0, 0).value is None
