"""CloudEvents binary mode on Kafka: what goes out, what comes back, what is poison."""

from datetime import UTC, datetime

import pytest

from shared.envelope import PoisonMessage, decode, encode, event_data
from shared.events import TransferAttempted

AT = datetime(2026, 5, 6, 10, 0, tzinfo=UTC)
EVENT = TransferAttempted(
    ticket_id="ticket-9",
    transfer_id="x1",
    department="人社局",
    mode="three_way",
    connected=False,
    at=AT,
)


def record():
    return encode(
        event_id="e-1",
        ce_type=EVENT.ce_type,
        source="/hotline/dispatch",
        time=AT,
        key=EVENT.ticket_id,
        data=event_data(EVENT),
    )


def test_attributes_travel_as_ce_headers_and_the_key_is_the_ticket_id():
    rec = record()
    headers = dict(rec.headers)
    assert headers["ce_id"] == b"e-1"
    assert headers["ce_type"] == b"hotline.transfer.attempted.v1"
    assert headers["ce_source"] == b"/hotline/dispatch"
    assert headers["ce_specversion"] == b"1.0"
    assert headers["ce_subject"] == b"ticket-9"
    assert headers["ce_time"] == b"2026-05-06T10:00:00Z"
    assert headers["content-type"] == b"application/json"
    assert "ce_partitionkey" not in headers
    assert rec.key == b"ticket-9"


def test_a_record_decodes_back_to_the_same_event():
    rec = record()
    envelope = decode(rec.headers, rec.key, rec.value)
    assert envelope.event == EVENT
    assert envelope.event_id == "e-1"
    assert envelope.time == AT


def test_an_unknown_type_decodes_without_an_event_so_consumers_skip_it():
    rec = record()
    headers = [(k, b"hotline.something.new.v1" if k == "ce_type" else v) for k, v in rec.headers]
    envelope = decode(headers, rec.key, b"not even json")
    assert envelope.event is None
    assert envelope.ce_type == "hotline.something.new.v1"


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda h, v: ([x for x in h if x[0] != "ce_id"], v), "missing header ce_id"),
        (lambda h, v: (h, b"{not json"), "not JSON"),
        (lambda h, v: (h, b"[1, 2]"), "not a JSON object"),
        (lambda h, v: (h, b'{"ticket_id": "ticket-9"}'), "department"),
        (
            lambda h, v: ([(k, b"\xff\xfe" if k == "ce_source" else x) for k, x in h], v),
            "CloudEvent",
        ),
    ],
)
def test_malformed_records_are_poison_with_a_reason(mutate, reason):
    rec = record()
    headers, value = mutate(list(rec.headers), rec.value)
    with pytest.raises(PoisonMessage, match=reason):
        decode(headers, rec.key, value)


def test_a_key_that_disagrees_with_the_ticket_id_is_poison():
    rec = record()
    with pytest.raises(PoisonMessage, match="key"):
        decode(rec.headers, b"another-ticket", rec.value)


@pytest.mark.parametrize(("length", "poison"), [(64, False), (65, True), (10_000, True)])
def test_an_event_id_longer_than_any_id_is_poison(length, poison):
    """A longer id could not be recorded as processed (64 characters) without cutting it, and
    two ids cut alike would pass for one event."""
    rec = encode(
        event_id="e" * length,
        ce_type=EVENT.ce_type,
        source="/hotline/dispatch",
        time=AT,
        key=EVENT.ticket_id,
        data=event_data(EVENT),
    )
    if poison:
        with pytest.raises(PoisonMessage, match="ce_id is longer than 64"):
            decode(rec.headers, rec.key, rec.value)
    else:
        assert decode(rec.headers, rec.key, rec.value).event_id == "e" * 64
