"""A ticket's story from its history, as plain functions: the events in the order they
happened, each work order's deadline and whether it was met, and the ticket's state.

The state at a moment `now`, from the events dated up to it (the first that applies):
- `overdue`: a work order has no reply and its deadline has passed;
- `awaiting_reply`: a work order has no reply yet;
- `reopened`: the last answered reached callback was `unsatisfied` (重办) and no work order
  was replied since;
- `closed`: the last answered reached callback was satisfied (or basically), or the ticket
  was resolved at first contact and nothing is pending;
- `replied`: every work order is replied, the callback has not confirmed it yet;
- `open`: recorded, nothing done yet.
Events may arrive in any order; the state depends on their times, not their arrival.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Literal

from shared.events import (
    CallbackLogged,
    Event,
    TicketReopened,
    TicketSubmitted,
    TransferAttempted,
    WorkOrderCreated,
    WorkOrderDueSoon,
    WorkOrderOverdue,
    WorkOrderReplied,
)
from shared.names import SATISFIED

TicketState = Literal["open", "awaiting_reply", "overdue", "reopened", "replied", "closed"]

_LIFECYCLE: Final[tuple[type[Event], ...]] = (
    TicketSubmitted,
    TransferAttempted,
    WorkOrderCreated,
    WorkOrderDueSoon,
    WorkOrderReplied,
    WorkOrderOverdue,
    CallbackLogged,
    TicketReopened,
)
_ORDER: Final = {model.ce_type: rank for rank, model in enumerate(_LIFECYCLE)}
"""Of events at the same instant, which comes first in the story."""


@dataclass(frozen=True)
class Entry:
    """One event of the history."""

    event_id: str
    ce_type: str
    at: datetime
    work_order_id: str | None
    changes: Mapping[str, Any]
    actor_key_id: str | None = None
    actor_role: str | None = None
    actor_department: str | None = None


@dataclass
class Deadline:
    """A work order's deadline and what became of it."""

    work_order_id: str
    department: str | None = None
    created_at: datetime | None = None
    due_at: datetime | None = None
    redo_round: int = 0
    first_reply_at: datetime | None = None
    due_soon_warned_at: datetime | None = None
    overdue_announced_at: datetime | None = None
    met: bool | None = None
    """True if first replied by `due_at`, False if replied later or past due with no reply,
    None while it can still be met (or its creation is not known yet)."""


@dataclass
class Story:
    """The ticket's events in order, its deadlines and its state at `as_of`."""

    events: list[Entry]
    deadlines: list[Deadline] = field(default_factory=list)
    state: TicketState = "open"


def ordered(entries: Iterable[Entry]) -> list[Entry]:
    """In the order things happened; same-instant events in the lifecycle's order."""
    return sorted(entries, key=lambda e: (e.at, _ORDER.get(e.ce_type, 99), e.event_id))


def story(entries: Iterable[Entry], *, as_of: datetime) -> Story:
    """The story told by the events dated up to `as_of`."""
    events = [entry for entry in ordered(entries) if entry.at <= as_of]
    deadlines = _deadlines(events, as_of)
    return Story(events=events, deadlines=deadlines, state=_state(events, deadlines, as_of))


def _time(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else None


def _deadlines(events: list[Entry], as_of: datetime) -> list[Deadline]:
    by_id: dict[str, Deadline] = {}
    for entry in events:
        if entry.work_order_id is None:
            continue
        deadline = by_id.setdefault(entry.work_order_id, Deadline(entry.work_order_id))
        data = entry.changes
        if entry.ce_type == WorkOrderCreated.ce_type:
            deadline.department = data.get("department")
            deadline.created_at = _time(data.get("created_at"))
            deadline.due_at = _time(data.get("due_at"))
            deadline.redo_round = int(data.get("redo_round") or 0)
        elif entry.ce_type == WorkOrderReplied.ce_type:
            deadline.department = deadline.department or data.get("department")
            if deadline.first_reply_at is None or entry.at < deadline.first_reply_at:
                deadline.first_reply_at = entry.at
        elif entry.ce_type == WorkOrderDueSoon.ce_type:
            deadline.due_soon_warned_at = deadline.due_soon_warned_at or entry.at
        elif entry.ce_type == WorkOrderOverdue.ce_type:
            deadline.overdue_announced_at = deadline.overdue_announced_at or entry.at
    for deadline in by_id.values():
        deadline.met = _met(deadline, as_of)
    return sorted(by_id.values(), key=lambda d: (d.created_at or as_of, d.work_order_id))


def _met(deadline: Deadline, as_of: datetime) -> bool | None:
    if deadline.due_at is None:
        return None
    if deadline.first_reply_at is not None:
        return deadline.first_reply_at <= deadline.due_at
    return False if deadline.due_at < as_of else None


def _state(events: list[Entry], deadlines: list[Deadline], as_of: datetime) -> TicketState:
    pending = [d for d in deadlines if d.created_at is not None and d.first_reply_at is None]
    if any(d.due_at is not None and d.due_at < as_of for d in pending):
        return "overdue"
    if pending:
        return "awaiting_reply"
    answers = [
        e
        for e in events
        if e.ce_type == CallbackLogged.ce_type
        and e.changes.get("reached")
        and e.changes.get("satisfaction") is not None
    ]
    replies = [d.first_reply_at for d in deadlines if d.first_reply_at is not None]
    if answers:
        last = answers[-1]
        if last.changes.get("satisfaction") in SATISFIED:
            return "closed"
        if not any(reply > last.at for reply in replies):
            return "reopened"
        return "replied"
    if replies:
        return "replied"
    if _resolved_at_first_contact(events):
        return "closed"
    return "open"


def _resolved_at_first_contact(events: list[Entry]) -> bool:
    for entry in events:
        if entry.ce_type == TicketSubmitted.ce_type:
            call = entry.changes.get("call") or {}
            return bool(call.get("resolved_at_first_contact"))
    return False
