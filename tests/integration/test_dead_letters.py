"""Dead letters through a real service's consumer loop, the real broker and PostgreSQL: every
poison record of a batch reaches the dead-letter topic, a 2 MB one as a truncated copy
(issue 11: it used to take its batch mates with it)."""

import contextlib
import json
import uuid
from datetime import UTC, datetime

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from shared.events import CallOutcome, TicketSubmitted
from shared.kafka import PRODUCER_MAX_REQUEST_BYTES, dlq_topic, ensure_topics
from tests.conftest import selected_broker
from tests.support import eventually, headers_of, read_topic, record_of, running_service

pytestmark = pytest.mark.integration

BIG = 2 * 1024 * 1024


def submitted(ticket_id: str | None = None) -> TicketSubmitted:
    return TicketSubmitted(
        ticket_id=ticket_id or f"t-{uuid.uuid4().hex[:12]}",
        city="沈阳",
        channel="phone",
        scenario="供暖",
        category="complaint",
        submitted_at=datetime.now(UTC),
        call=CallOutcome(answered=True, wait_seconds=8, resolved_at_first_contact=False),
    )


def ce_headers(event_id: str, ce_type: str = TicketSubmitted.ce_type) -> list[tuple[str, bytes]]:
    return [
        ("ce_id", event_id.encode()),
        ("ce_source", b"/test"),
        ("ce_type", ce_type.encode()),
        ("ce_specversion", b"1.0"),
        ("content-type", b"application/json"),
    ]


def poison_records() -> dict[str, tuple[bytes, bytes, list[tuple[str, bytes]]]]:
    """(key, value, headers) of records that can never be processed, by what is wrong."""
    valid = record_of(submitted("t-p5"))
    return {
        "no headers": (b"t-p1", b"{not json", []),
        "bad json": (b"t-p2", b"{not json", ce_headers("p2")),
        "invalid": (b"t-p3", json.dumps({"ticket_id": "t-p3"}).encode(), ce_headers("p3")),
        "2 MB": (
            b"t-p4",
            json.dumps({"ticket_id": "t-p4", "padding": "x" * BIG}).encode(),
            ce_headers("p4"),
        ),
        "wrong key": (b"t-other", valid.value, valid.headers),
    }


@contextlib.asynccontextmanager
async def large_producer(settings, topic=None, largest=BIG):
    """A producer that may send the tester's record of `largest` bytes (2 MB; the services'
    refuses any above 1 MB) to `topic` (intake's).

    Apache Kafka refuses a record above its topic's `max.message.bytes` (1 MB by default);
    tansu takes any size. On Kafka the topic is given room for large records, as an
    operator would; its dead-letter topic keeps the default, so the copy must still fit.
    """
    topic = topic or settings.topic("intake")
    await ensure_topics(settings, [topic, dlq_topic(topic)])
    if selected_broker() == "kafka":
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
        await admin.start()
        try:
            room = {"max.message.bytes": str(4 * largest)}
            (answer,) = await admin.alter_configs(
                [ConfigResource(ConfigResourceType.TOPIC, topic, configs=room)]
            )
            assert all(resource[0] == 0 for resource in answer.resources), answer
        finally:
            await admin.close()
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        acks="all",
        max_request_size=4 * largest,
    )
    await producer.start()
    try:
        yield producer
    finally:
        await producer.stop()


async def send_raw(producer, topic, key, value, headers) -> int:
    """Send to partition 0 (so that the records form one batch); returns the offset."""
    metadata = await producer.send_and_wait(topic, value, key=key, headers=headers, partition=0)
    return metadata.offset


async def send_event(producer, topic, event) -> int:
    record = record_of(event)
    return await send_raw(producer, topic, record.key, record.value, record.headers)


async def known(service, ticket_id) -> bool:
    return (await service.http.get(f"/tickets/{ticket_id}")).status_code == 200


async def test_a_batch_with_a_2_mb_record_dead_letters_every_poison_record_and_moves_on(
    settings, infra
):
    topic = settings.topic("intake")
    good = [submitted() for _ in range(3)]
    offsets: dict[str, int] = {}
    async with large_producer(settings) as producer:
        # Published before the consumer starts, so that they arrive as one batch.
        poison = poison_records()
        order = ["no headers", 0, "bad json", "2 MB", 1, "invalid", "wrong key", 2]
        for item in order:
            if isinstance(item, int):
                await send_event(producer, topic, good[item])
            else:
                offsets[item] = await send_raw(producer, topic, *poison[item])
        async with running_service("dispatch", settings) as dispatch:
            for event in good:
                await eventually(lambda e=event: known(dispatch, e.ticket_id), message="applied")
            letters = await read_topic(
                infra.bootstrap_servers, dlq_topic(topic), at_least=len(poison)
            )
            later = submitted()
            await send_event(producer, topic, later)
            await eventually(lambda: known(dispatch, later.ticket_id), message="not stalled")

    by_offset = {int(headers_of(r)["dlq_offset"]): r for r in letters}
    assert sorted(by_offset) == sorted(offsets.values())  # each poison record exactly once
    for what, offset in offsets.items():
        headers = headers_of(by_offset[offset])
        assert headers["dlq_topic"] == topic.encode(), what
        assert headers["dlq_partition"] == b"0", what
        assert headers["dlq_service"] == b"dispatch", what
        assert headers["dlq_reason"], what
    big = by_offset[offsets["2 MB"]]
    big_headers = headers_of(big)
    original_value = poison["2 MB"][1]
    assert big_headers["dlq_truncated"] == b"true"
    assert big_headers["dlq_original_bytes"] == str(len(original_value)).encode()
    assert big_headers["dlq_reason"].startswith(b"invalid hotline.ticket.submitted.v1")
    assert big_headers["ce_id"] == b"p4"
    assert big.key == b"t-p4"
    assert original_value.startswith(big.value)
    assert 0 < len(big.value) <= PRODUCER_MAX_REQUEST_BYTES // 8
    for what in ("no headers", "bad json", "invalid", "wrong key"):
        letter = by_offset[offsets[what]]
        assert "dlq_truncated" not in headers_of(letter), what
        assert (letter.key, letter.value) == poison[what][:2], what
    assert b"missing header" in headers_of(by_offset[offsets["no headers"]])["dlq_reason"]
    assert b"not JSON" in headers_of(by_offset[offsets["bad json"]])["dlq_reason"]
    assert b"key is not" in headers_of(by_offset[offsets["wrong key"]])["dlq_reason"]
