"""The deadline sweeper: background work in every dispatch replica announcing work orders
overdue (`hotline.workorder.overdue.v1`) and due soon (督办, `hotline.workorder.due_soon.v1`).

Replicas may all sweep at once: `commands.sweep_overdue` and `commands.sweep_due_soon` lock
with SKIP LOCKED and flag each work order in the transaction that emits its event, so each
is announced once; and nothing is lost by a failed sweep: the next one finds the same work
orders. Overdue first: a work order past its deadline is never warned of it.
"""

from __future__ import annotations

import logging

from services.dispatch.commands import sweep_all, sweep_due_soon, sweep_overdue
from services.dispatch.domain import DispatchPolicy
from shared.background import Periodic
from shared.clock import utc_now
from shared.runtime import BackgroundWorkFactory, WorkContext

log = logging.getLogger(__name__)


def deadline_sweeper(policy: DispatchPolicy) -> BackgroundWorkFactory:
    """Sweep at once, then every `sweeper_interval_seconds`; the due-soon lead time and the
    working-day calendar come from `policy`."""

    def sweeper(context: WorkContext) -> Periodic:
        new_uow = context.new_uow

        async def sweep() -> None:
            now = utc_now()
            overdue = await sweep_all(lambda n: sweep_overdue(new_uow, now=now, limit=n))
            due_soon = await sweep_all(
                lambda n: sweep_due_soon(new_uow, now=now, policy=policy, limit=n)
            )
            if overdue or due_soon:
                log.info(
                    "work orders announced",
                    extra={"overdue": len(overdue), "due_soon": len(due_soon)},
                )

        interval = context.settings.sweeper_interval_seconds
        return Periodic("deadline-sweeper", sweep, interval=interval, max_backoff=interval)

    return sweeper
