"""Types for what clients send, refused at the API edge with a 422 naming the field.

Each guards against an input that used to pass validation and fail later as a 500:
PostgreSQL cannot store NUL in text, a lone surrogate cannot be encoded as UTF-8 (neither
into the database nor into a JSON answer), and asyncpg stores a time before PostgreSQL's
range as -infinity, which then overflows Python's datetime when read back. An extreme UTC
offset overflows as soon as the time is converted to UTC. Where JSON Schema can say a rule,
the type says it in the OpenAPI document too.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Final

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BeforeValidator,
    GetJsonSchemaHandler,
    StringConstraints,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, PydanticCustomError

from shared.clock import MAX_CLOCK_SKEW, utc_now

EARLIEST_EVENT_TIME: Final = datetime(2000, 1, 1, tzinfo=UTC)
"""No hotline fact recorded through the API happened before this: an older time is a typo or
a probe, and year 1 is beyond what PostgreSQL stores as a time."""
EARLIEST_QUERY_TIME: Final = datetime(2000, 1, 1, tzinfo=UTC)
"""The earliest `since`/`until` a filter may name (nothing is stored before it)."""
LATEST_QUERY_TIME: Final = datetime(2100, 1, 1, tzinfo=UTC)
"""The latest `since`/`until` a filter may name: far enough for any window, near enough that
a day or a month added to it never overflows."""
MAX_ID_LENGTH: Final = 64
"""Ids are 36-character UUIDs; events allow up to 64 characters, so a path id may too."""
MAX_LABEL_LENGTH: Final = 64
"""A city, scenario or department: stored in 64 characters, so a filter needs no more."""

_SURROGATE = re.compile("[\ud800-\udfff]")
_CONTROL = re.compile("[\x00-\x1f\x7f]")


class Documented:
    """JSON-Schema keywords for a rule a validator enforces, so the OpenAPI document says it
    (the validator keeps the clear message a JSON-Schema `pattern` would not give)."""

    def __init__(self, **keywords: Any) -> None:
        self.keywords = tuple(sorted(keywords.items()))

    def __get_pydantic_json_schema__(
        self, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        """The schema of the annotated type, with these keywords added."""
        schema = handler(core_schema)
        schema.update(self.keywords)
        return schema

    def __repr__(self) -> str:
        return f"Documented({dict(self.keywords)!r})"


def safe_text(value: Any) -> Any:
    """`value` unchanged if it is not text, or text without NUL and unpaired surrogates; a
    validation error saying which otherwise. Runs before pydantic's own str check, whose
    message for a surrogate ("unable to parse raw data") does not say what is wrong."""
    if isinstance(value, str):
        if "\x00" in value:
            raise PydanticCustomError("text_nul", "must not contain NUL (\\u0000)")
        if _SURROGATE.search(value):
            raise PydanticCustomError(
                "text_surrogate",
                "must not contain an unpaired surrogate (\\ud800-\\udfff): not valid Unicode",
            )
    return value


def printable_id(value: Any) -> Any:
    """`value` unchanged if it is not text, or text without control characters; a validation
    error otherwise (an id is never stored with one, so no lookup could find it)."""
    value = safe_text(value)
    if isinstance(value, str) and _CONTROL.search(value):
        raise PydanticCustomError("id_control", "must not contain control characters")
    return value


def _utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except (OverflowError, ValueError):
        raise PydanticCustomError(
            "time_out_of_range", "is out of range once converted to UTC"
        ) from None


def event_time(value: datetime) -> datetime:
    """`value` unchanged if it is between EARLIEST_EVENT_TIME and MAX_CLOCK_SKEW past now."""
    utc = _utc(value)
    if utc < EARLIEST_EVENT_TIME:
        raise PydanticCustomError(
            "time_too_early",
            "must not be before {earliest}",
            {"earliest": EARLIEST_EVENT_TIME.isoformat()},
        )
    if utc > utc_now() + MAX_CLOCK_SKEW:
        raise PydanticCustomError(
            "time_in_future",
            "must not be more than {minutes} minutes in the future",
            {"minutes": int(MAX_CLOCK_SKEW.total_seconds() // 60)},
        )
    return value


def query_time(value: datetime) -> datetime:
    """`value` unchanged if it is in [EARLIEST_QUERY_TIME, LATEST_QUERY_TIME)."""
    utc = _utc(value)
    if not EARLIEST_QUERY_TIME <= utc < LATEST_QUERY_TIME:
        raise PydanticCustomError(
            "time_out_of_range",
            "must be from {earliest} to before {latest}",
            {
                "earliest": EARLIEST_QUERY_TIME.isoformat(),
                "latest": LATEST_QUERY_TIME.isoformat(),
            },
        )
    return value


SafeText = Annotated[str, BeforeValidator(safe_text), Documented(pattern="^[^\\u0000]*$")]
"""Text a client sends: anything but NUL and unpaired surrogates (length limits are the
field's own)."""

Label = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_LABEL_LENGTH),
    BeforeValidator(safe_text),
    Documented(pattern="^[^\\u0000]*$"),
]
"""A name filters compare with (city, scenario, department): SafeText, 1 to MAX_LABEL_LENGTH
characters."""

EventTime = Annotated[
    AwareDatetime,
    AfterValidator(event_time),
    Documented(description="RFC 3339 with an offset; from 2000-01-01T00:00Z to 5 minutes ahead"),
]
"""When something happened, as a request body says: with an offset, not before
EARLIEST_EVENT_TIME, not more than MAX_CLOCK_SKEW ahead of the server's clock."""

QueryTime = Annotated[
    AwareDatetime,
    AfterValidator(query_time),
    Documented(description="RFC 3339 with an offset; from 2000-01-01T00:00Z to before 2100"),
]
"""A `since`/`until` filter: with an offset, from EARLIEST_QUERY_TIME to before
LATEST_QUERY_TIME."""

PathId = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_ID_LENGTH),
    BeforeValidator(printable_id),
    Documented(pattern="^[^\\u0000-\\u001f\\u007f/]+$"),
]
"""A ticket, work order or key id in a path: 1 to MAX_ID_LENGTH characters, no control
characters (a path segment never holds `/`). Every id the services make or hear of fits."""
