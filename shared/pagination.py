"""Keyset pagination: an opaque cursor for a position (a time, then an id) in a sorted list."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any, Final, TypeVar

import sqlalchemy as sa
from fastapi import Query
from pydantic import BaseModel, ConfigDict, ValidationError

from shared.db import ReadTransaction
from shared.errors import DomainError
from shared.inputs import PathId, QueryTime

MAX_CURSOR_LENGTH: Final = 1024
"""A cursor holds a time and an id of at most 64 characters: far less than this."""

Cursor = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=MAX_CURSOR_LENGTH,
        pattern="^[A-Za-z0-9_-]+$",
        description="The `next_cursor` of the previous page",
    ),
]
"""A route's `cursor` query parameter: what `encode_cursor` makes, or nothing."""


class InvalidCursor(DomainError):
    """A pagination cursor this API did not hand out."""

    status_code = 422
    code = "invalid_cursor"


class _Position(BaseModel):
    """What a cursor holds; checked like the filters, so a forged one cannot reach a query
    with a time or an id the database cannot compare."""

    model_config = ConfigDict(extra="forbid")

    at: QueryTime
    id: PathId


def encode_cursor(at: datetime, key: str) -> str:
    """An opaque cursor for the position (`at`, `key`)."""
    raw = json.dumps({"at": at.isoformat(), "id": key})
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The position a cursor stands for; InvalidCursor (a 422 naming `query.cursor`) if it was
    not made by `encode_cursor` or holds a time or an id out of range."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        position = _Position.model_validate_json(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, binascii.Error, ValidationError) as exc:
        raise InvalidCursor(
            "cursor: not a cursor returned by this API", field="query.cursor"
        ) from exc
    return position.at, position.id


Row = TypeVar("Row")

STREAM_CHUNK: Final = 1_000
"""Rows read per statement while a whole list is streamed."""


async def every_row(
    page: Callable[[tuple[datetime, str] | None], Awaitable[tuple[list[Row], bool]]],
    position: Callable[[Row], tuple[datetime, str]],
    after: tuple[datetime, str] | None = None,
) -> AsyncIterator[Row]:
    """Every row of a keyset-paged list from `after` on, a page at a time: `page(after)` gives
    the rows after a position and whether more follow, `position(row)` a row's position."""
    while True:
        rows, more = await page(after)
        for row in rows:
            yield row
        if not more or not rows:
            return
        after = position(rows[-1])


async def keyset_page(
    db: ReadTransaction,
    statement: sa.Select[Any],
    key: tuple[sa.ColumnElement[Any], sa.ColumnElement[Any]],
    after: tuple[datetime, str] | None,
    limit: int,
) -> tuple[list[sa.RowMapping], bool]:
    """Up to `limit` rows of `statement` after the position `after`, in ascending `key`
    order, and whether more follow (one row more is read to tell)."""
    if after is not None:
        statement = statement.where(sa.tuple_(*key) > sa.tuple_(*after))
    rows = list((await db.execute(statement.order_by(*key).limit(limit + 1))).mappings())
    return rows[:limit], len(rows) > limit
