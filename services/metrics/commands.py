"""What an operator's request changes in metrics. Metrics takes no writes over HTTP: its
state comes from events (`projections`); this is the repair an operator runs by hand."""

from __future__ import annotations

from services.metrics.cube import replace_cells
from shared.db import UnitOfWorkFactory


async def rebuild_cells(new_uow: UnitOfWorkFactory) -> None:
    """Recompute every aggregate cell from the counted facts, in one transaction (readers see
    the old cells until it commits)."""
    async with new_uow() as uow:
        await replace_cells(uow)
        await uow.commit()
