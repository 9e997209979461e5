"""The consumer loop: exactly-once effects, dead letters, retries that never drop."""

import asyncio
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from prometheus_client import REGISTRY

from shared.background import Runner
from shared.consumer import ConsumerLoop, Delivery
from shared.events import CallbackLogged, TransferAttempted
from shared.projections import Projections
from tests.fakes import (
    FakeDeadLetters,
    FakeProcessedLog,
    FakeSource,
    FakeUnitOfWork,
    delivery_of,
)
from tests.support import eventually

AT = datetime(2026, 4, 1, 8, 0, tzinfo=UTC)


def transfer(ticket: str, connected: bool = True) -> TransferAttempted:
    return TransferAttempted(
        ticket_id=ticket,
        transfer_id=f"x-{ticket}",
        department="住建局",
        mode="transfer",
        connected=connected,
        at=AT,
    )


def poison(offset: int) -> Delivery:
    return Delivery(topic="t", partition=0, offset=offset, key=b"k", value=b"{", headers=())


class Harness:
    def __init__(self, batches, *, handler=None, dead_letters=None):
        self.store: dict = {}
        self.source = FakeSource(batches)
        self.dead_letters = dead_letters or FakeDeadLetters()

        async def count_connected(uow, event):
            uow.state.setdefault("applied", []).append(event.ticket_id)

        projections = Projections()
        projections.on(TransferAttempted)(handler or count_connected)
        self.loop = ConsumerLoop(
            service="test",
            source=self.source,
            projections=projections,
            new_uow=lambda: FakeUnitOfWork(self.store),
            dead_letters=self.dead_letters,
            processed=FakeProcessedLog(),
            max_backoff_seconds=0.01,
        )

    async def run_until_empty(self):
        stopping = asyncio.Event()
        while self.source.batches:
            batch = await self.source.fetch()
            assert await self.loop.handle(batch, stopping)


async def test_a_redelivered_event_changes_nothing():
    first = delivery_of(transfer("a"), event_id="e1", offset=0)
    again = delivery_of(transfer("a"), event_id="e1", offset=7)
    harness = Harness([[first], [again]])
    await harness.run_until_empty()
    assert harness.store["applied"] == ["a"]
    assert harness.source.committed == [first, again]


async def test_the_same_event_twice_in_one_batch_is_applied_once():
    record = delivery_of(transfer("a"), event_id="e1")
    harness = Harness([[record, record]])
    await harness.run_until_empty()
    assert harness.store["applied"] == ["a"]


async def test_poison_goes_to_the_dead_letters_and_the_rest_of_the_batch_is_applied():
    good = delivery_of(transfer("b"), event_id="e2", offset=1)
    harness = Harness([[poison(0), good]])
    await harness.run_until_empty()
    assert harness.store["applied"] == ["b"]
    assert [letter.delivery.offset for letter in harness.dead_letters.sent] == [0]
    assert "missing header" in harness.dead_letters.sent[0].reason
    assert harness.source.committed == [poison(0), good]


async def test_dead_letters_are_counted_from_zero_per_consumed_topic():
    """The series exists at 0 before the first dead letter, so `increase()` sees it."""
    loop = ConsumerLoop(
        service="zero-test",
        source=FakeSource([]),
        projections=Projections(),
        new_uow=lambda: FakeUnitOfWork({}),
        dead_letters=FakeDeadLetters(),
        topics=["t"],
    )
    labels = {"service": "zero-test", "topic": "t"}
    assert REGISTRY.get_sample_value("hotline_events_dead_lettered_total", labels) == 0
    await loop.handle([poison(0)], asyncio.Event())
    assert REGISTRY.get_sample_value("hotline_events_dead_lettered_total", labels) == 1


async def test_an_event_whose_handler_fails_for_good_is_dead_lettered_and_undone_alone():
    async def refuse_c(uow, event):
        uow.state.setdefault("applied", []).append(event.ticket_id)
        if event.ticket_id == "c":
            raise ValueError("department unknown")

    records = [delivery_of(transfer(t), event_id=f"e-{t}", offset=i) for i, t in enumerate("bcd")]
    harness = Harness([records], handler=refuse_c)
    await harness.run_until_empty()
    assert harness.store["applied"] == ["b", "d"]
    assert harness.store["processed"] == ["e-b", "e-d"]
    assert [letter.delivery.offset for letter in harness.dead_letters.sent] == [1]
    assert "department unknown" in harness.dead_letters.sent[0].reason


async def test_a_database_outage_is_retried_and_the_batch_is_applied_once_it_is_back():
    failures = {"left": 3}

    async def flaky(uow, event):
        if failures["left"]:
            failures["left"] -= 1
            raise sa.exc.OperationalError("SELECT 1", {}, ConnectionRefusedError())
        uow.state.setdefault("applied", []).append(event.ticket_id)

    record = delivery_of(transfer("a"), event_id="e1")
    harness = Harness([[record]], handler=flaky)
    await harness.run_until_empty()
    assert harness.store["applied"] == ["a"]
    assert harness.source.committed == [record]


async def test_offsets_wait_until_the_dead_letters_are_safely_on_the_broker():
    harness = Harness([[poison(0)]], dead_letters=FakeDeadLetters(failures_left=2))
    await harness.run_until_empty()
    assert len(harness.dead_letters.sent) == 1
    assert harness.source.committed == [poison(0)]


async def test_a_batch_stopped_during_an_outage_is_left_uncommitted_for_redelivery():
    async def always_down(uow, event):
        raise ConnectionRefusedError()

    record = delivery_of(transfer("a"), event_id="e1")
    harness = Harness([], handler=always_down)
    stopping = asyncio.Event()
    stopping.set()
    assert await harness.loop.handle([record], stopping) is False
    assert harness.source.committed == []
    assert "applied" not in harness.store


async def test_drain_gives_up_in_time_while_the_database_stays_away():
    """A service asked to stop with its database gone (the whole stack killed) must exit:
    the batch it could not apply stays uncommitted for the next start."""

    async def always_down(uow, event):
        raise ConnectionRefusedError()

    record = delivery_of(transfer("a"), event_id="e1")
    harness = Harness([[record]], handler=always_down)
    async with asyncio.timeout(5):  # before the fix it retried the batch without end
        assert await harness.loop.drain(0.3) is False
    assert harness.source.committed == []
    assert "applied" not in harness.store


async def test_types_without_a_handler_are_skipped_and_committed():
    callback = CallbackLogged(ticket_id="a", callback_id="c", reached=True, at=AT)
    record = delivery_of(callback, event_id="e9")
    harness = Harness([[record]])
    await harness.run_until_empty()
    assert "applied" not in harness.store
    assert harness.source.committed == [record]


async def test_the_run_loop_keeps_going_after_poison():
    good = delivery_of(transfer("z"), event_id="ez", offset=1)
    harness = Harness([[poison(0)], [good]])
    stopping = asyncio.Event()
    task = Runner("test").start(harness.loop, until=stopping)
    await eventually(lambda: "applied" in harness.store, timeout=5)
    stopping.set()
    await task
    assert harness.store["applied"] == ["z"]
    assert len(harness.dead_letters.sent) == 1


@pytest.mark.parametrize("exc", [ConnectionRefusedError(), TimeoutError()])
def test_network_failures_count_as_transient(exc):
    from shared.retry import is_transient

    assert is_transient(exc)
    assert not is_transient(ValueError("bad"))


def test_deadlocks_and_serialization_failures_are_retried_not_dead_lettered():
    import asyncpg

    from shared.retry import is_transient

    deadlock = asyncpg.exceptions.DeadlockDetectedError("deadlock detected")
    serialization = asyncpg.exceptions.SerializationError("could not serialize")
    duplicate = asyncpg.exceptions.UniqueViolationError("duplicate key")
    assert is_transient(sa.exc.DBAPIError("UPDATE t", {}, deadlock))
    assert is_transient(sa.exc.DBAPIError("UPDATE t", {}, serialization))
    assert not is_transient(sa.exc.IntegrityError("INSERT", {}, duplicate))


async def test_drain_waits_for_partitions_before_calling_itself_drained():
    harness = Harness([])
    harness.source.unassigned_polls = 10**9  # still joining the group: nothing fetched yet
    assert await harness.loop.drain(timeout=0.05) is False
    harness.source.unassigned_polls = 3
    record = delivery_of(transfer("late"), event_id="e-late")
    harness.source.batches = [[record]]
    assert await harness.loop.drain(timeout=2) is True
    assert harness.store["applied"] == ["late"]


async def test_lag_of_a_partition_moved_to_another_replica_is_no_longer_reported():
    from shared.observability import CONSUMER_LAG

    harness = Harness([])
    harness.loop._service = "lag-test"
    harness.source.lag = _lags({("t", 0): 3, ("t", 1): 4})
    await harness.loop._report_lag()
    harness.source.lag = _lags({("t", 1): 2})  # partition 0 went to another member
    await harness.loop._report_lag()
    reported = {
        sample.labels["partition"]: sample.value
        for metric in CONSUMER_LAG.collect()
        for sample in metric.samples
        if sample.labels["service"] == "lag-test"
    }
    assert reported == {"1": 2}


def _lags(values):
    async def lag():
        return values

    return lag
