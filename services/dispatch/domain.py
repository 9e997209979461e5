"""Dispatch's rules as plain functions: no framework, no database, easy to test.

Reopening (重办): a reached callback answered `unsatisfied` reopens the ticket. It stays
reopened until a later reached callback is answered `satisfied` or `basically_satisfied`
(the citizen confirms the redo); each unsatisfied answer counts one reopen. Unreached
callbacks and answers declined (satisfaction null) change nothing. Derived from the stored
callbacks on every read, so callbacks may arrive in any order, or before the ticket.

Deadlines: a work order is overdue once `due_at` has passed with no reply, and due soon
(督办) within the configured lead time before it (`due_soon_cutoff`); the sweeper announces
each once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from shared.events import CalendarSource
from shared.names import SATISFIED
from shared.workdays import WorkCalendar, due_at

WorkOrderStatus = Literal["unanswered", "replied"]


@dataclass(frozen=True)
class DispatchPolicy:
    """What dispatch's commands need from the configuration, made once at startup."""

    calendar: WorkCalendar
    default_due_working_days: int
    retry_after_seconds: int
    due_soon_working_days: int
    """The due-soon warning's lead time in working days (`due_soon_cutoff`); 0: none."""


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


def due_soon_cutoff(
    now: datetime, lead_working_days: int, calendar: WorkCalendar
) -> datetime | None:
    """Work orders due before this moment are within the warning's lead time at `now`; None
    when the warning is off (a lead of 0).

    The lead counts working days back from the deadline, the deadline's own day first: with
    a lead of N, a work order due at 24:00 of working day D is warned from 00:00 (Asia/
    Shanghai) of the N-th working day counted back from D. That is exactly when fewer than N
    working days lie wholly between the start of `now`'s next day and the deadline, i.e.
    when the deadline comes before that of a work order created `now` with N working days:
    `shared.workdays.due_at(now, N)`.
    """
    if lead_working_days < 1:
        return None
    return due_at(now, lead_working_days, calendar).due_at


def is_due_soon(
    first_reply_at: datetime | None,
    deadline: datetime,
    now: datetime,
    lead_working_days: int,
    calendar: WorkCalendar,
) -> bool:
    """No reply yet, not past the deadline (then it is overdue instead), and within the
    lead time (`due_soon_cutoff`). The sweeper's query asks the same in SQL."""
    cutoff = due_soon_cutoff(now, lead_working_days, calendar)
    return first_reply_at is None and cutoff is not None and now <= deadline < cutoff


def calendar_note(source: CalendarSource) -> str | None:
    """What a client should know about a deadline's calendar source; None when all is well."""
    if source == "weekends_only":
        return (
            "due_at counts weekends only: no holiday schedule is known for a year this "
            "deadline spans (neither the holiday file nor chinesecalendar covers it); add the "
            "State Council's schedule to the holiday file"
        )
    return None
