"""The deadline sweeper: background work in every dispatch replica announcing overdue work
orders.

Replicas may all sweep at once: `commands.sweep_overdue` locks with SKIP LOCKED and flags
each work order in the transaction that emits its event, so each is announced once; and
nothing is lost by a failed sweep: the next one finds the same work orders.
"""

from __future__ import annotations

import logging

from services.dispatch.commands import sweep_all_overdue
from shared.background import Periodic
from shared.clock import utc_now
from shared.runtime import WorkContext

log = logging.getLogger(__name__)


def overdue_sweeper(context: WorkContext) -> Periodic:
    """Sweep at once, then every `sweeper_interval_seconds`."""

    async def sweep() -> None:
        swept = await sweep_all_overdue(context.new_uow, now=utc_now())
        if swept:
            log.info("overdue work orders announced", extra={"count": len(swept)})

    interval = context.settings.sweeper_interval_seconds
    return Periodic("overdue-sweeper", sweep, interval=interval, max_backoff=interval)
