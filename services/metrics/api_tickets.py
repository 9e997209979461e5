"""Metrics's ticket routes: the list (search and export) and a ticket's timeline. Parse the
filters, call a view, shape the answer; no SQL here."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, Query, Response

from services.metrics.api import (
    CSV_ANSWER,
    DEFAULT_LIMIT,
    Auditor,
    FormatDep,
    Name,
    invalid,
)
from services.metrics.csv_answers import CSV_MEDIA_TYPE, csv_lines, csv_page, csv_stream
from services.metrics.deps import Deps
from services.metrics.models import (
    TICKET_CSV_COLUMNS,
    ActorPublic,
    DeadlinePublic,
    TicketListItem,
    TicketPage,
    TimelineEvent,
    TimelinePublic,
)
from services.metrics.ticket_list import TicketQuery, count_tickets, every_ticket, ticket_page
from services.metrics.timeline import Entry, TicketState, story
from services.metrics.views import ticket_history
from shared.app import ReadDep
from shared.auth.http import Allow
from shared.auth.store import Principal
from shared.clock import utc_now
from shared.errors import DomainError, NotFound
from shared.events import Category, Channel
from shared.inputs import PathId, QueryTime
from shared.pagination import Cursor, decode_cursor, encode_cursor
from shared.privacy import InvalidPhone, redact_phone

router = APIRouter(tags=["metrics"])


class PhoneSearchForbidden(DomainError):
    """A search by phone number with a key that may list tickets but not search by number."""

    status_code = 403
    code = "forbidden"


Reader = Annotated[Principal, Depends(Allow("operator", "auditor"))]
MAX_PHONE_LENGTH: Final = 32


def _window(since: datetime | None, until: datetime | None, names: tuple[str, str]) -> None:
    if since is not None and until is not None and until <= since:
        raise invalid(names[1], f"{names[1]} must be later than {names[0]}", until.isoformat())


@router.get(
    "/tickets",
    response_model=TicketPage,
    responses={
        **CSV_ANSWER,
        403: {"description": "A `phone` search by a key other than an auditor's"},
    },
)
async def list_tickets(
    caller: Reader,
    deps: Deps,
    db: ReadDep,
    fmt: FormatDep,
    state: TicketState | None = None,
    city: Name = None,
    channel: Channel | None = None,
    scenario: Name = None,
    category: Category | None = None,
    evaluator: Name = None,
    department: Annotated[
        Name, Query(description="Tickets with a transfer or work order of this department")
    ] = None,
    phone: Annotated[
        str | None,
        Query(
            max_length=MAX_PHONE_LENGTH,
            description="The citizen's number, any usual form (auditors only): normalised and "
            "hashed on the way in, never stored or logged",
        ),
    ] = None,
    submitted_since: QueryTime | None = None,
    submitted_until: QueryTime | None = None,
    due_since: Annotated[
        QueryTime | None, Query(description="Tickets with a work order due at or after")
    ] = None,
    due_until: Annotated[QueryTime | None, Query(description="... and before")] = None,
    overdue: Annotated[
        bool | None, Query(description="With (true) or without (false) a work order past due")
    ] = None,
    reopened: Annotated[bool | None, Query(description="Reopened (重办) or not")] = None,
    limit: Annotated[
        int | None, Query(ge=1, le=1000, description="Rows per page (JSON: 100 by default)")
    ] = None,
    cursor: Cursor = None,
) -> Any:
    """Tickets as metrics knows them, oldest submission first, with their state (as in their
    timeline), filtered by any of the parameters. JSON pages follow `next_cursor`; as CSV
    (`format=csv` or `Accept: text/csv`) every row is streamed, or one page with `limit`."""
    _window(submitted_since, submitted_until, ("submitted_since", "submitted_until"))
    _window(due_since, due_until, ("due_since", "due_until"))
    phone_hash = None
    if phone is not None:
        if caller.role != "auditor":
            raise PhoneSearchForbidden("only an auditor's key may search by phone number")
        try:
            phone_hash = deps.hasher.hash(phone)
        except InvalidPhone as exc:
            raise invalid("phone", str(exc), redact_phone(phone)) from None
    query = TicketQuery(
        state=state,
        city=city,
        channel=channel,
        scenario=scenario,
        category=category,
        evaluator=evaluator,
        department=department,
        phone_hash=phone_hash,
        submitted_since=submitted_since,
        submitted_until=submitted_until,
        due_since=due_since,
        due_until=due_until,
        overdue=overdue,
        reopened=reopened,
        limit=limit or DEFAULT_LIMIT,
        after=decode_cursor(cursor) if cursor else None,
    )
    now = utc_now()
    if fmt == "csv" and limit is None:

        async def streamed() -> AsyncIterator[dict[str, Any]]:
            async with deps.database.read() as stream_db:
                async for row in every_ticket(stream_db, query, now=now):
                    yield row

        return csv_stream(TICKET_CSV_COLUMNS, streamed())
    total = await count_tickets(db, query, now=now)
    rows, more = await ticket_page(db, query, now=now)
    items = [TicketListItem.model_validate(row) for row in rows]
    next_cursor = encode_cursor(items[-1].submitted_at, items[-1].ticket_id) if more else None
    if fmt == "csv":
        rows = [item.model_dump() for item in items]
        return csv_page(TICKET_CSV_COLUMNS, rows, total=total, next_cursor=next_cursor)
    return TicketPage(total=total, items=items, next_cursor=next_cursor)


@router.get(
    "/tickets/{ticket_id}/timeline",
    response_model=TimelinePublic,
    responses={
        200: {
            "content": {"text/csv": {}},
            "description": "JSON, or as CSV (`format=csv`) the events, one per line",
        },
        404: {"description": "No event of this ticket has reached metrics"},
    },
)
async def read_timeline(
    caller: Auditor,
    ticket_id: PathId,
    db: ReadDep,
    fmt: FormatDep,
    as_of: Annotated[
        QueryTime | None,
        Query(description="Tell the story as it stood at this time (default: now)."),
    ] = None,
) -> Any:
    """A ticket's whole story from every service's events, in the order it happened: who
    caused each event (key id, role, department) and what it recorded; each work order's
    deadline and whether it was met; the ticket's state. A ticket whose events are still on
    their way shows what has arrived."""
    entries = await ticket_history(db, ticket_id)
    if not entries:
        raise NotFound(f"no event of ticket {ticket_id} has reached metrics")
    moment = as_of or utc_now()
    told = story(entries, as_of=moment)
    if fmt == "csv":
        rows = [_event_row(entry) for entry in told.events]
        return Response(content=csv_lines(TIMELINE_CSV_COLUMNS, rows), media_type=CSV_MEDIA_TYPE)
    return TimelinePublic(
        ticket_id=ticket_id,
        as_of=moment,
        state=told.state,
        deadlines=[DeadlinePublic.model_validate(d, from_attributes=True) for d in told.deadlines],
        events=[_timeline_event(entry) for entry in told.events],
    )


TIMELINE_CSV_COLUMNS: Final = (
    "at",
    "type",
    "actor_key_id",
    "actor_role",
    "actor_department",
    "work_order_id",
    "event_id",
    "changes",
)


def _event_row(entry: Entry) -> dict[str, Any]:
    """An event as a CSV line: its data as one JSON cell."""
    return {
        "at": entry.at,
        "type": entry.ce_type,
        "actor_key_id": entry.actor_key_id,
        "actor_role": entry.actor_role,
        "actor_department": entry.actor_department,
        "work_order_id": entry.work_order_id,
        "event_id": entry.event_id,
        "changes": json.dumps(dict(entry.changes), ensure_ascii=False, sort_keys=True),
    }


def _timeline_event(entry: Entry) -> TimelineEvent:
    actor = None
    if entry.actor_key_id is not None:
        actor = ActorPublic(
            key_id=entry.actor_key_id, role=entry.actor_role, department=entry.actor_department
        )
    return TimelineEvent(
        event_id=entry.event_id,
        type=entry.ce_type,
        at=entry.at,
        actor=actor,
        work_order_id=entry.work_order_id,
        changes=dict(entry.changes),
    )
