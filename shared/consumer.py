"""The consumer loop: batched, idempotent, with a dead-letter topic and backoff.

One batch is processed in one transaction: its effects and the ids of the events it
processed are committed together, and only then are the Kafka offsets committed. Delivery
is at least once; the effect happens exactly once, because an event whose id is already
recorded is skipped. A record that can never be processed goes to `<topic>.dlq` with the
reason in a header; a passing failure (database or broker down) is retried, never dropped.
The loop is background work (`shared.background`): one `step()` is one batch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError
from sqlalchemy.dialects.postgresql import insert as pg_insert

from shared.bus_tables import processed_events
from shared.db import Transaction, UnitOfWork
from shared.envelope import Envelope, PoisonMessage, decode
from shared.events import EVENT_TYPES
from shared.kafka import KafkaClients, dlq_topic
from shared.observability import (
    CONSUMER_LAG,
    EVENTS_CONSUMED,
    EVENTS_DEAD_LETTERED,
    TRANSIENT_ERRORS,
)
from shared.projections import Projections
from shared.retry import Backoff, Transient, is_transient

log = logging.getLogger(__name__)


class _FailedForGood(Exception):
    """An event of an unisolated batch failed for good: redo the batch event by event."""


@dataclass(frozen=True)
class Delivery:
    """One Kafka record as the loop needs it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]


@dataclass
class DeadLetter:
    """A record bound for the dead-letter topic, and why."""

    delivery: Delivery
    reason: str


@dataclass
class BatchOutcome:
    """What one batch did; the loop uses it for metrics, tests use it to check."""

    processed: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    counts: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    """(topic, ce_type, outcome) -> number of events, for the consumed-events metric."""

    def count(self, delivery: Delivery, ce_type: str, result: str, event_id: str) -> None:
        """Note what happened to one event."""
        {"processed": self.processed, "duplicate": self.duplicates, "skipped": self.skipped}[
            result
        ].append(event_id)
        label = ce_type if ce_type in EVENT_TYPES else "unknown"  # bounded label values
        self.counts[(delivery.topic, label, result)] += 1


class RecordSource(Protocol):
    """Where records come from: a Kafka consumer group, or a fake in unit tests."""

    async def fetch(self) -> list[Delivery]: ...

    async def commit(self, deliveries: Sequence[Delivery]) -> None: ...

    async def lag(self) -> dict[tuple[str, int], int]:
        """Records left per assigned partition; empty while no partition is assigned."""
        ...


class DeadLetterSink(Protocol):
    """Sends dead letters and waits for the broker's acknowledgement."""

    async def send(self, letters: Sequence[DeadLetter], service: str) -> None: ...


class ProcessedLog(Protocol):
    """The ids of events applied, in the service's own schema, written in the transaction of
    their effects."""

    async def claim(self, tx: Transaction, events: Sequence[tuple[str, str]]) -> set[str]:
        """Record (event_id, ce_type) pairs as processed; return the ids that were not yet.

        A replica applying the same event at the same moment waits on the row and then finds
        it taken, so only one of them applies it.
        """
        ...


class SqlProcessedLog:
    """`processed_events`: one multi-row insert claims a whole batch."""

    async def claim(self, tx: Transaction, events: Sequence[tuple[str, str]]) -> set[str]:
        unique = dict(events)
        if not unique:
            return set()
        statement = (
            pg_insert(processed_events)
            .values([{"event_id": i, "ce_type": t} for i, t in unique.items()])
            .on_conflict_do_nothing(index_elements=["event_id"])
            .returning(processed_events.c.event_id)
        )
        return {row[0] for row in await tx.execute(statement)}


class KafkaSource:
    """A consumer-group member that commits offsets only when told to."""

    def __init__(self, clients: KafkaClients, *, batch_size: int, poll_ms: int) -> None:
        self._clients = clients
        self._batch_size = batch_size
        self._poll_ms = poll_ms

    async def fetch(self) -> list[Delivery]:
        batches = await self._clients.consumer.getmany(
            timeout_ms=self._poll_ms, max_records=self._batch_size
        )
        deliveries = []
        for records in batches.values():
            for record in records:
                deliveries.append(
                    Delivery(
                        topic=record.topic,
                        partition=record.partition,
                        offset=record.offset,
                        key=record.key,
                        value=record.value,
                        headers=tuple(record.headers),
                    )
                )
        return deliveries

    async def commit(self, deliveries: Sequence[Delivery]) -> None:
        offsets: dict[TopicPartition, int] = {}
        for delivery in deliveries:
            tp = TopicPartition(delivery.topic, delivery.partition)
            offsets[tp] = max(offsets.get(tp, 0), delivery.offset + 1)
        if offsets:
            await self._clients.consumer.commit(offsets)

    async def lag(self) -> dict[tuple[str, int], int]:
        consumer = self._clients.consumer
        assigned = list(consumer.assignment())
        if not assigned:
            return {}
        ends = await consumer.end_offsets(assigned)
        lags = {}
        for tp in assigned:
            position = await consumer.position(tp)
            lags[(tp.topic, tp.partition)] = max(0, ends[tp] - position)
        return lags


class KafkaDeadLetterSink:
    """Copies the record to `<topic>.dlq`: same key, value and headers, plus the reason."""

    def __init__(self, clients: KafkaClients) -> None:
        self._clients = clients

    async def send(self, letters: Sequence[DeadLetter], service: str) -> None:
        producer = self._clients.producer
        futures = []
        for letter in letters:
            delivery = letter.delivery
            headers = [
                *delivery.headers,
                ("dlq_reason", letter.reason.encode()[:1000]),
                ("dlq_topic", delivery.topic.encode()),
                ("dlq_partition", str(delivery.partition).encode()),
                ("dlq_offset", str(delivery.offset).encode()),
                ("dlq_service", service.encode()),
            ]
            futures.append(
                await producer.send(
                    dlq_topic(delivery.topic), delivery.value, key=delivery.key, headers=headers
                )
            )
        await asyncio.gather(*futures)


class ConsumerLoop:
    """Applies events from a source to a service's database, batch by batch."""

    name = "consumer"

    def __init__(
        self,
        *,
        service: str,
        source: RecordSource,
        projections: Projections[Any],
        new_uow: Callable[[], UnitOfWork],
        dead_letters: DeadLetterSink,
        processed: ProcessedLog | None = None,
        max_backoff_seconds: float = 10.0,
        stopping: asyncio.Event | None = None,
    ) -> None:
        self._service = service
        self.source = source
        self._projections = projections
        self._new_uow = new_uow
        self._dead_letters = dead_letters
        self._processed = processed or SqlProcessedLog()
        self._max_backoff = max_backoff_seconds
        self._lag_reported: set[tuple[str, int]] = set()
        self._last_lag_check = 0.0
        self._unfinished: list[Delivery] = []
        """A fetched batch whose step failed: the next step applies it again before fetching
        more (the consumer's position is past it, its offsets are not committed)."""
        self._stopping = stopping or asyncio.Event()
        """Set at shutdown: a batch that keeps failing is then left for the next start."""

    @property
    def max_backoff(self) -> float:
        """The longest wait between retries of a batch."""
        return self._max_backoff

    async def apply(self, deliveries: Sequence[Delivery]) -> BatchOutcome:
        """Apply one batch in one transaction. Raises only on a passing failure (retry it).

        The batch is first applied without savepoints (two round trips fewer per event);
        only if an event fails for good is it applied again, each event in a savepoint, so
        that one event is dead-lettered and the rest kept.
        """
        poison: list[DeadLetter] = []
        decoded: list[tuple[Delivery, Envelope]] = []
        for delivery in deliveries:
            try:
                decoded.append((delivery, decode(delivery.headers, delivery.key, delivery.value)))
            except PoisonMessage as exc:
                poison.append(DeadLetter(delivery, exc.reason))
        try:
            outcome = await self._apply_all(decoded, isolate=False)
        except _FailedForGood:
            outcome = await self._apply_all(decoded, isolate=True)
        outcome.dead_letters[:0] = poison
        return outcome

    async def _apply_all(
        self, decoded: Sequence[tuple[Delivery, Envelope]], *, isolate: bool
    ) -> BatchOutcome:
        outcome = BatchOutcome()
        async with self._new_uow() as uow:
            claimed: set[str] = set()
            if not isolate:
                wanted = [(env.event_id, env.ce_type) for _, env in decoded if self._handles(env)]
                claimed = await self._processed.claim(uow, wanted)
            for delivery, envelope in decoded:
                await self._apply_one(uow, delivery, envelope, claimed, outcome, isolate=isolate)
            await uow.commit()
        return outcome

    def _handles(self, envelope: Envelope) -> bool:
        return (
            envelope.event is not None and self._projections.handler_for(envelope.event) is not None
        )

    async def _apply_one(
        self,
        uow: UnitOfWork,
        delivery: Delivery,
        envelope: Envelope,
        claimed: set[str],
        outcome: BatchOutcome,
        *,
        isolate: bool,
    ) -> None:
        """Apply one event the batch claimed (isolated: claim it in its own savepoint)."""
        event = envelope.event
        handler = None if event is None else self._projections.handler_for(event)
        if event is None or handler is None:
            outcome.count(delivery, envelope.ce_type, "skipped", envelope.event_id)
            return
        try:
            if isolate:
                async with uow.savepoint():
                    mine = envelope.event_id in await self._processed.claim(
                        uow, [(envelope.event_id, envelope.ce_type)]
                    )
                    if mine:
                        await handler(uow, event)
            else:
                mine = envelope.event_id in claimed
                claimed.discard(envelope.event_id)  # a second copy in the batch is a duplicate
                if mine:
                    await handler(uow, event)
        except Exception as exc:
            if is_transient(exc):
                raise
            if not isolate:
                raise _FailedForGood from exc
            log.warning(
                "event cannot be processed; dead-lettering it",
                extra={
                    "service": self._service,
                    "event_id": envelope.event_id,
                    "ticket_id": event.ticket_id,
                    "error": repr(exc),
                },
            )
            outcome.dead_letters.append(DeadLetter(delivery, f"handler failed: {exc!r}"[:1000]))
            return
        result = "processed" if mine else "duplicate"
        outcome.count(delivery, envelope.ce_type, result, envelope.event_id)

    async def handle(self, deliveries: Sequence[Delivery], stopping: asyncio.Event) -> bool:
        """Apply, dead-letter and commit one batch, retrying passing failures.

        Returns False if stopped before the batch was done (its offsets stay uncommitted, so
        it is delivered again).
        """
        backoff = Backoff(maximum=self._max_backoff)
        while True:
            try:
                outcome = await self.apply(deliveries)
                if outcome.dead_letters:
                    await self._dead_letters.send(outcome.dead_letters, self._service)
                break
            except Exception as exc:
                if not is_transient(exc):
                    raise
                TRANSIENT_ERRORS.labels(self._service, "consumer").inc()
                log.warning(
                    "consumer retrying a batch",
                    extra={"service": self._service, "error": repr(exc)},
                )
                if stopping.is_set():
                    return False
                await backoff.wait(stopping)
        self._count(outcome)
        try:
            await self.source.commit(deliveries)
        except KafkaError as exc:
            # Effects are stored with their event ids: a redelivery changes nothing.
            log.warning(
                "offset commit failed", extra={"service": self._service, "error": repr(exc)}
            )
        return True

    async def _next_batch(self, stopping: asyncio.Event) -> tuple[bool, bool]:
        """Apply the unfinished batch, else a fetched one. Returns (whether there was one,
        whether it is done); a batch not done stays unfinished for the next call."""
        try:
            deliveries = self._unfinished or await self.source.fetch()
        except KafkaError as exc:
            raise Transient("fetching from the broker failed") from exc
        self._unfinished = deliveries
        if not deliveries:
            return False, True
        if not await self.handle(deliveries, stopping):
            return True, False
        self._unfinished = []
        return True, True

    async def step(self) -> float:
        """Apply one batch (the unfinished one first), then report the lag now and then."""
        found, done = await self._next_batch(self._stopping)
        if not done:
            return 0.0
        if not found or time.monotonic() - self._last_lag_check > 1.0:
            self._last_lag_check = time.monotonic()
            try:
                await self._report_lag()
            except KafkaError as exc:
                raise Transient("reading the end offsets failed") from exc
        return 0.0

    async def drain(self, timeout: float) -> bool:
        """Consume until no record is left on the assigned partitions, for at most `timeout` s.

        A member still joining its group has no partitions yet, which would look drained:
        it first waits for an assignment (an idle replica in a group with more members than
        partitions therefore waits out the whole bound).
        """
        never = asyncio.Event()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                found, _ = await self._next_batch(never)
                if found:
                    continue
                lags = await self.source.lag()
                if lags and sum(lags.values()) == 0:
                    return True
            except Exception as exc:
                log.warning("consumer drain retrying", extra={"error": repr(exc)})
                await asyncio.sleep(0.2)
        return False

    async def _report_lag(self) -> None:
        lags = await self.source.lag()
        for topic, partition in self._lag_reported - lags.keys():
            # Moved to another replica by a rebalance: that replica reports it now.
            CONSUMER_LAG.remove(self._service, topic, str(partition))
        self._lag_reported = set(lags)
        for (topic, partition), lag in lags.items():
            CONSUMER_LAG.labels(self._service, topic, str(partition)).set(lag)

    def _count(self, outcome: BatchOutcome) -> None:
        for (topic, ce_type, result), number in outcome.counts.items():
            EVENTS_CONSUMED.labels(self._service, topic, ce_type, result).inc(number)
        for letter in outcome.dead_letters:
            EVENTS_DEAD_LETTERED.labels(self._service, letter.delivery.topic).inc()
