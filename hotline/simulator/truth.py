"""The rates a run should produce, computed from what the services acknowledged.

The definitions are DESIGN.md's, written here a second time on purpose: the simulator
checks the metrics service, so it must not borrow its code (only the contract's names, from
`shared.names`). Every rate comes with its numerator and denominator; a denominator of 0
gives a value of None.

The players record each request the moment a service answers 201 (`SentTicket` and its
parts), so a run that breaks off halfway is still compared with what really happened.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Final

from shared.events import Channel, ReplyQuality, Satisfaction, TransferMode
from shared.names import RATE_NAMES

QUICK_ANSWER: Final = Decimal(15)
WAIT_QUANTUM: Final = Decimal("0.001")
"""Waits are compared to the millisecond, the precision intake's contract implies."""


@dataclass
class SentTransfer:
    """A transfer or three-way call dispatch acknowledged."""

    department: str
    mode: TransferMode
    connected: bool
    at: datetime


@dataclass
class SentReply:
    """A reply dispatch acknowledged."""

    quality: ReplyQuality
    at: datetime


@dataclass
class SentWorkOrder:
    """A work order dispatch acknowledged, with the `due_at` it answered, and its replies
    in the order they were sent (the first is the one the rates use)."""

    work_order_id: str
    department: str
    created_at: datetime
    due_at: datetime
    replies: list[SentReply] = field(default_factory=list)

    @property
    def first_reply(self) -> SentReply | None:
        """The reply the rates use."""
        return self.replies[0] if self.replies else None


@dataclass
class SentCallback:
    """A callback followup acknowledged."""

    reached: bool
    satisfaction: Satisfaction | None
    at: datetime


@dataclass
class SentTicket:
    """A ticket intake acknowledged, and everything acknowledged for it since."""

    ticket_id: str
    city: str
    channel: Channel
    scenario: str
    submitted_at: datetime
    answered: bool
    wait_seconds: float | None
    resolved_at_first_contact: bool
    transfers: list[SentTransfer] = field(default_factory=list)
    work_orders: list[SentWorkOrder] = field(default_factory=list)
    callbacks: list[SentCallback] = field(default_factory=list)


@dataclass(frozen=True)
class Expected:
    """One rate: its value (None when the denominator is 0), numerator and denominator."""

    value: float | None
    numerator: Decimal | int
    denominator: int

    @classmethod
    def of(cls, numerator: Decimal | int, denominator: int) -> Expected:
        """numerator / denominator, None when the denominator is 0."""
        value = float(Decimal(numerator) / denominator) if denominator else None
        return cls(value, numerator, denominator)

    def __add__(self, other: Expected) -> Expected:
        return Expected.of(self.numerator + other.numerator, self.denominator + other.denominator)


@dataclass(frozen=True)
class Selection:
    """The `/rates` filters: a window on `submitted_at` (since inclusive, until exclusive)
    and optional city, channel, scenario and department (the last narrows only the
    transfer, three-way, work-order and reply rates)."""

    since: datetime | None = None
    until: datetime | None = None
    city: str | None = None
    channel: Channel | None = None
    scenario: str | None = None
    department: str | None = None

    def selects(self, ticket: SentTicket) -> bool:
        """Whether the ticket is in the selection (department aside)."""
        return (
            (self.since is None or ticket.submitted_at >= self.since)
            and (self.until is None or ticket.submitted_at < self.until)
            and (self.city is None or ticket.city == self.city)
            and (self.channel is None or ticket.channel == self.channel)
            and (self.scenario is None or ticket.scenario == self.scenario)
        )

    def of_department(self, department: str) -> bool:
        """Whether a transfer or work order of `department` counts."""
        return self.department is None or department == self.department


def wait_of(seconds: float) -> Decimal:
    """A wait to the millisecond, exactly."""
    return Decimal(repr(seconds)).quantize(WAIT_QUANTUM)


def expected_rates(
    tickets: Iterable[SentTicket], *, now: datetime, selection: Selection | None = None
) -> dict[str, Expected]:
    """Every rate of DESIGN.md over the selected tickets; `now` decides what is past due."""
    chosen = selection or Selection()
    picked = [t for t in tickets if chosen.selects(t)]
    phone = [t for t in picked if t.channel == "phone"]
    phone_answered = [t for t in phone if t.answered]
    answered = [t for t in picked if t.answered]
    waits = [wait_of(t.wait_seconds) for t in phone_answered if t.wait_seconds is not None]

    transfers = [x for t in picked for x in t.transfers if chosen.of_department(x.department)]
    plain = [x for x in transfers if x.mode == "transfer"]
    three_way = [x for x in transfers if x.mode == "three_way"]

    orders = [w for t in picked for w in t.work_orders if chosen.of_department(w.department)]
    replied = [w for w in orders if w.first_reply is not None]
    on_time = [w for w in replied if w.first_reply is not None and w.first_reply.at <= w.due_at]
    past_due_unreplied = [w for w in orders if w.first_reply is None and w.due_at < now]
    definite = [w for w in replied if w.first_reply and w.first_reply.quality == "definite"]

    eligible = [t for t in picked if _callback_eligible(t)]
    called = [t for t in eligible if t.callbacks]
    reached_answers = [answer for t in picked for answer in _answers(t)]
    pleased = [s for s in reached_answers if s in ("satisfied", "basically_satisfied")]
    answered_tickets = [t for t in picked if _answers(t)]
    reopened = [t for t in answered_tickets if "unsatisfied" in _answers(t)]

    return {
        "connection_rate": Expected.of(len(phone_answered), len(phone)),
        "avg_wait_seconds": Expected.of(sum(waits, Decimal(0)), len(phone_answered)),
        "answered_within_15s_rate": Expected.of(
            sum(1 for w in waits if w <= QUICK_ANSWER), len(phone_answered)
        ),
        "first_contact_resolution_rate": Expected.of(
            sum(1 for t in answered if t.resolved_at_first_contact), len(answered)
        ),
        "transfer_failure_rate": Expected.of(sum(1 for x in plain if not x.connected), len(plain)),
        "three_way_failure_rate": Expected.of(
            sum(1 for x in three_way if not x.connected), len(three_way)
        ),
        "unanswered_rate": Expected.of(len(orders) - len(replied), len(orders)),
        "reply_timeliness_rate": Expected.of(len(on_time), len(replied) + len(past_due_unreplied)),
        "definite_reply_rate": Expected.of(len(definite), len(replied)),
        "callback_rate": Expected.of(len(called), len(eligible)),
        "satisfaction_rate": Expected.of(len(pleased), len(reached_answers)),
        "reopen_rate": Expected.of(len(reopened), len(answered_tickets)),
    }


def _answers(ticket: SentTicket) -> list[str]:
    """The satisfaction answers of the ticket's reached callbacks; each `unsatisfied` one
    reopens the ticket (重办)."""
    return [c.satisfaction for c in ticket.callbacks if c.reached and c.satisfaction is not None]


def _callback_eligible(ticket: SentTicket) -> bool:
    """Resolved at first contact (an answered contact), or with a replied work order; the
    department filter does not narrow this per-ticket rate."""
    resolved = ticket.answered and ticket.resolved_at_first_contact
    return resolved or any(w.first_reply is not None for w in ticket.work_orders)


def combined(first: dict[str, Expected], second: dict[str, Expected]) -> dict[str, Expected]:
    """Two selections' rates added up (numerators and denominators summed)."""
    return {name: first[name] + second[name] for name in RATE_NAMES}
