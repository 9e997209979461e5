"""Keyset pagination: an opaque cursor for a position (a time, then an id) in a sorted list."""

from __future__ import annotations

import base64
import json
from datetime import datetime

from shared.errors import DomainError


class InvalidCursor(DomainError):
    """A pagination cursor this API did not hand out."""

    status_code = 422
    code = "invalid_cursor"


def encode_cursor(at: datetime, key: str) -> str:
    """An opaque cursor for the position (`at`, `key`)."""
    raw = json.dumps({"at": at.isoformat(), "id": key})
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The position a cursor stands for; InvalidCursor if it was not made by `encode_cursor`."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
        at = datetime.fromisoformat(data["at"])
        if at.tzinfo is None:
            raise ValueError("naive time")
        return at, str(data["id"])
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidCursor("cursor: not a cursor returned by this API") from exc
