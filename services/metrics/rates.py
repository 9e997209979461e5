"""The rate definitions of DESIGN.md as pure functions: no database, no clock.

Every fact (a ticket, a transfer, a work order, a callback) contributes a few counters
(`Counts`). Counters add up: the stored aggregates hold their sums, and a rate is a ratio of
summed counters. So each definition lives here once, and the fact tables, the aggregates
and the naive GROUP BY all sum the same columns.

The one time-dependent part, work orders "past due now" with no reply, is not a counter: it
is all work orders minus the replied ones minus those still `awaiting_reply` (no reply, not
due yet), and the last is counted at query time from the indexed `due_at`.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Final, Self

from shared.events import Channel, ReplyQuality, Satisfaction, TransferMode

Number = int | Decimal

TICKET_COUNTERS: Final = (
    "tickets",
    "answered_tickets",
    "resolved_first",
    "phone_tickets",
    "phone_answered",
    "phone_wait_seconds",
    "phone_answered_within_15s",
    "callback_eligible",
    "callback_eligible_called",
    "reopen_eligible",
    "reopened",
)
"""Per ticket, from the ticket's own facts (and whether it has a replied work order, a
callback, an answered callback and a reopen)."""

CALLBACK_COUNTERS: Final = (
    "callbacks",
    "callbacks_reached",
    "callbacks_satisfied",
    "callbacks_basically_satisfied",
    "callbacks_unsatisfied",
)
TRANSFER_COUNTERS: Final = ("transfers", "transfers_failed", "three_way", "three_way_failed")
WORK_ORDER_COUNTERS: Final = (
    "work_orders",
    "replied_definite",
    "replied_partial",
    "replied_none",
    "replied_on_time_definite",
    "replied_on_time_partial",
    "replied_on_time_none",
)

PER_TICKET: Final = TICKET_COUNTERS + CALLBACK_COUNTERS
"""Counters the `department` filter ignores (call and callback rates)."""
PER_DEPARTMENT: Final = TRANSFER_COUNTERS + WORK_ORDER_COUNTERS
"""Counters the `department` filter narrows (transfer, three-way, work-order, reply rates)."""
COUNTERS: Final = PER_TICKET + PER_DEPARTMENT

DECIMAL_COUNTERS: Final = frozenset({"phone_wait_seconds"})
"""Sums of seconds, kept as exact decimals (milliseconds) so totals never drift."""

WAIT_QUANTUM: Final = Decimal("0.001")
QUICK_ANSWER_SECONDS: Final = Decimal(15)


@dataclass(frozen=True, slots=True)
class Counts:
    """A vector of counters; the zero vector by default. Adds and subtracts field by field."""

    tickets: int = 0
    answered_tickets: int = 0
    resolved_first: int = 0
    phone_tickets: int = 0
    phone_answered: int = 0
    phone_wait_seconds: Decimal = Decimal(0)
    phone_answered_within_15s: int = 0
    callback_eligible: int = 0
    callback_eligible_called: int = 0
    reopen_eligible: int = 0
    reopened: int = 0
    callbacks: int = 0
    callbacks_reached: int = 0
    callbacks_satisfied: int = 0
    callbacks_basically_satisfied: int = 0
    callbacks_unsatisfied: int = 0
    transfers: int = 0
    transfers_failed: int = 0
    three_way: int = 0
    three_way_failed: int = 0
    work_orders: int = 0
    replied_definite: int = 0
    replied_partial: int = 0
    replied_none: int = 0
    replied_on_time_definite: int = 0
    replied_on_time_partial: int = 0
    replied_on_time_none: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(*map(operator.add, _all_of(self), _all_of(other)))

    def __sub__(self, other: Counts) -> Counts:
        return Counts(*map(operator.sub, _all_of(self), _all_of(other)))

    def __getitem__(self, name: str) -> Any:
        return getattr(self, name)

    def is_zero(self) -> bool:
        """True when every counter is 0."""
        return not any(_all_of(self))

    def only(self, names: tuple[str, ...]) -> Counts:
        """These counters kept, every other one 0."""
        return Counts(**{name: self[name] for name in names})

    def values(self, names: tuple[str, ...] = COUNTERS) -> dict[str, Number]:
        """The named counters as a dict (column name -> value)."""
        return {name: self[name] for name in names}

    @classmethod
    def of(cls, row: Mapping[Any, Any], names: tuple[str, ...] = COUNTERS) -> Self:
        """The named counters read from a row (a mapping); missing or NULL ones are 0."""
        values: dict[str, Any] = {}
        for name in names:
            value = row.get(name)
            if value is not None:
                values[name] = Decimal(value) if name in DECIMAL_COUNTERS else int(value)
        return cls(**values)

    @classmethod
    def summed(cls, names: tuple[str, ...], sums: Sequence[Any]) -> Self:
        """The named counters from SQL sums in the same order (NULL, i.e. no rows, is 0)."""
        values: dict[str, Any] = {}
        for name, value in zip(names, sums, strict=True):
            if value is not None:
                values[name] = Decimal(value) if name in DECIMAL_COUNTERS else int(value)
        return cls(**values)

    @property
    def replied(self) -> int:
        """Work orders with a first reply."""
        return self.replied_definite + self.replied_partial + self.replied_none

    @property
    def replied_on_time(self) -> int:
        """Work orders whose first reply came at or before `due_at`."""
        return (
            self.replied_on_time_definite + self.replied_on_time_partial + self.replied_on_time_none
        )


ZERO: Final = Counts()
_all_of: Final = operator.attrgetter(*COUNTERS)
"""All counters of a Counts as a tuple, in COUNTERS order (the order of its fields)."""


# --- What each fact contributes -----------------------------------------------------------


@dataclass(frozen=True)
class TicketFacts:
    """What the metrics keep of a ticket, plus what its work orders and callbacks tell."""

    channel: Channel
    answered: bool
    wait_seconds: Decimal | None
    resolved_at_first_contact: bool
    replied_work_orders: int = 0
    callbacks_logged: int = 0
    answered_callbacks: int = 0
    """Reached callbacks with a satisfaction answer."""
    reopened: bool = False
    """Whether a `hotline.ticket.reopened.v1` event of the ticket arrived (重办)."""


def wait_of(seconds: float | None) -> Decimal | None:
    """A wait as stored: exact to the millisecond."""
    if seconds is None:
        return None
    return Decimal(repr(seconds)).quantize(WAIT_QUANTUM)


def ticket_counts(ticket: TicketFacts | None) -> Counts:
    """A ticket's counters; 0 for a ticket whose own event has not arrived (None).

    Answered phone calls missing `wait_seconds` (intake never sends one) count in the
    denominators of the wait rates and add nothing to their numerators. Resolution counts
    only for an answered contact, so the numerator of first-contact resolution stays within
    its denominator. Likewise a reopen counts only once an answered callback is known (the
    unsatisfied answer that caused it comes in the same transaction upstream).
    """
    if ticket is None:
        return ZERO
    phone = ticket.channel == "phone"
    phone_answered = phone and ticket.answered
    wait = ticket.wait_seconds if phone_answered and ticket.wait_seconds is not None else None
    resolved = ticket.answered and ticket.resolved_at_first_contact
    eligible = resolved or ticket.replied_work_orders > 0
    return Counts(
        tickets=1,
        answered_tickets=int(ticket.answered),
        resolved_first=int(resolved),
        phone_tickets=int(phone),
        phone_answered=int(phone_answered),
        phone_wait_seconds=wait if wait is not None else Decimal(0),
        phone_answered_within_15s=int(wait is not None and wait <= QUICK_ANSWER_SECONDS),
        callback_eligible=int(eligible),
        callback_eligible_called=int(eligible and ticket.callbacks_logged > 0),
        reopen_eligible=int(ticket.answered_callbacks > 0),
        reopened=int(ticket.answered_callbacks > 0 and ticket.reopened),
    )


def transfer_counts(mode: TransferMode, connected: bool) -> Counts:
    """A transfer (转接) or a three-way call (第三方通话), connected or not."""
    if mode == "transfer":
        return Counts(transfers=1, transfers_failed=int(not connected))
    return Counts(three_way=1, three_way_failed=int(not connected))


def work_order_counts(
    due_at: datetime | None, first_reply_at: datetime | None, quality: ReplyQuality | None
) -> Counts:
    """A work order's counters; 0 until its creation (which brings `due_at`) is known.

    Only the first reply counts. A reply exactly at `due_at` is on time.
    """
    if due_at is None:
        return ZERO
    if first_reply_at is None or quality is None:
        return Counts(work_orders=1)
    on_time = first_reply_at <= due_at
    values: dict[str, Any] = {
        "work_orders": 1,
        f"replied_{quality}": 1,
        f"replied_on_time_{quality}": int(on_time),
    }
    return Counts(**values)


def callback_counts(reached: bool, satisfaction: Satisfaction | None) -> Counts:
    """A callback (回访). Satisfaction counts only for a callback that reached the citizen.

    The satisfaction rate counts callbacks, not tickets: a ticket called back twice and
    reached twice gives two answers, and each is a judgement of the hotline.
    """
    answer = satisfaction if reached else None
    return Counts(
        callbacks=1,
        callbacks_reached=int(reached),
        callbacks_satisfied=int(answer == "satisfied"),
        callbacks_basically_satisfied=int(answer == "basically_satisfied"),
        callbacks_unsatisfied=int(answer == "unsatisfied"),
    )


def is_awaiting_reply(due_at: datetime, replied: bool, now: datetime) -> bool:
    """No reply yet and not past due: `due_at` is still ahead (or exactly now)."""
    return not replied and due_at >= now


# --- The rates ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Rate:
    """One rate with its parts; `value` is None when the denominator is 0."""

    value: float | None
    numerator: int | float
    denominator: int


def ratio(numerator: Number, denominator: int) -> Rate:
    """numerator / denominator, None for 0 / 0; a decimal numerator is shown as a float."""
    shown: int | float = float(numerator) if isinstance(numerator, Decimal) else numerator
    value = float(Decimal(numerator) / denominator) if denominator else None
    return Rate(value=value, numerator=shown, denominator=denominator)


@dataclass(frozen=True)
class Totals:
    """Summed counters of a selection of tickets, and how many of its work orders are
    awaiting a reply (no reply, not past due now)."""

    counts: Counts = ZERO
    awaiting_reply: int = 0

    def __add__(self, other: Totals) -> Totals:
        return Totals(self.counts + other.counts, self.awaiting_reply + other.awaiting_reply)


def rates_of(totals: Totals) -> dict[str, Rate]:
    """Every rate of DESIGN.md, in its table's order."""
    c = totals.counts
    unreplied = c.work_orders - c.replied
    past_due_unreplied = unreplied - totals.awaiting_reply
    answered_callbacks = (
        c.callbacks_satisfied + c.callbacks_basically_satisfied + c.callbacks_unsatisfied
    )
    return {
        "connection_rate": ratio(c.phone_answered, c.phone_tickets),
        "avg_wait_seconds": ratio(c.phone_wait_seconds, c.phone_answered),
        "answered_within_15s_rate": ratio(c.phone_answered_within_15s, c.phone_answered),
        "first_contact_resolution_rate": ratio(c.resolved_first, c.answered_tickets),
        "transfer_failure_rate": ratio(c.transfers_failed, c.transfers),
        "three_way_failure_rate": ratio(c.three_way_failed, c.three_way),
        "unanswered_rate": ratio(unreplied, c.work_orders),
        "reply_timeliness_rate": ratio(c.replied_on_time, c.replied + past_due_unreplied),
        "definite_reply_rate": ratio(c.replied_definite, c.replied),
        "callback_rate": ratio(c.callback_eligible_called, c.callback_eligible),
        "satisfaction_rate": ratio(
            c.callbacks_satisfied + c.callbacks_basically_satisfied, answered_callbacks
        ),
        "reopen_rate": ratio(c.reopened, c.reopen_eligible),
    }
