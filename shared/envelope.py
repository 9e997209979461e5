"""CloudEvents 1.0 in Kafka binary mode: `ce_*` headers, JSON data as the value, key = ticket id."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cloudevents.core.bindings.kafka import to_binary
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from dateutil.parser import isoparse
from pydantic import ValidationError

from shared.events import EVENT_TYPES, Event

CONTENT_TYPE = "application/json"
_FORMAT = JSONFormat()


class PoisonMessage(Exception):
    """A record that can never be processed: it belongs in the dead-letter topic."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class KafkaRecord:
    """What goes on the wire, in the types aiokafka wants."""

    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


@dataclass(frozen=True)
class Envelope:
    """A decoded record: the CloudEvent attributes and the typed event (None if unknown type)."""

    event_id: str
    ce_type: str
    source: str
    time: datetime | None
    subject: str | None
    event: Event | None


def event_data(event: Event) -> dict[str, Any]:
    """The event's JSON data, as stored in the outbox and sent as the record value."""
    data: dict[str, Any] = event.model_dump(mode="json")
    return data


def encode(
    *,
    event_id: str,
    ce_type: str,
    source: str,
    time: datetime,
    key: str,
    data: dict[str, Any],
) -> KafkaRecord:
    """Build the binary-mode record; the subject and the key are the ticket id."""
    cloud_event = CloudEvent(
        attributes={
            "id": event_id,
            "source": source,
            "type": ce_type,
            "time": time,
            "subject": key,
            "datacontenttype": CONTENT_TYPE,
            "partitionkey": key,
        },
        data=data,
    )
    message = to_binary(cloud_event, _FORMAT)
    # The partition key travels as the Kafka key, not as a header.
    headers = [
        (name, value) for name, value in message.headers.items() if name != "ce_partitionkey"
    ]
    return KafkaRecord(key=key.encode(), value=message.value, headers=headers)


MAX_EVENT_ID_LENGTH = 64
"""The longest event id a consumer records (`processed_events.event_id`); a longer one is
poison, so no two ids are ever taken for one."""


_REQUIRED = ("ce_id", "ce_type", "ce_source", "ce_specversion")
_EXTENSION_NAME = re.compile(r"[a-z0-9]+")


def decode(
    headers: list[tuple[str, bytes]] | tuple[tuple[str, bytes], ...],
    key: bytes | None,
    value: bytes | None,
) -> Envelope:
    """Parse a record: `event=None` for an unknown `ce_type`; PoisonMessage if malformed.

    The attributes are checked by the rules of the `cloudevents` library's binary-mode
    reader (a test holds the two to the same verdicts), without building its event object:
    that took three quarters of a record's decoding, the largest share of a consumer's time
    per event. The data is validated straight from its JSON bytes by the event's model.
    """
    names = {name for name, _ in headers}
    for required in _REQUIRED:  # named exactly so, as the binding writes them
        if required not in names:
            raise PoisonMessage(f"missing header {required}")
    attributes = _attributes(headers)
    time = _time(attributes.get("ce_time"))
    if key is not None:
        try:
            key.decode()
        except UnicodeDecodeError as exc:
            raise PoisonMessage(f"not a CloudEvent: the key is not UTF-8: {exc}") from exc
    event_id = attributes["ce_id"]
    if len(event_id) > MAX_EVENT_ID_LENGTH:
        raise PoisonMessage(f"ce_id is longer than {MAX_EVENT_ID_LENGTH} characters")
    ce_type = attributes["ce_type"]
    model = EVENT_TYPES.get(ce_type)
    event: Event | None = None
    if model is not None:
        try:
            event = model.model_validate_json(value or b"")
        except ValidationError as exc:
            raise PoisonMessage(_data_errors(ce_type, exc)) from exc
        if key is not None and key.decode() != event.ticket_id:
            raise PoisonMessage("the record key is not the event's ticket_id")
    return Envelope(
        event_id=event_id,
        ce_type=ce_type,
        source=attributes["ce_source"],
        time=time,
        subject=attributes.get("ce_subject"),
        event=event,
    )


def _attributes(headers: Iterable[tuple[str, bytes]]) -> dict[str, str]:
    """The `ce_` headers by lower-case name (and `content-type` as `ce_datacontenttype`, as
    the binding has it), checked as CloudEvents 1.0 has them."""
    attributes: dict[str, str] = {}
    for name, raw in headers:
        lowered = name.lower()
        if lowered == "content-type":
            lowered = "ce_datacontenttype"
        elif not lowered.startswith("ce_"):
            continue
        try:
            attributes[lowered] = raw.decode()
        except (UnicodeDecodeError, AttributeError) as exc:
            raise PoisonMessage(f"not a CloudEvent: header {name} is not UTF-8: {exc}") from exc
    problems = [
        f"ce_{name} must not be empty"
        for name in ("id", "source", "type", "subject", "datacontenttype", "dataschema")
        if attributes.get(f"ce_{name}") == ""
    ]
    if attributes.get("ce_specversion", "1.0") != "1.0":
        problems.append("ce_specversion must be '1.0'")
    problems += [
        f"extension {name[3:]!r} must be lower-case letters and digits"
        for name in attributes
        if name[3:] not in _KNOWN_ATTRIBUTES
        and (name == "ce_data" or not _EXTENSION_NAME.fullmatch(name[3:]))
    ]
    if problems:
        raise PoisonMessage("not a CloudEvent: " + "; ".join(problems))
    return attributes


_KNOWN_ATTRIBUTES = frozenset(
    ("id", "source", "specversion", "type", "datacontenttype", "dataschema", "subject", "time")
)


def _time(text: str | None) -> datetime | None:
    """`ce_time` as an aware datetime: RFC 3339 as Python reads it, anything else ISO 8601
    reads as dateutil does (the library's reader); PoisonMessage if neither, or naive."""
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        try:
            moment = isoparse(text)
        except (ValueError, OverflowError) as exc:
            raise PoisonMessage(f"not a CloudEvent: ce_time {text[:40]!r}: {exc}") from exc
    if moment.tzinfo is None:
        raise PoisonMessage("not a CloudEvent: ce_time must be timezone aware")
    return moment


def _data_errors(ce_type: str, exc: ValidationError) -> str:
    """The poison reason for data the event's model refused."""
    errors = exc.errors()
    if errors and errors[0]["type"] == "json_invalid":
        return f"value is not JSON: {errors[0]['msg']}"
    if errors and errors[0]["loc"] == () and errors[0]["type"] in ("model_type", "dict_type"):
        return "value is not a JSON object"
    return f"invalid {ce_type}: {_first_errors(exc)}"


def _first_errors(exc: ValidationError, limit: int = 3) -> str:
    """A short reason naming the bad fields, fit for a Kafka header."""
    parts = []
    for error in exc.errors()[:limit]:
        where = ".".join(str(part) for part in error["loc"]) or "(root)"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)
