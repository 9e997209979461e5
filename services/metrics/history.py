"""Each ticket's event history: every event metrics hears of a ticket, as it came, with the
key that caused it and what it changed (its data). The timeline and its state are read from
it, so a ticket's story never depends on the other services' databases or on their ports.

It is written in the batch's own transaction, beside the facts and in one statement per
batch, so it holds exactly the events the figures count, and `hotline metrics rebuild`
makes it again from the topics. An event id seen again changes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import sqlalchemy as sa

from services.metrics.batch import UnusableEvent
from shared.db import Transaction
from shared.events import Event

MAX_CHANGES_BYTES: Final = 16_384
"""The most an event's data may take in the history. Every field the contract bounds fits
many times over; a larger event (an evaluator name of megabytes) is dead-lettered instead
of kept."""

_KEPT_APART: Final = frozenset({"ticket_id", "actor", "citizen_phone_hash"})
"""Fields stored in columns of their own, not again in `changes` (the phone hash only in the
ticket's facts, where the search by number reads it)."""


@dataclass(frozen=True)
class HistoryEntry:
    """One event of a ticket, as the history keeps it."""

    event_id: str
    ticket_id: str
    ce_type: str
    at: datetime
    actor_key_id: str | None
    actor_role: str | None
    actor_department: str | None
    work_order_id: str | None
    changes: str
    """The event's data but its ticket and actor, as JSON."""

    @classmethod
    def of(cls, event_id: str, event: Event) -> HistoryEntry:
        """The entry of `event`; UnusableEvent if its data is too large to keep."""
        data = event.model_dump(mode="json", exclude=set(_KEPT_APART))
        changes = json.dumps(data, ensure_ascii=False, sort_keys=True)
        if len(changes.encode()) > MAX_CHANGES_BYTES:
            raise UnusableEvent(f"event data larger than {MAX_CHANGES_BYTES} bytes")
        actor = event.actor
        work_order_id: Any = getattr(event, "work_order_id", None)
        return cls(
            event_id=event_id,
            ticket_id=event.ticket_id,
            ce_type=event.ce_type,
            at=event.occurred_at(),
            actor_key_id=actor.key_id if actor else None,
            actor_role=actor.role if actor else None,
            actor_department=actor.department if actor else None,
            work_order_id=work_order_id,
            changes=changes,
        )


_COLUMNS: Final = (
    ("event_id", "TEXT"),
    ("ticket_id", "TEXT"),
    ("ce_type", "TEXT"),
    ("at", "TIMESTAMPTZ"),
    ("actor_key_id", "TEXT"),
    ("actor_role", "TEXT"),
    ("actor_department", "TEXT"),
    ("work_order_id", "TEXT"),
    ("changes", "TEXT"),
)
_INSERT: Final = sa.text(
    f"INSERT INTO ticket_events ({', '.join(name for name, _ in _COLUMNS)})\n"
    f"SELECT {', '.join(name for name, _ in _COLUMNS[:-1])}, CAST(changes AS JSONB)\n"
    f"FROM unnest({', '.join(f'CAST(:{name} AS {kind}[])' for name, kind in _COLUMNS)})"
    f" AS entry({', '.join(name for name, _ in _COLUMNS)})\n"
    "ON CONFLICT (event_id) DO NOTHING"
)
"""Strings are bound as TEXT: a value longer than its column is refused (the event is then
dead-lettered), never cut."""


async def write_history(tx: Transaction, entries: Sequence[HistoryEntry]) -> None:
    """Add the entries to the history in one statement."""
    if entries:
        await tx.execute(
            _INSERT, {name: [getattr(e, name) for e in entries] for name, _ in _COLUMNS}
        )
