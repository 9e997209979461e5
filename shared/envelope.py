"""CloudEvents 1.0 in Kafka binary mode: `ce_*` headers, JSON data as the value, key = ticket id."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cloudevents.core.bindings.kafka import KafkaMessage, from_binary, to_binary
from cloudevents.core.exceptions import BaseCloudEventException
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
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


def decode(
    headers: list[tuple[str, bytes]] | tuple[tuple[str, bytes], ...],
    key: bytes | None,
    value: bytes | None,
) -> Envelope:
    """Parse a record: `event=None` for an unknown `ce_type`; PoisonMessage if malformed."""
    header_map = {name: raw for name, raw in headers}
    for required in ("ce_id", "ce_type", "ce_source", "ce_specversion"):
        if required not in header_map:
            raise PoisonMessage(f"missing header {required}")
    try:
        cloud_event = from_binary(
            KafkaMessage(headers=header_map, key=key, value=value or b""), _FORMAT, CloudEvent
        )
    except (BaseCloudEventException, UnicodeDecodeError, ValueError) as exc:
        raise PoisonMessage(f"not a CloudEvent: {exc}") from exc
    attributes = cloud_event.get_attributes()
    event_id = str(attributes["id"])
    if len(event_id) > MAX_EVENT_ID_LENGTH:
        raise PoisonMessage(f"ce_id is longer than {MAX_EVENT_ID_LENGTH} characters")
    ce_type = str(attributes["type"])
    model = EVENT_TYPES.get(ce_type)
    event: Event | None = None
    if model is not None:
        data = cloud_event.get_data()
        if isinstance(data, (bytes, str)):
            try:
                data = json.loads(data)
            except ValueError as exc:
                raise PoisonMessage(f"value is not JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise PoisonMessage("value is not a JSON object")
        try:
            event = model.model_validate(data)
        except ValidationError as exc:
            raise PoisonMessage(f"invalid {ce_type}: {_first_errors(exc)}") from exc
        if key is not None and key.decode(errors="replace") != event.ticket_id:
            raise PoisonMessage("the record key is not the event's ticket_id")
    time = attributes.get("time")
    subject = attributes.get("subject")
    return Envelope(
        event_id=event_id,
        ce_type=ce_type,
        source=str(attributes["source"]),
        time=time if isinstance(time, datetime) else None,
        subject=str(subject) if subject is not None else None,
        event=event,
    )


def _first_errors(exc: ValidationError, limit: int = 3) -> str:
    """A short reason naming the bad fields, fit for a Kafka header."""
    parts = []
    for error in exc.errors()[:limit]:
        where = ".".join(str(part) for part in error["loc"]) or "(root)"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)
