"""`shared.envelope.decode` reads CloudEvents' binary mode itself, for speed; here it is held
to the verdicts of the `cloudevents` library's own reader on any mix of valid and broken
attributes: the same records are poison, and the rest decode to the same attributes.

One difference is deliberate: the library decodes every header as UTF-8, ours only the
`ce_` ones (a tracing header in another encoding is no reason to dead-letter an event), so
the generated records vary only `ce_` headers, the key and the value.
"""

from __future__ import annotations

import json
from datetime import UTC, timedelta, timezone

import pytest
from cloudevents.core.bindings.kafka import KafkaMessage, from_binary
from cloudevents.core.exceptions import BaseCloudEventException
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from shared.envelope import MAX_EVENT_ID_LENGTH, PoisonMessage, decode
from shared.events import EVENT_TYPES
from tests.unit.test_envelope import EVENT, record

BASE = record()


def reference(headers: list[tuple[str, bytes]], key: bytes | None, value: bytes) -> dict | None:
    """The attributes and event the library's reader gives, None if it finds poison (with
    the checks `decode` adds on top: the id's length, the event's model, key = ticket id)."""
    header_map = dict(headers)
    if not all(name in header_map for name in ("ce_id", "ce_type", "ce_source", "ce_specversion")):
        return None
    try:
        cloud_event = from_binary(
            KafkaMessage(headers=header_map, key=key, value=value), JSONFormat(), CloudEvent
        )
    except (BaseCloudEventException, UnicodeDecodeError, ValueError, OverflowError):
        return None
    attributes = cloud_event.get_attributes()
    if len(attributes["id"]) > MAX_EVENT_ID_LENGTH:
        return None
    event = None
    model = EVENT_TYPES.get(attributes["type"])
    if model is not None:
        data = cloud_event.get_data()
        if isinstance(data, bytes | str):
            try:
                data = json.loads(data)
            except ValueError:
                return None
        if not isinstance(data, dict):
            return None
        try:
            event = model.model_validate(data)
        except ValidationError:
            return None
        if key is not None and key.decode() != event.ticket_id:
            return None
    return {
        "event_id": attributes["id"],
        "ce_type": attributes["type"],
        "source": attributes["source"],
        "subject": attributes.get("subject"),
        "time": attributes["time"] if "ce_time" in header_map else None,
        "event": event,
    }


def ours(headers: list[tuple[str, bytes]], key: bytes | None, value: bytes) -> dict | None:
    try:
        envelope = decode(headers, key, value)
    except PoisonMessage:
        return None
    return {
        "event_id": envelope.event_id,
        "ce_type": envelope.ce_type,
        "source": envelope.source,
        "subject": envelope.subject,
        "time": envelope.time,
        "event": envelope.event,
    }


text = st.text(max_size=12)
zones = st.sampled_from(
    [UTC, timezone(timedelta(hours=8)), timezone(timedelta(hours=-3, minutes=-30))]
)
times = st.one_of(
    st.datetimes(timezones=zones).map(lambda t: t.isoformat()),
    st.datetimes(timezones=zones).map(lambda t: t.isoformat().replace("+00:00", "Z")),
    st.datetimes().map(lambda t: t.isoformat()),  # naive: poison for both
    st.datetimes(timezones=zones).map(lambda t: t.strftime("%Y%m%dT%H%M%S%z")),
    st.sampled_from(["2026-05-06", "2026-05-06T10:00Z", "0001-01-01T00:00:00Z", "tomorrow", ""]),
    text,
)
header_values = st.one_of(text.map(str.encode), st.just(b"\xff\xfe"), st.just(b""))
ATTRIBUTE = st.sampled_from(
    [
        "ce_id",
        "ce_type",
        "ce_source",
        "ce_specversion",
        "ce_subject",
        "ce_dataschema",
        "ce_datacontenttype",
        "content-type",
        "Content-Type",
    ]
)
extension_names = st.one_of(
    st.sampled_from(["ce_partitionkey", "ce_traceparent", "ce_data", "CE_ID", "ce_Kind", "ce_"]),
    st.text(alphabet="abcXYZ09-_.", min_size=1, max_size=8).map(lambda n: f"ce_{n}"),
)


@st.composite
def records(draw: st.DrawFn) -> tuple[list[tuple[str, bytes]], bytes | None, bytes]:
    headers = dict(BASE.headers)
    for _ in range(draw(st.integers(0, 3))):
        action = draw(st.sampled_from(["drop", "set", "time", "extension", "type", "spec"]))
        if action == "drop":
            headers.pop(draw(st.sampled_from([*headers])), None)
        elif action == "set":
            headers[draw(ATTRIBUTE)] = draw(header_values)
        elif action == "time":
            headers["ce_time"] = draw(times).encode()
        elif action == "extension":
            headers[draw(extension_names)] = draw(header_values)
        elif action == "type":
            headers["ce_type"] = draw(st.sampled_from([*EVENT_TYPES, "hotline.new.v9"])).encode()
        else:
            headers["ce_specversion"] = draw(st.sampled_from([b"1.0", b"0.3", b"1.0 ", b"2"]))
    key = draw(st.sampled_from([BASE.key, None, b"another", b"\xff"]))
    values = [BASE.value, b"", b"{not json", b"[1]", b"{}", b'{"ticket_id": "ticket-9"}']
    value = draw(st.sampled_from(values))
    return list(headers.items()), key, value


@settings(max_examples=600, deadline=None)
@given(records())
def test_the_same_records_are_poison_and_the_rest_decode_alike(record):
    headers, key, value = record
    assert ours(headers, key, value) == reference(headers, key, value)


@pytest.mark.parametrize(
    "header",
    ["ce_id", "ce_source", "ce_type", "ce_subject", "ce_dataschema", "content-type", "ce_time"],
)
@pytest.mark.parametrize("bad", [b"", b"\xff"])
def test_an_empty_or_undecodable_attribute_gets_the_same_verdict(header, bad):
    """Every attribute we read, and those the library checks, one at a time (CI's random
    examples once found an empty ce_subject the first version let through)."""
    headers = [*dict(BASE.headers).items(), (header, bad)]
    headers = list(dict(headers).items())
    assert ours(headers, BASE.key, BASE.value) == reference(headers, BASE.key, BASE.value)
    assert ours(headers, BASE.key, BASE.value) is None


def test_the_generated_records_are_not_all_poison_nor_all_fine():
    """The property above means something only if both verdicts occur."""
    fine = reference(list(BASE.headers), BASE.key, BASE.value)
    assert fine is not None
    assert fine["event"] == EVENT
    broken = [(k, b"0.3" if k == "ce_specversion" else v) for k, v in BASE.headers]
    assert reference(broken, BASE.key, BASE.value) is None
    assert ours(broken, BASE.key, BASE.value) is None


def test_a_required_header_is_looked_for_by_its_exact_name():
    """`CE_ID` alone is no `ce_id` (30,000 generated examples found the first version
    taking it for one), though the library reads other attributes case-blind."""
    headers = [(("CE_ID" if k == "ce_id" else k), v) for k, v in BASE.headers]
    assert reference(headers, BASE.key, BASE.value) is None
    assert ours(headers, BASE.key, BASE.value) is None
