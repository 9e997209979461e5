"""Waiting on conditions (never a bare sleep) and small helpers the test levels share."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


async def eventually(
    check: Callable[[], Any | Awaitable[Any]],
    *,
    timeout: float = 15.0,
    interval: float = 0.02,
    message: str = "condition",
) -> Any:
    """Poll `check` until it returns something truthy; fail with `message` after `timeout`."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = check()
        if inspect.isawaitable(last):
            last = await last
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}; last={last!r}")
        await asyncio.sleep(interval)
