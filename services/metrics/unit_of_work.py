"""Metrics's transactions: a consumer batch queues its events and applies them together.

Applying events one by one costs several round trips and statement builds per event; the
batch's transaction queues them (`queue`) and `flush` applies them set-wise, just before the
consumer loop commits. When the loop isolates the events of a failing batch, each one is
applied in a savepoint of its own and flushed inside it, so an event that fails takes only
its own changes back with it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Self

from services.metrics.fact_store import apply_events
from services.metrics.history import HistoryEntry, write_history
from shared.db import Transaction, UnitOfWork
from shared.events import Event


class MetricsTransaction(Transaction):
    """What a metrics projection may use: the batch's transaction and its queued events."""

    pending: list[Event]
    """Events for the facts and cells."""
    history: list[HistoryEntry]
    """Every event the batch keeps in the tickets' histories."""

    def queue(self, event: Event, *, counts: bool = True) -> None:
        """Keep `event` in its ticket's history and, if it `counts`, apply it to the facts,
        both with the rest of the batch at the next flush. UnusableEvent if it cannot be
        kept."""
        if self.event_id is None:
            raise RuntimeError("queue() outside the consumer loop: no event id")
        self.history.append(HistoryEntry.of(self.event_id, event))
        if counts:
            self.pending.append(event)

    async def flush(self) -> None:
        """Apply the queued events set-wise (facts, cells, history) in this transaction."""
        events, self.pending = self.pending, []
        entries, self.history = self.history, []
        await apply_events(self, events)
        await write_history(self, entries)

    @asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        """A nested transaction whose events are applied inside it, or not at all."""
        outer = self.pending, self.history
        self.pending, self.history = [], []
        try:
            async with super().savepoint():
                yield
                await self.flush()
        finally:
            self.pending, self.history = outer


class MetricsUnitOfWork(UnitOfWork, MetricsTransaction):
    """The consumer loop's unit of work in metrics: applies the queued events, then commits."""

    async def __aenter__(self) -> Self:
        self.pending, self.history = [], []
        return await super().__aenter__()

    async def commit(self) -> None:
        """Apply what is still queued, then commit it with everything else."""
        await self.flush()
        await super().commit()

    async def rollback(self) -> None:
        """Drop everything, the queued events included."""
        await super().rollback()
        self.pending, self.history = [], []
