"""`hotline dlq list|show|replay` against the real broker, with services consuming."""

import asyncio
from contextlib import AsyncExitStack

import pytest
from prometheus_client import REGISTRY
from typer.testing import CliRunner

from hotline.dlq import app
from shared.kafka import dlq_topic
from tests.integration.test_dead_letters import (
    ce_headers,
    known,
    large_producer,
    poison_records,
    send_raw,
    submitted,
)
from tests.support import eventually, headers_of, read_topic, record_of, running_service

pytestmark = pytest.mark.integration


async def dlq(settings, *args):
    """`hotline dlq ...` as a user runs it, finding the broker in the environment."""
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "HOTLINE_TOPIC_PREFIX": settings.topic_prefix,
        "HOTLINE_DATA_DIR": str(settings.data_dir),
    }
    # In a thread: the command runs its own event loop.
    return await asyncio.to_thread(CliRunner().invoke, app, [str(a) for a in args], env=env)


def data_lines(result):
    lines = result.stdout.splitlines()
    assert lines[0].startswith("DEAD LETTER")
    return lines[1:-1]


def consumed(service, topic, ce_type, outcome):
    value = REGISTRY.get_sample_value(
        "hotline_events_consumed_total",
        {"service": service, "topic": topic, "type": ce_type, "outcome": outcome},
    )
    return value or 0


async def test_list_shows_each_original_once_show_prints_one_and_a_truncated_copy_is_refused(
    settings, infra, tmp_path
):
    topic = settings.topic("intake")
    poison = poison_records()
    async with AsyncExitStack() as stack:
        producer = await stack.enter_async_context(large_producer(settings))
        for name in ("dispatch", "followup"):  # two consumers: two copies of each letter
            await stack.enter_async_context(running_service(name, settings))
        bad_offset = await send_raw(producer, topic, *poison["bad json"])
        big_offset = await send_raw(producer, topic, *poison["2 MB"])
        letters = await read_topic(infra.bootstrap_servers, dlq_topic(topic), at_least=4)
        await eventually(
            lambda: _copies(infra, topic, 4), message="both services dead-lettered both"
        )
        letters = await read_topic(infra.bootstrap_servers, dlq_topic(topic))

        listed = await dlq(settings, "list", "--topic", topic)
        copies = await dlq(settings, "list", "--copies")
        followup_only = await dlq(settings, "list", "--service", "followup", "--limit", "1")
        nobody = await dlq(settings, "list", "--service", "nobody")

        big = next(r for r in letters if headers_of(r)["dlq_offset"] == str(big_offset).encode())
        where = (dlq_topic(topic), big.partition, big.offset)
        shown = await dlq(settings, "show", *where, "--max-bytes", "300")
        saved = tmp_path / "value.bin"
        written = await dlq(settings, "show", *where, "--output", saved)
        missing = await dlq(settings, "show", dlq_topic(topic), big.partition, 10_000)
        before = len(await read_topic(infra.bootstrap_servers, topic))
        refused = await dlq(settings, "replay", *where)
        unusable = await dlq(settings, "replay", dlq_topic(topic))
        after = len(await read_topic(infra.bootstrap_servers, topic))

    assert listed.exit_code == 0, listed.output
    lines = data_lines(listed)
    assert len(lines) == 2  # four records, two originals
    big_line = next(line for line in lines if f"{topic}/0/{big_offset}" in line)
    bad_line = next(line for line in lines if f"{topic}/0/{bad_offset}" in line)
    assert "dispatch,followup" in big_line
    assert "truncated" in big_line
    assert "2.0 MiB" in big_line
    assert "hotline.ticket.submitted.v1" in big_line
    assert "p4" in big_line
    assert "invalid hotline.ticket.submitted.v1" in big_line
    assert "whole" in bad_line
    assert "value is not JSON" in bad_line
    assert "2 dead letter(s), 4 record(s) in 1 topic(s); 2 shown" in listed.stdout

    assert len(data_lines(copies)) == 4
    assert followup_only.exit_code == 0
    assert len(data_lines(followup_only)) == 1
    assert "2 dead letter(s), 2 record(s)" in followup_only.stdout
    assert nobody.exit_code == 1
    assert "no dead letters" in nobody.output

    assert shown.exit_code == 0, shown.output
    assert f"original: {topic}/0/{big_offset}" in shown.stdout
    assert "dlq_truncated: true" in shown.stdout
    assert f"dlq_original_bytes: {len(poison['2 MB'][1])}" in shown.stdout
    assert "ce_id: p4" in shown.stdout
    assert "cut at 300 characters" in shown.stdout
    assert len(shown.stdout) < 5000  # never megabytes on a terminal
    assert written.exit_code == 0
    assert saved.read_bytes() == big.value
    assert missing.exit_code == 1
    assert "no record at" in missing.output

    assert refused.exit_code == 1
    assert "truncated copy" in refused.output
    assert "nothing replayed" in refused.output
    assert after == before
    assert unusable.exit_code == 2
    assert "give DLQ_TOPIC PARTITION OFFSET" in unusable.output


async def _copies(infra, topic, wanted):
    return len(await read_topic(infra.bootstrap_servers, dlq_topic(topic))) >= wanted


async def test_a_replayed_letter_is_applied_once_however_often_it_is_replayed(settings, infra):
    topic = settings.topic("intake")
    event = submitted()
    record = record_of(event)
    dead_letter_headers = [
        *record.headers,
        ("dlq_reason", b"handler failed: the ticket's city was not yet known"),
        ("dlq_topic", topic.encode()),
        ("dlq_partition", b"0"),
        ("dlq_offset", b"41"),
        ("dlq_service", b"dispatch"),
    ]
    async with AsyncExitStack() as stack:
        producer = await stack.enter_async_context(large_producer(settings))
        dispatch = await stack.enter_async_context(running_service("dispatch", settings))
        offset = await send_raw(
            producer, dlq_topic(topic), record.key, record.value, dead_letter_headers
        )
        await send_raw(producer, dlq_topic(topic), b"t-x", b"{", ce_headers("x"))  # no dlq_*
        assert not await known(dispatch, event.ticket_id)

        shown = await dlq(settings, "show", dlq_topic(topic), 0, offset)
        first = await dlq(settings, "replay", dlq_topic(topic), 0, offset)
        await eventually(lambda: known(dispatch, event.ticket_id), message="replay applied")
        again = await dlq(settings, "replay", "--all", "--topic", topic)
        await eventually(
            lambda: consumed("dispatch", topic, event.ce_type, "duplicate") == 1,
            message="second replay seen as a duplicate",
        )
        on_topic = await read_topic(infra.bootstrap_servers, topic, at_least=2)

    assert shown.exit_code == 0
    assert f'"ticket_id": "{event.ticket_id}"' in shown.stdout  # pretty JSON
    assert first.exit_code == 0, first.output
    assert f"replayed {dlq_topic(topic)}/0/{offset} -> {topic}/" in first.stdout
    assert again.exit_code == 0, again.output
    assert f"replayed {dlq_topic(topic)}/0/{offset}" in again.stdout
    assert "skipped:" in again.output  # the record without dead-letter headers
    assert consumed("dispatch", topic, event.ce_type, "processed") == 1
    assert len(on_topic) == 2
    for replayed in on_topic:
        headers = headers_of(replayed)
        assert headers["dlq_replayed_from"] == f"{dlq_topic(topic)}/0/{offset}".encode()
        assert not {"dlq_reason", "dlq_topic", "dlq_offset"} & headers.keys()
        assert (replayed.key, replayed.value) == (record.key, record.value)
        assert headers["ce_id"] == dict(record.headers)["ce_id"]
