"""The deadline sweeper: a loop in every dispatch replica announcing overdue work orders.

Replicas may all sweep at once: `handlers.sweep_overdue` locks with SKIP LOCKED and flags
each work order in the transaction that emits its event, so each is announced once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from services.dispatch.handlers import sweep_all_overdue
from shared.clock import utc_now
from shared.observability import TRANSIENT_ERRORS
from shared.retry import Backoff, is_transient
from shared.runtime import Runtime

log = logging.getLogger(__name__)


async def run_overdue_sweeper(runtime: Runtime, stopping: asyncio.Event) -> None:
    """Sweep at once, then every `sweeper_interval_seconds`, until `stopping` is set."""
    interval = runtime.settings.sweeper_interval_seconds
    backoff = Backoff(maximum=interval)
    while not stopping.is_set():
        delay = interval
        try:
            swept = await sweep_all_overdue(runtime.uow, now=utc_now())
            if swept:
                log.info("overdue work orders announced", extra={"count": len(swept)})
            backoff.reset()
        except Exception as exc:
            # Nothing is lost by waiting: the next sweep finds the same work orders.
            TRANSIENT_ERRORS.labels("dispatch", "sweeper").inc()
            if is_transient(exc):
                log.warning("sweeper waiting for the database", extra={"error": repr(exc)})
            else:
                log.exception("sweep failed")
            delay = min(interval, backoff.next_delay())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), timeout=delay)
