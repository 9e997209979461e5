"""One runner for every loop a service runs beside its HTTP API, with one failure policy.

A piece of background work is a `step()` the runner calls again and again: the outbox relay
publishes a batch, the consumer applies one, a sweeper sweeps once. The step says how long
to wait before the next one (or that the work is finished). What a step raises decides
what follows, the same for every loop:
- a passing failure (database or broker away, `shared.retry.is_transient`) is counted as
  transient, logged as a warning and retried with exponential backoff;
- any other failure is logged with its traceback, counted as permanent, and reported by
  `problems()` (so `/readyz` says which loop failed and why) until a later step succeeds;
  the step is retried at the backoff's slowest pace, so a fix (a row repaired, a bug
  deployed) needs no restart, and nothing is skipped: a step that failed has not moved on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from shared.observability import PERMANENT_ERRORS, TRANSIENT_ERRORS
from shared.retry import Backoff, is_transient

log = logging.getLogger(__name__)

MAX_REASON_CHARS = 300


class BackgroundWork(Protocol):
    """A loop's body, one round at a time."""

    @property
    def name(self) -> str:
        """The loop's name in logs, metrics and `/readyz` (bounded: a constant)."""
        ...

    @property
    def max_backoff(self) -> float:
        """The longest wait between retries after failures, in seconds."""
        ...

    async def step(self) -> float | None:
        """Do one round. Returns the seconds to wait before the next (0: at once), or None
        when the work is finished."""
        ...


@dataclass(frozen=True)
class Periodic:
    """Work done every `interval` seconds (a sweep, a refresh), starting at once."""

    name: str
    action: Callable[[], Awaitable[object]]
    interval: float
    max_backoff: float

    async def step(self) -> float:
        """Do the action; the next one is due after the interval."""
        await self.action()
        return self.interval


class Runner:
    """Runs background work until told to stop; knows which loop is failing and why."""

    def __init__(self, service: str) -> None:
        self._service = service
        self._tasks: list[asyncio.Task[None]] = []
        self._failures: dict[str, str] = {}

    def start(
        self,
        work: BackgroundWork,
        *,
        until: asyncio.Event | None,
        wakeup: asyncio.Event | None = None,
    ) -> asyncio.Task[None]:
        """Run `work` until `until` is set, it finishes, or `stop()` cancels it; `wakeup`,
        when set, cuts a wait short (e.g. the relay's, set when a commit put rows in the
        outbox)."""
        task = asyncio.create_task(self._run(work, until, wakeup), name=work.name)
        self._tasks.append(task)
        return task

    def problems(self) -> dict[str, str]:
        """Loops whose last step failed for good, and why; loops that ended unexpectedly."""
        problems = dict(self._failures)
        for task in self._tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                problems[task.get_name()] = f"stopped: {_reason(task.exception())}"
        return problems

    async def stop(self, timeout: float) -> None:
        """Wait up to `timeout` seconds for the loops to end (their `until` must be set
        first), then cancel those still running."""
        if not self._tasks:
            return
        _, pending = await asyncio.wait(self._tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _run(
        self, work: BackgroundWork, until: asyncio.Event | None, wakeup: asyncio.Event | None
    ) -> None:
        until = until or asyncio.Event()
        backoff = Backoff(maximum=work.max_backoff)
        while not until.is_set():
            if wakeup is not None:
                wakeup.clear()
            try:
                delay = await work.step()
            except Exception as exc:
                await _pause(self._failed(work, exc, backoff), until, None)
                continue
            self._recovered(work)
            backoff.reset()
            if delay is None:
                return
            if delay > 0:
                await _pause(delay, until, wakeup)

    def _failed(self, work: BackgroundWork, exc: Exception, backoff: Backoff) -> float:
        """Count, log and remember a failed step; returns how long to wait before the next."""
        context = {"service": self._service, "loop": work.name, "error": repr(exc)}
        if is_transient(exc):
            TRANSIENT_ERRORS.labels(self._service, work.name).inc()
            log.warning("background work waiting for the broker or database", extra=context)
            return backoff.next_delay()
        PERMANENT_ERRORS.labels(self._service, work.name).inc()
        reason = f"failed: {_reason(exc)}"
        if self._failures.get(work.name) != reason:
            log.exception("background work failed; the service is not ready", extra=context)
        else:
            log.warning("background work still failing", extra=context)
        self._failures[work.name] = reason
        return work.max_backoff

    def _recovered(self, work: BackgroundWork) -> None:
        if self._failures.pop(work.name, None) is not None:
            log.warning(
                "background work recovered", extra={"service": self._service, "loop": work.name}
            )


def _reason(exc: BaseException | None) -> str:
    return repr(exc)[:MAX_REASON_CHARS]


async def _pause(seconds: float, until: asyncio.Event, wakeup: asyncio.Event | None) -> None:
    """Wait `seconds`, or less if `until` (or `wakeup`) is set meanwhile."""
    waiters = [asyncio.ensure_future(until.wait())]
    if wakeup is not None:
        waiters.append(asyncio.ensure_future(wakeup.wait()))
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
