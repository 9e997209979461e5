"""Answers shared between readers asking the same question at once.

Eight clients asking `/rates` together would each compute the same sums and serialise the
same JSON. Instead, a reader
whose question is being answered waits for that answer, and an answer is reused for a short
while (`HOTLINE_RATES_ANSWER_SECONDS`, 0.25 s): a dashboard refreshing every few seconds
sees figures at most that much older than the database. A failure is never kept.
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


class SharedAnswers:
    """At most one computation per question at a time, its answer reused for `ttl` seconds
    after it started; at most `capacity` questions remembered (the oldest forgotten first)."""

    def __init__(self, ttl: float, capacity: int = 1024) -> None:
        self._ttl = ttl
        self._capacity = capacity
        self._entries: dict[Hashable, _Entry[Any]] = {}

    async def get(self, question: Hashable, compute: Callable[[], Awaitable[T]]) -> T:
        """The answer to `question`: the one being computed, a fresh enough one, or a new one."""
        now = time.monotonic()
        entry = self._entries.get(question)
        if entry is None or (entry.answer.done() and now - entry.started > self._ttl):
            entry = _Entry(asyncio.ensure_future(compute()), now)
            self._entries.pop(question, None)
            self._entries[question] = entry
            entry.answer.add_done_callback(lambda done: self._forget_failure(question, done))
            while len(self._entries) > self._capacity:
                self._entries.pop(next(iter(self._entries)))
        answer: T = await asyncio.shield(entry.answer)
        return answer

    def _forget_failure(self, question: Hashable, done: asyncio.Future[Any]) -> None:
        if done.cancelled() or done.exception() is not None:
            current = self._entries.get(question)
            if current is not None and current.answer is done:
                del self._entries[question]
