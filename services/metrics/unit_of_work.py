"""Metrics's transactions: a consumer batch gathers its cell changes and writes them once.

Every event changes a few dozen aggregate cells, most of them the same cells as its batch
mates'. So the batch's transaction collects the changes (`cells`) and writes them in one
statement just before it commits; an event applied in a savepoint that fails takes its
changes back with it. It also remembers whether it holds the one-writer lock, so the lock
is asked for once per batch, not once per event.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Self

from services.metrics.cube import CellDeltas, apply_deltas
from shared.db import Transaction, UnitOfWork


class MetricsTransaction(Transaction):
    """What a metrics projection may use: the batch's transaction and its cell changes."""

    cells: CellDeltas
    holds_writer_lock: bool

    @asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        """A nested transaction whose cell changes join the batch's only if it succeeds."""
        outer_cells, outer_lock = self.cells, self.holds_writer_lock
        self.cells = CellDeltas()
        try:
            async with super().savepoint():
                yield
        except BaseException:
            # A lock taken inside a rolled-back savepoint is released with it.
            self.cells, self.holds_writer_lock = outer_cells, outer_lock
            raise
        outer_cells.merge(self.cells)
        self.cells = outer_cells


class MetricsUnitOfWork(UnitOfWork, MetricsTransaction):
    """The consumer loop's unit of work in metrics: writes the cells, then commits."""

    def _forget(self) -> None:
        self.cells = CellDeltas()
        self.holds_writer_lock = False

    async def __aenter__(self) -> Self:
        self._forget()
        return await super().__aenter__()

    async def commit(self) -> None:
        """Write the batch's cell changes, then commit them with everything else."""
        await apply_deltas(self, self.cells)
        self.cells = CellDeltas()
        await super().commit()
        self.holds_writer_lock = False

    async def rollback(self) -> None:
        """Drop everything, the gathered cell changes included."""
        await super().rollback()
        self._forget()
