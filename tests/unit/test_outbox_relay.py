"""The relay publishes in order, marks only what the broker acknowledged, and never drops."""

import asyncio
from datetime import UTC, datetime

import pytest

from shared.background import Runner
from shared.outbox import OutboxRelay, PendingEvent
from tests.fakes import FakeOutboxStore, FakePublisher
from tests.support import eventually


def pending(seq: int, key: str = "t-1") -> PendingEvent:
    return PendingEvent(
        seq=seq,
        event_id=f"e-{seq}",
        topic="intake.events",
        ce_type="x.v1",
        source="/s",
        key=key,
        time=datetime(2026, 1, 5, tzinfo=UTC),
        data={"ticket_id": key},
    )


def relay(store, publisher, batch_size=10):
    return OutboxRelay(
        store,
        publisher,
        service="test",
        batch_size=batch_size,
        idle_seconds=0.01,
        max_backoff_seconds=0.01,
    )


async def test_rows_are_published_in_seq_order_and_marked_published():
    store = FakeOutboxStore([pending(3), pending(1), pending(2)])
    publisher = FakePublisher()
    assert await relay(store, publisher).relay_once() == 3
    assert [e.seq for e in publisher.topic_log] == [1, 2, 3]
    assert store.published == [1, 2, 3]


async def test_a_failed_send_leaves_the_rest_unpublished_and_notes_the_error():
    store = FakeOutboxStore([pending(1), pending(2), pending(3)])
    publisher = FakePublisher(failures_left=1, fail_from=1)
    with pytest.raises(ConnectionError):
        await relay(store, publisher).relay_once()
    assert store.published == [1]
    assert set(store.failures) == {2, 3}
    assert "broker down" in store.failures[2]


async def test_the_run_loop_waits_out_a_broker_outage_and_publishes_everything_once():
    store = FakeOutboxStore([pending(seq) for seq in range(1, 8)])
    publisher = FakePublisher(failures_left=3)
    the_relay = relay(store, publisher, batch_size=3)
    stopping = asyncio.Event()
    task = Runner("test").start(the_relay, until=stopping, wakeup=the_relay.wakeup)
    await eventually(lambda: len(store.published) == 7, timeout=5)
    stopping.set()
    await task
    assert [e.seq for e in publisher.topic_log] == list(range(1, 8))
    assert sorted(store.published) == list(range(1, 8))


async def test_drain_publishes_what_is_left_before_shutdown():
    store = FakeOutboxStore([pending(seq) for seq in range(1, 26)])
    assert await relay(store, FakePublisher(), batch_size=10).drain(timeout=2) is True
    assert len(store.published) == 25


async def test_drain_gives_up_after_its_bound_while_the_broker_is_down():
    store = FakeOutboxStore([pending(1)])
    publisher = FakePublisher(failures_left=10_000)
    assert await relay(store, publisher).drain(timeout=0.2) is False
    assert store.published == []
