"""In-memory twins of the bus and the database, for unit tests of pure logic."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Self

from shared.consumer import DeadLetter, Delivery
from shared.events import Event
from shared.outbox import OutboxStatus, OutgoingRecord, PendingEvent, PublishResult
from tests.support import record_of


class FakeUnitOfWork:
    """A transaction over a dict: commit keeps changes, leaving the block without it drops them."""

    def __init__(self, store: dict[str, Any]) -> None:
        self.store = store
        self.commits = 0
        self._working: dict[str, Any] = {}

    async def __aenter__(self) -> Self:
        self._working = copy.deepcopy(self.store)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._working = {}

    @property
    def state(self) -> dict[str, Any]:
        return self._working

    @asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        snapshot = copy.deepcopy(self._working)
        try:
            yield
        except BaseException:
            self._working.clear()
            self._working.update(snapshot)
            raise

    async def flush(self) -> None:
        """Nothing is deferred here: handlers write the working state directly."""

    async def commit(self) -> None:
        self.store.clear()
        self.store.update(copy.deepcopy(self._working))
        self.commits += 1


class FakeProcessedLog:
    """Processed event ids kept inside the fake transaction's state."""

    async def claim(self, uow: Any, events: Sequence[tuple[str, str]]) -> set[str]:
        processed = uow.state.setdefault("processed", [])
        new = [event_id for event_id, _ in dict(events).items() if event_id not in processed]
        processed.extend(new)
        return set(new)


@dataclass
class FakeSource:
    """Hands out prepared batches and remembers what was committed."""

    batches: list[list[Delivery]]
    committed: list[Delivery] = field(default_factory=list)
    unassigned_polls: int = 0
    """How many lag() calls answer "no partition yet", like a member still joining."""

    async def fetch(self) -> list[Delivery]:
        if not self.batches:
            await asyncio.sleep(0.001)  # like getmany's poll timeout: nothing came
            return []
        return self.batches.pop(0)

    async def commit(self, deliveries: Sequence[Delivery]) -> None:
        self.committed.extend(deliveries)

    async def lag(self) -> dict[tuple[str, int], int]:
        if self.unassigned_polls:
            self.unassigned_polls -= 1
            return {}
        return {("t", 0): sum(len(b) for b in self.batches)}


@dataclass
class FakeDeadLetters:
    """Collects dead letters; can be told to fail a number of times first."""

    failures_left: int = 0
    sent: list[DeadLetter] = field(default_factory=list)

    async def send(self, letters: Sequence[DeadLetter], service: str) -> None:
        if self.failures_left:
            self.failures_left -= 1
            raise ConnectionError("broker down")
        self.sent.extend(letters)


def delivery_of(event: Event, *, event_id: str, offset: int = 0, topic: str = "t") -> Delivery:
    """The record a producer would have written for `event`."""
    record = record_of(event, event_id)
    return Delivery(
        topic=topic,
        partition=0,
        offset=offset,
        key=record.key,
        value=record.value,
        headers=tuple(record.headers),
    )


class FakeOutboxStore:
    """An outbox in a list; `seq` order, published flags, failure notes, rows set aside."""

    def __init__(self, events: list[PendingEvent]) -> None:
        self.rows = {event.seq: event for event in events}
        self.published: list[int] = []
        self.failures: dict[int, str] = {}
        self.set_aside: dict[int, str] = {}
        self.attempts: dict[int, int] = dict.fromkeys(self.rows, 0)

    def held(self, seq: int) -> bool:
        key = self.rows[seq].key
        return any(self.rows[s].key == key and s < seq for s in self.set_aside)

    def waiting(self) -> list[int]:
        """Pending rows: not published, not set aside."""
        return [s for s in sorted(self.rows) if s not in self.published and s not in self.set_aside]

    @asynccontextmanager
    async def claim(self, limit: int) -> AsyncIterator[Any]:
        pending = [self.rows[s] for s in self.waiting() if not self.held(s)][:limit]
        store = self

        class Batch:
            events = pending

            async def mark_published(self, seqs: Sequence[int]) -> None:
                store.published.extend(seqs)
                for seq in seqs:
                    store.attempts[seq] += 1

            async def record_failure(self, seqs: Sequence[int], error: str) -> None:
                for seq in seqs:
                    store.failures[seq] = error
                    store.attempts[seq] += 1

            async def set_aside(self, errors: Mapping[int, str]) -> None:
                for seq, error in errors.items():
                    store.set_aside[seq] = error
                    store.attempts[seq] += 1

        yield Batch()

    async def status(self) -> OutboxStatus:
        waiting = self.waiting()
        held = [s for s in waiting if self.held(s)]
        return OutboxStatus(
            pending=len(waiting) - len(held),
            oldest_pending_seconds=0.0,
            set_aside=len(self.set_aside),
            held=len(held),
        )

    async def prune_published(self, older_than_seconds: float) -> int:
        return 0


@dataclass
class FakePublisher:
    """A broker that acknowledges, or fails the next `failures_left` sends at `fail_from`
    (broker down), and refuses the rows in `refuse` with the error given."""

    failures_left: int = 0
    fail_from: int = 0
    refuse: dict[int, BaseException] = field(default_factory=dict)
    topic_log: list[OutgoingRecord] = field(default_factory=list)

    async def publish(self, records: Sequence[OutgoingRecord]) -> PublishResult:
        result = PublishResult()
        for index, record in enumerate(records):
            if record.seq in self.refuse:
                result.failed[record.seq] = self.refuse[record.seq]
                break
            if self.failures_left and index >= self.fail_from:
                self.failures_left -= 1
                result.failed[record.seq] = ConnectionError("broker down")
                break
            self.topic_log.append(record)
            result.sent.append(record.seq)
        return result
