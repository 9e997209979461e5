"""The consumer loop: batched, idempotent, with a dead-letter topic and backoff.

One batch is processed in one transaction: its effects and the ids of the events it
processed are committed together, and only then are the Kafka offsets committed. Delivery
is at least once; the effect happens exactly once, because an event whose id is already
recorded is skipped. A record that can never be processed goes to `<topic>.dlq` with the
reason in a header (a truncated copy if it is too large to copy whole), and the offsets wait
until the broker has it; a passing failure (database or broker down) is retried, never
dropped. The loop is background work (`shared.background`): one `step()` is one batch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, Protocol

import sqlalchemy as sa
from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from shared.bus_tables import processed_events
from shared.db import Transaction, UnitOfWork
from shared.envelope import Envelope, PoisonMessage, decode
from shared.events import EVENT_TYPES
from shared.faults import crash_point
from shared.kafka import DlqHeader, KafkaClients, dlq_topic
from shared.observability import (
    CONSUMER_LAG,
    DEAD_LETTERS_CUT,
    EVENTS_CONSUMED,
    EVENTS_DEAD_LETTERED,
    TRANSIENT_ERRORS,
)
from shared.offsets import member_end_offsets
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

    @classmethod
    def of(cls, record: ConsumerRecord[bytes, bytes]) -> Delivery:
        """The delivery of a record a consumer fetched."""
        return cls(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key,
            value=record.value,
            headers=tuple(record.headers),
        )


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


_CLAIM: Final = sa.text(
    f"INSERT INTO {processed_events.name} (event_id, ce_type)\n"
    "SELECT * FROM unnest(CAST(:ids AS TEXT[]), CAST(:types AS TEXT[]))"
    " ORDER BY 1\n"
    "ON CONFLICT (event_id) DO NOTHING RETURNING event_id"
)
"""Built once for any number of events (a column of values per parameter); the ids in one
order, so two replicas claiming the same events wait for one another, never deadlock."""


class SqlProcessedLog:
    """`processed_events`: one insert claims a whole batch."""

    async def claim(self, tx: Transaction, events: Sequence[tuple[str, str]]) -> set[str]:
        unique = dict(events)
        if not unique:
            return set()
        parameters = {"ids": list(unique), "types": list(unique.values())}
        return {row[0] for row in await tx.execute(_CLAIM, parameters)}


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
        return [Delivery.of(record) for records in batches.values() for record in records]

    async def commit(self, deliveries: Sequence[Delivery]) -> None:
        offsets: dict[TopicPartition, int] = {}
        for delivery in deliveries:
            tp = TopicPartition(delivery.topic, delivery.partition)
            offsets[tp] = max(offsets.get(tp, 0), delivery.offset + 1)
        if offsets:
            await self._clients.consumer.commit(offsets)

    async def lag(self, *, committed: bool = False) -> dict[tuple[str, int], int]:
        """Records behind the end of each assigned partition: behind the fetch position, or,
        with `committed`, behind the committed offset (a batch fetched and still being
        applied counts then)."""
        consumer = self._clients.consumer
        assigned = list(consumer.assignment())
        if not assigned:
            return {}
        ends = await member_end_offsets(consumer, assigned)
        lags = {}
        for tp in assigned:
            position = await (consumer.committed(tp) if committed else consumer.position(tp))
            lags[(tp.topic, tp.partition)] = max(0, ends[tp] - (position or 0))
        return lags


class DeadLettersNotWritten(Exception):
    """The broker refused even a minimal copy of some dead letters: the batch stays
    uncommitted (the loop reports the failure and tries again slowly)."""


@dataclass(frozen=True)
class DeadLetterCopy:
    """The record written to the dead-letter topic for one letter, and how much of the
    original it holds: whole, truncated (too large to copy whole) or minimal (no value)."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    kind: Literal["whole", "truncated", "minimal"]


_TRUNCATED_SHARE = 8
"""A truncated copy is at most this fraction of the producer's limit: well under it."""
_KEY_BYTES = 1024
"""Bytes of the original key a cut copy keeps (a ticket id has 36)."""
_ID_BYTES = 256
_REASON_BYTES = 1000
_ERROR_BYTES = 500
_NAMES_BYTES = 1000
_SET_BY_SINK = frozenset(
    {
        DlqHeader.REASON,
        DlqHeader.TOPIC,
        DlqHeader.PARTITION,
        DlqHeader.OFFSET,
        DlqHeader.SERVICE,
        DlqHeader.TRUNCATED,
        DlqHeader.ORIGINAL_BYTES,
        DlqHeader.ORIGINAL_KEY_BYTES,
        DlqHeader.HEADERS_DROPPED,
        DlqHeader.SEND_ERROR,
    }
)
"""An original header of one of these names is stale (the record was dead-lettered and
replayed before) and is left out, so a dead letter's own headers are never ambiguous."""


def record_size(
    key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes]]
) -> int:
    """What the producer counts against its maximum request size for one record."""
    size: int = DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, list(headers))
    return size


def dead_letter_copy(letter: DeadLetter, service: str, max_request_bytes: int) -> DeadLetterCopy:
    """The whole record plus the reason and its coordinates in headers; a truncated copy
    well under the producer's limit when the whole one would not fit."""
    delivery = letter.delivery
    original = [(n, v) for n, v in delivery.headers if n not in _SET_BY_SINK]
    own = _letter_headers(letter, service)
    # A record needs a key or a value; a tombstone without a key is copied with an empty one.
    value = b"" if delivery.value is None and delivery.key is None else delivery.value
    headers = [*original, *own]
    if record_size(delivery.key, value, headers) <= max_request_bytes:
        return DeadLetterCopy(dlq_topic(delivery.topic), delivery.key, value, headers, "whole")
    return _truncated_copy(letter, original, own, max_request_bytes // _TRUNCATED_SHARE)


def minimal_copy(letter: DeadLetter, service: str, error: BaseException) -> DeadLetterCopy:
    """The reason, the coordinates, the event's id and type and why the copy was refused,
    without the value: what is left to write when the broker refused the copy."""
    delivery = letter.delivery
    ids = [
        (name, raw)
        for name, raw in delivery.headers
        if name in ("ce_id", "ce_type") and raw is not None and len(raw) <= _ID_BYTES
    ]
    key, key_notes = _cut_key(delivery.key)
    headers = [
        *ids,
        *_letter_headers(letter, service),
        (DlqHeader.TRUNCATED, b"true"),
        (DlqHeader.ORIGINAL_BYTES, str(len(delivery.value or b"")).encode()),
        *key_notes,
        (DlqHeader.SEND_ERROR, _cut(repr(error), _ERROR_BYTES)),
    ]
    return DeadLetterCopy(dlq_topic(delivery.topic), key, b"", headers, "minimal")


def _letter_headers(letter: DeadLetter, service: str) -> list[tuple[str, bytes]]:
    delivery = letter.delivery
    return [
        (DlqHeader.REASON, _cut(letter.reason, _REASON_BYTES)),
        (DlqHeader.TOPIC, delivery.topic.encode()),
        (DlqHeader.PARTITION, str(delivery.partition).encode()),
        (DlqHeader.OFFSET, str(delivery.offset).encode()),
        (DlqHeader.SERVICE, service.encode()),
    ]


def _truncated_copy(
    letter: DeadLetter,
    original: list[tuple[str, bytes]],
    own: list[tuple[str, bytes]],
    budget: int,
) -> DeadLetterCopy:
    """Key cut to 1 KiB, original headers kept while they fit a quarter of the budget, and
    the value cut to what is left."""
    delivery = letter.delivery
    key, key_notes = _cut_key(delivery.key)
    kept, dropped = _headers_within(original, budget // 4)
    notes = [
        (DlqHeader.TRUNCATED, b"true"),
        (DlqHeader.ORIGINAL_BYTES, str(len(delivery.value or b"")).encode()),
        *key_notes,
    ]
    if dropped:
        notes.append((DlqHeader.HEADERS_DROPPED, _cut(",".join(dropped), _NAMES_BYTES)))
    headers = [*kept, *own, *notes]
    room = max(0, budget - record_size(key, b"", headers) - 8)  # 8: the value's length varint
    value = (delivery.value or b"")[:room]
    return DeadLetterCopy(dlq_topic(delivery.topic), key, value, headers, "truncated")


def _cut_key(key: bytes | None) -> tuple[bytes | None, list[tuple[str, bytes]]]:
    if key is None or len(key) <= _KEY_BYTES:
        return key, []
    return key[:_KEY_BYTES], [(DlqHeader.ORIGINAL_KEY_BYTES, str(len(key)).encode())]


def _headers_within(
    headers: list[tuple[str, bytes]], budget: int
) -> tuple[list[tuple[str, bytes]], list[str]]:
    """The headers that fit `budget` bytes, in order (a large one is skipped, smaller ones
    after it still kept), and the names of those left out."""
    kept: list[tuple[str, bytes]] = []
    dropped: list[str] = []
    used = 0
    for name, raw in headers:
        size = len(name.encode(errors="replace")) + len(raw or b"") + 8  # varints and lengths
        if used + size <= budget:
            kept.append((name, raw))
            used += size
        else:
            dropped.append(name)
    return kept, dropped


def _cut(text: str, limit: int) -> bytes:
    """`text` as UTF-8, at most `limit` bytes, never ending inside a character."""
    return text.encode(errors="backslashreplace")[:limit].decode(errors="ignore").encode()


def _passing(exc: BaseException) -> bool:
    """A send failure that passes by itself: the broker away, a leader moving."""
    return is_transient(exc) or (isinstance(exc, KafkaError) and bool(exc.retriable))


class KafkaDeadLetterSink:
    """Copies records to `<topic>.dlq` with the reason and the original coordinates in
    headers, and waits until the broker has acknowledged every copy.

    Each letter is sent on its own: no letter is lost with another. A record too large to
    copy whole goes as a truncated copy; a copy refused for good (by the producer or the
    broker) is sent again as a minimal copy without the value, so every letter leaves a
    record. When the broker is away, `send` raises `Transient` once every send has settled,
    and the loop sends the letters again (a letter may then be there twice: `hotline dlq
    list` shows each original once).
    """

    def __init__(self, clients: KafkaClients) -> None:
        self._clients = clients

    async def send(self, letters: Sequence[DeadLetter], service: str) -> None:
        """Write every letter; raises Transient (retry) or DeadLettersNotWritten."""
        limit = self._clients.max_request_bytes
        first = [(letter, dead_letter_copy(letter, service, limit)) for letter in letters]
        for letter, copy in first:
            if copy.kind == "truncated":
                log.warning(
                    "dead letter too large to copy whole; writing a truncated copy",
                    extra={
                        **_context(letter, service),
                        "original_bytes": len(letter.delivery.value or b""),
                        "kept_bytes": len(copy.value or b""),
                    },
                )
        second: list[tuple[DeadLetter, DeadLetterCopy]] = []
        passing: list[Exception] = []
        for (letter, copy), error in zip(first, await self._send_each(first), strict=True):
            if error is None:
                _count_cut(copy, service, letter)
            elif _passing(error):
                passing.append(error)
            else:
                log.warning(
                    "dead letter refused; writing a minimal copy instead",
                    extra=_context(letter, service, error),
                )
                second.append((letter, minimal_copy(letter, service, error)))
        lost: list[Exception] = []
        for (letter, copy), error in zip(second, await self._send_each(second), strict=True):
            if error is None:
                _count_cut(copy, service, letter)
            elif _passing(error):
                passing.append(error)
            else:
                log.error(
                    "dead letter refused even without its value",
                    extra=_context(letter, service, error),
                )
                lost.append(error)
        if lost:
            raise DeadLettersNotWritten(
                f"{len(lost)} dead letter(s) refused even as a minimal copy: {lost[0]!r}"
            ) from lost[0]
        if passing:
            raise Transient(f"{len(passing)} dead letter(s) not acknowledged") from passing[0]

    async def _send_each(
        self, copies: Sequence[tuple[DeadLetter, DeadLetterCopy]]
    ) -> list[Exception | None]:
        """Send every copy, then wait for each: a failure of one stops no other."""
        producer = self._clients.producer
        pending: list[Any] = []
        for _, copy in copies:
            try:
                pending.append(
                    await producer.send(copy.topic, copy.value, key=copy.key, headers=copy.headers)
                )
            except Exception as exc:  # refused before it left: too large, buffer full
                pending.append(exc)
        results: list[Exception | None] = []
        for item in pending:
            if isinstance(item, Exception):
                results.append(item)
                continue
            try:
                await item
            except Exception as exc:
                results.append(exc)
            else:
                results.append(None)
        return results


def _count_cut(copy: DeadLetterCopy, service: str, letter: DeadLetter) -> None:
    if copy.kind != "whole":
        DEAD_LETTERS_CUT.labels(service, letter.delivery.topic, copy.kind).inc()


def _context(letter: DeadLetter, service: str, error: Exception | None = None) -> dict[str, object]:
    delivery = letter.delivery
    context: dict[str, object] = {
        "service": service,
        "topic": delivery.topic,
        "partition": delivery.partition,
        "offset": delivery.offset,
    }
    if error is not None:
        context["error"] = repr(error)[:_ERROR_BYTES]
    return context


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
        topics: Sequence[str] = (),
    ) -> None:
        """`topics`: those it consumes, whose dead-letter counters start at 0 here, so that
        Prometheus's `increase()` (the dead-letter alert) sees the first one too."""
        self._service = service
        for topic in topics:
            EVENTS_DEAD_LETTERED.labels(service, topic)
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
                crash_point(self._service, "consumer-mid-batch")
            try:
                await uow.flush()
            except Exception as exc:
                if is_transient(exc) or isolate:
                    raise
                raise _FailedForGood from exc
            crash_point(self._service, "consumer-flushed")
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
                        uow.event_id = envelope.event_id
                        await handler(uow, event)
            else:
                mine = envelope.event_id in claimed
                claimed.discard(envelope.event_id)  # a second copy in the batch is a duplicate
                if mine:
                    uow.event_id = envelope.event_id
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

        Offsets are committed only once the broker has acknowledged every dead letter; while
        it has not, only the dead-letter step is retried (the effects are stored already).
        Returns False if stopped before the batch was done (its offsets stay uncommitted, so
        it is delivered again). A sink failing for good (`DeadLettersNotWritten`) is raised:
        the batch stays unfinished and the runner reports it and tries again slowly.
        """
        backoff = Backoff(maximum=self._max_backoff)
        outcome: BatchOutcome | None = None
        while True:
            try:
                if outcome is None:
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
        crash_point(self._service, "consumer-applied")
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
        # The bound covers a batch retried while the database is away and a broker that
        # does not answer, not only the loop: a process asked to stop must stop.
        expired = asyncio.Event()
        timer = asyncio.get_running_loop().call_later(timeout, expired.set)
        try:
            async with asyncio.timeout(timeout + 1.0):
                while not expired.is_set():
                    try:
                        found, _ = await self._next_batch(expired)
                        if found:
                            continue
                        lags = await self.source.lag()
                        if lags and sum(lags.values()) == 0:
                            return True
                    except Exception as exc:
                        log.warning("consumer drain retrying", extra={"error": repr(exc)})
                        await asyncio.sleep(0.2)
        except TimeoutError:
            pass
        finally:
            timer.cancel()
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
