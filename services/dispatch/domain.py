"""Dispatch's rules as plain functions: no framework, no database, easy to test.

Reopening (重办): a reached callback answered `unsatisfied` reopens the ticket. It stays
reopened until a later reached callback is answered `satisfied` or `basically_satisfied`
(the citizen confirms the redo); each unsatisfied answer counts one reopen. Unreached
callbacks and answers declined (satisfaction null) change nothing. Derived from the stored
callbacks on every read, so callbacks may arrive in any order, or before the ticket.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from shared.events import CalendarSource
from shared.names import SATISFIED
from shared.workdays import WorkCalendar

WorkOrderStatus = Literal["unanswered", "replied"]


@dataclass(frozen=True)
class DispatchPolicy:
    """What dispatch's commands need from the configuration, made once at startup."""

    calendar: WorkCalendar
    default_due_working_days: int
    retry_after_seconds: int


@dataclass(frozen=True)
class CallbackFact:
    """What a callback said, as far as reopening goes."""

    callback_id: str
    at: datetime
    reached: bool
    satisfaction: str | None


@dataclass(frozen=True)
class ReopenState:
    """Whether a ticket is reopened now, how often it was, and since when."""

    reopened: bool
    count: int
    reopened_at: datetime | None


def reopen_state(callbacks: Iterable[CallbackFact]) -> ReopenState:
    """The reopen state the callbacks add up to, whatever order they arrived in."""
    answered = sorted(
        (c for c in callbacks if c.reached and c.satisfaction is not None),
        key=lambda c: (c.at, c.callback_id),
    )
    count = sum(1 for c in answered if c.satisfaction == "unsatisfied")
    if not answered or answered[-1].satisfaction in SATISFIED:
        return ReopenState(reopened=False, count=count, reopened_at=None)
    # The unsatisfied answer that opened the current reopen: the first since the last
    # satisfied one.
    since = len(answered) - 1
    while since > 0 and answered[since - 1].satisfaction not in SATISFIED:
        since -= 1
    return ReopenState(reopened=True, count=count, reopened_at=answered[since].at)


def work_order_status(first_reply_at: datetime | None) -> WorkOrderStatus:
    """`replied` once a first reply is recorded, `unanswered` until then."""
    return "unanswered" if first_reply_at is None else "replied"


def is_overdue(first_reply_at: datetime | None, due_at: datetime, now: datetime) -> bool:
    """No reply yet and the deadline has passed (a reply at exactly `due_at` is on time)."""
    return first_reply_at is None and due_at < now


def calendar_note(source: CalendarSource) -> str | None:
    """What a client should know about a deadline's calendar source; None when all is well."""
    if source == "weekends_only":
        return (
            "due_at counts weekends only: no holiday schedule is known for a year this "
            "deadline spans (neither the holiday file nor chinesecalendar covers it); add the "
            "State Council's schedule to the holiday file"
        )
    return None
