"""The server clock, and how far a client's clock may run ahead of it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Final

from shared.errors import DomainError

MAX_CLOCK_SKEW: Final = timedelta(minutes=5)
"""How far in the future a client-given time may be: clocks differ, the future is not known."""


def utc_now() -> datetime:
    """Now, timezone-aware, in UTC."""
    return datetime.now(UTC)


class InvalidTime(DomainError):
    """A client-given time that contradicts what is already recorded (e.g. a reply before its
    work order)."""

    status_code = 422
    code = "invalid_time"


def not_before(value: datetime, earliest: datetime, *, field: str, what: str) -> None:
    """InvalidTime naming `field` (of the request body) if `value` is before `earliest`
    (`what` says what that is)."""
    if value < earliest:
        raise InvalidTime(
            f"{field}: {value.isoformat()} is earlier than {what} ({earliest.isoformat()})",
            field=f"body.{field}",
        )


def not_before_submission(at: datetime, submitted_at: datetime) -> None:
    """InvalidTime naming `at` if something happened to a ticket before it was submitted
    (with MAX_CLOCK_SKEW of slack: intake's clock and this service's may differ)."""
    try:
        earliest = submitted_at - MAX_CLOCK_SKEW
    except OverflowError:  # a ticket stored with a time at the very start of the calendar
        earliest = datetime.min.replace(tzinfo=UTC)
    not_before(
        at,
        earliest,
        field="at",
        what="the ticket's submitted_at, less the allowed clock skew",
    )
