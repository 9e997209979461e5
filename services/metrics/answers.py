"""Answers shared between readers asking the same question at once.

Eight clients asking `/rates` together would each compute the same sums and serialise the
same JSON. Instead, a reader whose question is being answered waits for that answer, and an
answer is reused for a short while (`HOTLINE_RATES_ANSWER_SECONDS`, 0.25 s). When that
while has passed, the next reader starts the new computation, and until it is done readers
still get the previous answer, if it began at most twice that while ago: under steady load
no reader waits for a computation (they set the tail latency), and a figure is at most
0.5 s older than the database. A failure is never kept.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")


@dataclass
class _Entry(Generic[T]):
    answer: asyncio.Future[T]
    started: float
    previous: _Entry[T] | None = None
    """The last answer, given while this one is computed (if still recent enough)."""


class SharedAnswers:
    """At most one computation per question at a time, its answer reused for `ttl` seconds
    after it started and, while the next one is computed, up to `2 * ttl`; at most
    `capacity` questions remembered (the oldest forgotten first)."""

    def __init__(self, ttl: float, capacity: int = 1024) -> None:
        self._ttl = ttl
        self._capacity = capacity
        self._entries: dict[Hashable, _Entry[Any]] = {}

    async def get(self, question: Hashable, compute: Callable[[], Awaitable[T]]) -> T:
        """The answer to `question`: a fresh enough one, the one being computed (or the
        previous one meanwhile), or a new one."""
        now = time.monotonic()
        entry = self._entries.get(question)
        if entry is None or (entry.answer.done() and now - entry.started > self._ttl):
            previous = entry if entry is not None and self._succeeded(entry) else None
            if previous is not None:
                previous.previous = None  # one answer back, never a chain
            entry = _Entry(asyncio.ensure_future(compute()), now, previous)
            self._entries.pop(question, None)
            self._entries[question] = entry
            entry.answer.add_done_callback(lambda done: self._forget_failure(question, done))
            while len(self._entries) > self._capacity:
                self._entries.pop(next(iter(self._entries)))
        if not entry.answer.done():
            previous = entry.previous
            if previous is not None and now - previous.started < 2 * self._ttl:
                kept: T = previous.answer.result()
                return kept
        entry.previous = None  # done, or too old to give: let it go
        answer: T = await asyncio.shield(entry.answer)
        return answer

    @staticmethod
    def _succeeded(entry: _Entry[Any]) -> bool:
        done = entry.answer
        return done.done() and not done.cancelled() and done.exception() is None

    def _forget_failure(self, question: Hashable, done: asyncio.Future[Any]) -> None:
        if done.cancelled() or done.exception() is not None:
            current = self._entries.get(question)
            if current is not None and current.answer is done:
                del self._entries[question]
