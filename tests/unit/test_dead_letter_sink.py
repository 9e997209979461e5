"""The dead-letter sink: every letter of a batch leaves a record in the dead-letter topic,
a record too large to copy whole as a truncated copy; a broker away is retried."""

import asyncio
import json
from datetime import UTC, datetime

import pytest
from aiokafka.errors import (
    CorruptRecordException,
    KafkaConnectionError,
    MessageSizeTooLargeError,
    TopicAuthorizationFailedError,
)

from shared.consumer import (
    ConsumerLoop,
    DeadLetter,
    DeadLettersNotWritten,
    Delivery,
    KafkaDeadLetterSink,
    record_size,
)
from shared.events import TransferAttempted
from shared.projections import Projections
from shared.retry import is_transient
from tests.fakes import FakeProcessedLog, FakeSource, FakeUnitOfWork, delivery_of

LIMIT = 1024 * 1024
MB2 = 2 * 1024 * 1024
AT = datetime(2026, 4, 1, 8, 0, tzinfo=UTC)
CE = (("ce_id", b"ev-big"), ("ce_type", b"hotline.ticket.submitted.v1"), ("ce_specversion", b"1.0"))


class FakeProducer:
    """Refuses a record over `limit` at once, as aiokafka does; `refuse(topic, copy)` may
    return an error the broker answers instead of an acknowledgement."""

    def __init__(self, limit=LIMIT, refuse=None):
        self.limit = limit
        self.refuse = refuse or (lambda headers, value: None)
        self.records = []

    async def send(self, topic, value=None, key=None, headers=None):
        headers = headers or []
        if record_size(key, value, headers) > self.limit:
            raise MessageSizeTooLargeError("larger than max_request_size")
        future = asyncio.get_running_loop().create_future()
        error = self.refuse(dict(headers), value)
        if error is not None:
            future.set_exception(error)
        else:
            self.records.append((topic, key, value, headers))
            future.set_result(None)
        return future

    def by_offset(self):
        return {int(dict(h)["dlq_offset"]): (t, k, v, dict(h)) for t, k, v, h in self.records}


class FakeClients:
    def __init__(self, producer):
        self.producer = producer
        self.max_request_bytes = producer.limit


def poison(offset, value=b"{not json", headers=(), key=b"t-1"):
    return DeadLetter(
        Delivery(
            topic="intake.events",
            partition=2,
            offset=offset,
            key=key,
            value=value,
            headers=tuple(headers),
        ),
        reason=f"value is not JSON (offset {offset})",
    )


def big_letter(offset):
    return poison(offset, value=b'{"content": "' + b"x" * MB2 + b'"}', headers=CE)


async def test_a_batch_with_a_2_mb_poison_record_writes_every_letter_the_big_one_truncated():
    producer = FakeProducer()
    letters = [poison(0), poison(1, value=b"\xff\xfe"), big_letter(2), poison(3), poison(4)]
    await KafkaDeadLetterSink(FakeClients(producer)).send(letters, "dispatch")

    written = producer.by_offset()
    assert sorted(written) == [0, 1, 2, 3, 4]
    for offset in (0, 1, 3, 4):
        topic, key, value, headers = written[offset]
        assert topic == "intake.events.dlq"
        assert (key, value) == (letters[offset].delivery.key, letters[offset].delivery.value)
        assert "dlq_truncated" not in headers
    topic, key, value, headers = written[2]
    original = letters[2].delivery.value
    assert topic == "intake.events.dlq"
    assert key == b"t-1"
    assert original.startswith(value)
    assert len(value) > LIMIT // 16
    assert record_size(key, value, list(headers.items())) <= LIMIT // 8
    assert headers["dlq_truncated"] == b"true"
    assert headers["dlq_original_bytes"] == str(len(original)).encode()
    assert headers["dlq_reason"] == b"value is not JSON (offset 2)"
    assert (headers["dlq_topic"], headers["dlq_partition"], headers["dlq_offset"]) == (
        b"intake.events",
        b"2",
        b"2",
    )
    assert headers["dlq_service"] == b"dispatch"
    assert headers["ce_id"] == b"ev-big"  # the event's own headers are kept
    assert "dlq_headers_dropped" not in headers


async def test_oversized_headers_and_key_are_left_out_or_cut_and_the_copy_says_so():
    producer = FakeProducer()
    huge = [*CE, ("trace", b"t" * 1_100_000), ("tenant", b"a")]
    letter = poison(7, value=b"{}", headers=huge, key=b"k" * 5000)
    await KafkaDeadLetterSink(FakeClients(producer)).send([letter], "metrics")

    _, key, value, headers = producer.by_offset()[7]
    assert key == b"k" * 1024
    assert headers["dlq_original_key_bytes"] == b"5000"
    assert headers["dlq_headers_dropped"] == b"trace"
    assert headers["tenant"] == b"a"  # smaller headers after the big one are kept
    assert headers["ce_id"] == b"ev-big"
    assert headers["dlq_truncated"] == b"true"
    assert value == b"{}"


async def test_a_copy_refused_for_good_is_written_again_without_its_value_and_others_are_kept():
    def corrupt_offset_1(headers, value):
        if headers["dlq_offset"] == b"1" and value:
            return CorruptRecordException("the broker refuses it")
        return None

    producer = FakeProducer(refuse=corrupt_offset_1)
    letters = [poison(0), poison(1, headers=CE), big_letter(2), poison(3)]
    await KafkaDeadLetterSink(FakeClients(producer)).send(letters, "followup")

    written = producer.by_offset()
    assert sorted(written) == [0, 1, 2, 3]
    _, key, value, headers = written[1]
    assert value == b""
    assert key == b"t-1"
    assert headers["dlq_truncated"] == b"true"
    assert headers["dlq_original_bytes"] == str(len(b"{not json")).encode()
    assert b"CorruptRecordException" in headers["dlq_send_error"]
    assert headers["dlq_reason"] == b"value is not JSON (offset 1)"
    assert headers["ce_id"] == b"ev-big"
    assert headers["ce_type"].startswith(b"hotline.")
    assert written[2][3]["dlq_truncated"] == b"true"


async def test_a_broker_away_for_one_letter_raises_transient_after_the_others_are_written():
    def away_for_offset_1(headers, value):
        return KafkaConnectionError("broker away") if headers["dlq_offset"] == b"1" else None

    producer = FakeProducer(refuse=away_for_offset_1)
    with pytest.raises(Exception) as raised:
        await KafkaDeadLetterSink(FakeClients(producer)).send(
            [poison(0), poison(1), poison(2)], "dispatch"
        )
    assert is_transient(raised.value)
    assert sorted(producer.by_offset()) == [0, 2]


async def test_a_letter_refused_even_without_its_value_is_a_permanent_failure():
    def refuse_offset_1(headers, value):
        return TopicAuthorizationFailedError() if headers["dlq_offset"] == b"1" else None

    producer = FakeProducer(refuse=refuse_offset_1)
    with pytest.raises(DeadLettersNotWritten) as raised:
        await KafkaDeadLetterSink(FakeClients(producer)).send(
            [poison(0), poison(1), poison(2)], "dispatch"
        )
    assert not is_transient(raised.value)
    assert sorted(producer.by_offset()) == [0, 2]


async def test_stale_dead_letter_headers_of_a_replayed_record_are_replaced_not_repeated():
    replayed = poison(
        5,
        headers=[*CE, ("dlq_reason", b"old"), ("dlq_offset", b"99"), ("dlq_replayed_from", b"x")],
    )
    producer = FakeProducer()
    await KafkaDeadLetterSink(FakeClients(producer)).send([replayed], "dispatch")
    _, _, _, headers = producer.records[0]
    names = [name for name, _ in headers]
    assert names.count("dlq_reason") == 1
    assert names.count("dlq_offset") == 1
    assert dict(headers)["dlq_offset"] == b"5"
    assert dict(headers)["dlq_replayed_from"] == b"x"


def transfer(ticket):
    return TransferAttempted(
        ticket_id=ticket,
        transfer_id="x",
        department="住建局",
        mode="transfer",
        connected=True,
        at=AT,
    )


class AwayThenBack(FakeProducer):
    """A broker away for the first `away` sends."""

    def __init__(self, away):
        super().__init__(refuse=self._maybe_away)
        self.away = away

    def _maybe_away(self, headers, value):
        if self.away:
            self.away -= 1
            return KafkaConnectionError("broker away")
        return None


def loop_with(producer, source, store):
    projections = Projections()

    @projections.on(TransferAttempted)
    async def apply(uow, event):
        uow.state.setdefault("applied", []).append(event.ticket_id)

    return ConsumerLoop(
        service="sink-test",
        source=source,
        projections=projections,
        new_uow=lambda: FakeUnitOfWork(store),
        dead_letters=KafkaDeadLetterSink(FakeClients(producer)),
        processed=FakeProcessedLog(),
        max_backoff_seconds=0.01,
    )


async def test_the_loop_commits_a_batch_only_once_its_dead_letters_are_acknowledged():
    good = delivery_of(transfer("a"), event_id="e-a", offset=1, topic="intake.events")
    batch = [poison(0).delivery, good, big_letter(2).delivery]
    producer = AwayThenBack(away=3)
    source = FakeSource([])
    store = {}
    loop = loop_with(producer, source, store)
    assert await loop.handle(batch, asyncio.Event())
    assert source.committed == batch
    assert sorted(producer.by_offset()) == [0, 2]
    assert store["applied"] == ["a"]  # applied once: only the dead-letter step was retried


async def test_a_sink_failing_for_good_leaves_the_batch_uncommitted():
    producer = FakeProducer(refuse=lambda headers, value: TopicAuthorizationFailedError())
    source = FakeSource([])
    loop = loop_with(producer, source, {})
    with pytest.raises(DeadLettersNotWritten):
        await loop.handle([poison(0).delivery], asyncio.Event())
    assert source.committed == []


def test_a_copy_that_fits_is_the_whole_record_byte_for_byte():
    from shared.consumer import dead_letter_copy

    letter = poison(3, value=json.dumps({"a": 1}).encode(), headers=CE)
    copy = dead_letter_copy(letter, "dispatch", LIMIT)
    assert copy.kind == "whole"
    assert copy.value == letter.delivery.value
    assert copy.headers[: len(CE)] == list(CE)
