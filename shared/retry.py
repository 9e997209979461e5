"""Telling passing failures from permanent ones, and waiting between retries."""

from __future__ import annotations

import asyncio
import contextlib
import random

import sqlalchemy as sa
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaTimeoutError,
    NodeNotReadyError,
    RequestTimedOutError,
)


class Transient(Exception):
    """A failure known to pass by itself, raised with the original as its cause (e.g. any
    broker error while fetching: the consumer waits and fetches again)."""


_TRANSIENT: tuple[type[BaseException], ...] = (
    Transient,
    sa.exc.OperationalError,
    sa.exc.InterfaceError,
    sa.exc.DisconnectionError,
    sa.exc.TimeoutError,
    ConnectionError,
    OSError,
    TimeoutError,
    KafkaConnectionError,
    KafkaTimeoutError,
    NodeNotReadyError,
    RequestTimedOutError,
)
_TRANSIENT_NAMES = frozenset(
    {"CannotConnectNowError", "ConnectionDoesNotExistError", "TooManyConnectionsError"}
)
# SQLSTATEs that mean "try the same thing again": serialization failure, deadlock, lock not
# available, server shutting down, too many connections; class 08 is connection exceptions.
_TRANSIENT_SQLSTATES = frozenset({"40001", "40P01", "55P03", "57P01", "57P02", "57P03", "53300"})


def sqlstate(exc: BaseException | None) -> str | None:
    """The SQLSTATE an exception carries itself (asyncpg's `sqlstate`, psycopg's `pgcode`)."""
    code = getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)
    return code if isinstance(code, str) else None


def is_transient(exc: BaseException) -> bool:
    """True for failures that pass by themselves (database or broker down): retry, never drop."""
    if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, _TRANSIENT) or type(exc).__name__ in _TRANSIENT_NAMES:
        return True
    code = sqlstate(exc)
    if code is not None and (code in _TRANSIENT_SQLSTATES or code[:2] == "08"):
        return True
    orig = getattr(exc, "orig", None)
    if orig is not None and orig is not exc and is_transient(orig):
        return True
    cause = exc.__cause__ or exc.__context__
    return cause is not None and cause is not exc and is_transient(cause)


class Backoff:
    """Exponential backoff with jitter, reset after a success."""

    def __init__(self, initial: float = 0.1, maximum: float = 10.0) -> None:
        self._initial = initial
        self._maximum = maximum
        self._next = initial

    def reset(self) -> None:
        """Forget earlier failures."""
        self._next = self._initial

    def next_delay(self) -> float:
        """The delay before the next attempt; doubles up to the maximum."""
        delay = self._next
        self._next = min(self._next * 2, self._maximum)
        return delay * random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not security

    async def wait(self, stopping: asyncio.Event | None = None) -> None:
        """Sleep for the next delay, or less if `stopping` is set meanwhile."""
        delay = self.next_delay()
        if stopping is None:
            await asyncio.sleep(delay)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), timeout=delay)
