"""The relay publishes in order, marks only what the broker acknowledged, never drops, and
sets aside a row that can never be published without stalling the others or reordering its
ticket's events."""

import asyncio
import uuid
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from aiokafka.errors import (
    InvalidTopicError,
    KafkaConnectionError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    NotLeaderForPartitionError,
    RecordTooLargeError,
    RequestTimedOutError,
    TopicAuthorizationFailedError,
)
from prometheus_client import REGISTRY

from shared.background import Runner
from shared.outbox import OutboxRelay, OutboxStatus, PendingEvent
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


# -- rows that can never be published are set aside; nothing stalls behind them -------------


def unencodable(seq: int, key: str) -> PendingEvent:
    """A row as the tester's ticket was stored: its time read back without a time zone."""
    return replace(pending(seq, key), time=datetime.min)


def out_of_range(seq: int, key: str) -> PendingEvent:
    """A row whose stored time ('-infinity') the store could not read as a time."""
    return replace(pending(seq, key), time=None, stored_time="-infinity")


def service_name(label: str) -> str:
    """A service label of this test's own, so the process-wide metrics start empty for it."""
    return f"{label}-{uuid.uuid4().hex[:8]}"


def sample(name: str, service: str) -> float | None:
    return REGISTRY.get_sample_value(name, {"service": service})


async def test_a_row_that_cannot_be_encoded_is_set_aside_and_other_tickets_go_on():
    store = FakeOutboxStore(
        [
            pending(1, "t-1"),
            unencodable(2, "t-2"),
            pending(3, "t-3"),
            pending(4, "t-2"),  # after the bad row, same ticket: must wait
            pending(5, "t-1"),
        ]
    )
    publisher = FakePublisher()
    the_relay = relay(store, publisher)
    assert await the_relay.relay_once() == 3
    assert [r.seq for r in publisher.topic_log] == [1, 3, 5]
    assert list(store.set_aside) == [2]
    assert "timezone aware" in store.set_aside[2]
    assert store.attempts[2] == 1
    assert 4 not in store.failures
    assert store.attempts[4] == 0
    # Later rounds publish nothing of that ticket until the row is put back.
    assert await the_relay.relay_once() == 0
    assert await store.status() == OutboxStatus(
        pending=0, oldest_pending_seconds=0.0, set_aside=1, held=1
    )


async def test_a_row_put_back_after_a_fix_goes_out_before_the_rows_held_behind_it():
    store = FakeOutboxStore([unencodable(1, "t-1"), pending(2, "t-2"), pending(3, "t-1")])
    publisher = FakePublisher()
    the_relay = relay(store, publisher)
    await the_relay.relay_once()
    assert [r.seq for r in publisher.topic_log] == [2]
    store.rows[1] = pending(1, "t-1")  # fixed
    del store.set_aside[1]  # put back
    assert await the_relay.relay_once() == 2
    assert [r.seq for r in publisher.topic_log] == [2, 1, 3]


async def test_a_stored_time_no_event_can_carry_is_named_in_the_error():
    store = FakeOutboxStore([out_of_range(1, "t-1"), pending(2, "t-2")])
    assert await relay(store, FakePublisher()).relay_once() == 1
    assert "'-infinity'" in store.set_aside[1]
    assert store.set_aside[1].startswith("UnsendableEvent: ")


@pytest.mark.parametrize(
    "refusal",
    [
        MessageSizeTooLargeError("The message is 2000000 bytes"),
        RecordTooLargeError(),
        InvalidTopicError(),
        TopicAuthorizationFailedError("intake.events"),
    ],
    ids=lambda error: type(error).__name__,
)
async def test_a_record_the_broker_refuses_for_good_is_set_aside_and_the_rest_follows(refusal):
    store = FakeOutboxStore(
        [pending(1, "t-1"), pending(2, "t-2"), pending(3, "t-3"), pending(4, "t-2")]
    )
    publisher = FakePublisher(refuse={2: refusal})
    the_relay = relay(store, publisher)
    stopping = asyncio.Event()
    task = Runner("test").start(the_relay, until=stopping, wakeup=the_relay.wakeup)
    await eventually(lambda: store.published == [1, 3], timeout=5, message="1 and 3 out")
    stopping.set()
    await task
    assert list(store.set_aside) == [2]
    assert store.set_aside[2].startswith(type(refusal).__name__)
    assert [r.seq for r in publisher.topic_log] == [1, 3]
    assert (await store.status()).held == 1


@pytest.mark.parametrize(
    "failure",
    [
        ConnectionError("broker down"),
        KafkaConnectionError(),
        KafkaTimeoutError(),
        RequestTimedOutError(),
        NotLeaderForPartitionError(),
        RuntimeError("an error nobody classified"),
    ],
    ids=lambda error: type(error).__name__,
)
async def test_a_failure_that_may_pass_sets_nothing_aside_and_keeps_the_rows_pending(failure):
    store = FakeOutboxStore([pending(1, "t-1"), pending(2, "t-2")])
    publisher = FakePublisher(refuse={1: failure})
    with pytest.raises(type(failure)):
        await relay(store, publisher).relay_once()
    assert store.set_aside == {}
    assert store.published == []
    assert set(store.failures) == {1, 2}
    assert store.failures[1].startswith(type(failure).__name__)
    assert (await store.status()).pending == 2


async def test_set_aside_rows_are_counted():
    service = service_name("counted")
    store = FakeOutboxStore([unencodable(1, "t-1"), unencodable(2, "t-2"), pending(3, "t-1")])
    the_relay = OutboxRelay(store, FakePublisher(), service=service)
    await the_relay.relay_once()
    assert sample("hotline_outbox_set_aside_total", service) == 2
    await the_relay.measure()
    assert sample("hotline_outbox_set_aside_events", service) == 2
    assert sample("hotline_outbox_held_events", service) == 1
    assert sample("hotline_outbox_backlog", service) == 0


async def test_the_gauges_read_the_backlog_while_the_relay_keeps_failing():
    service = service_name("failing")
    store = FakeOutboxStore([pending(seq, f"t-{seq}") for seq in range(1, 4)])
    the_relay = OutboxRelay(
        store,
        FakePublisher(failures_left=10_000),
        service=service,
        max_backoff_seconds=0.01,
    )
    stopping = asyncio.Event()
    runner = Runner(service)
    runner.start(the_relay, until=stopping, wakeup=the_relay.wakeup)
    runner.start(the_relay.measuring(0.01), until=stopping)
    await eventually(
        lambda: sample("hotline_outbox_backlog", service) == 3, timeout=5, message="gauge 3"
    )
    assert store.published == []
    assert store.attempts[1] >= 1
    store.rows[4] = pending(4, "t-4")
    store.attempts[4] = 0
    await eventually(
        lambda: sample("hotline_outbox_backlog", service) == 4, timeout=5, message="gauge 4"
    )
    stopping.set()
    await runner.stop(timeout=1)


async def test_drain_ends_when_only_rows_set_aside_or_held_are_left():
    store = FakeOutboxStore([pending(1, "t-1"), unencodable(2, "t-2"), pending(3, "t-2")])
    assert await relay(store, FakePublisher()).drain(timeout=2) is True
    assert store.published == [1]


class CountingPublisher(FakePublisher):
    """Counts the rounds: how many sends the relay made, each with how many records."""

    def __init__(self) -> None:
        super().__init__()
        self.rounds: list[int] = []

    async def publish(self, records):
        self.rounds.append(len(records))
        return await super().publish(records)


@pytest.mark.parametrize(("linger", "rounds"), [(0.0, [1, 1, 1]), (0.2, [3])])
async def test_a_lingering_relay_sends_the_commits_of_a_busy_moment_in_one_round(linger, rounds):
    store = FakeOutboxStore([pending(1)])
    publisher = CountingPublisher()
    the_relay = OutboxRelay(
        store, publisher, service="test", batch_size=10, idle_seconds=0.01, linger_seconds=linger
    )
    stepping = asyncio.create_task(the_relay.step())
    for seq in (2, 3):  # two more commits while it lingers (or right after each round)
        await asyncio.sleep(0)
        store.rows[seq] = pending(seq)
        store.attempts[seq] = 0
        if linger == 0.0:
            await stepping
            stepping = asyncio.create_task(the_relay.step())
    await stepping
    assert publisher.rounds == rounds
    assert store.published == [1, 2, 3]


async def test_a_relay_that_left_rows_behind_does_not_linger_before_the_next_round():
    store = FakeOutboxStore([pending(seq) for seq in range(1, 6)])
    publisher = CountingPublisher()
    the_relay = OutboxRelay(
        store, publisher, service="test", batch_size=2, idle_seconds=0.01, linger_seconds=0.5
    )
    await the_relay.step()  # the first round lingers
    async with asyncio.timeout(0.4):  # a full round behind it: the next two go at once
        assert await the_relay.step() == 0.0
        await the_relay.step()
    assert publisher.rounds == [2, 2, 1]
