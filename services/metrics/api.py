"""Metrics's routes: parse the filters, call a view, shape the answer. No SQL here."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from datetime import date, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel

from services.metrics.deps import Deps, MetricsDeps
from services.metrics.models import (
    UNANSWERED_CSV_COLUMNS,
    ActorPublic,
    DeadlinePublic,
    OverdueGroupPublic,
    OverduePublic,
    RateGroup,
    RatesByPublic,
    RatesPublic,
    TimelineEvent,
    TimelinePublic,
    UnansweredPage,
    UnansweredWorkOrder,
    rates_public,
)
from services.metrics.rates import Totals, rates_of
from services.metrics.timeline import Entry, story
from services.metrics.views import (
    Dimension,
    OverdueDimension,
    RateFilter,
    UnansweredQuery,
    overdue_by,
    read_totals,
    ticket_history,
    unanswered_work_orders,
)
from shared.app import ReadDep
from shared.auth.http import Allow
from shared.auth.store import Principal
from shared.clock import utc_now
from shared.errors import NotFound
from shared.events import Channel
from shared.inputs import EARLIEST_QUERY_TIME, Label, PathId, QueryTime
from shared.pagination import Cursor, decode_cursor, encode_cursor
from shared.workdays import end_of_day, local_day

router = APIRouter(tags=["metrics"])

Auditor = Annotated[Principal, Depends(Allow("auditor"))]

Name = Label | None


def _invalid(field: str, message: str, value: object) -> RequestValidationError:
    """A 422 naming the query parameter, as FastAPI's own validation gives it."""
    return RequestValidationError(
        [{"type": "value_error", "loc": ("query", field), "msg": message, "input": str(value)}]
    )


async def rate_filter(
    city: Name = None,
    channel: Channel | None = None,
    scenario: Name = None,
    department: Annotated[
        Label | None,
        Query(description="Narrows the transfer, three-way, work-order and reply rates only."),
    ] = None,
    since: Annotated[
        QueryTime | None, Query(description="Tickets submitted at or after (RFC 3339).")
    ] = None,
    until: Annotated[
        QueryTime | None, Query(description="Tickets submitted before (RFC 3339).")
    ] = None,
) -> RateFilter:
    """The filters of `/rates`; no window means every ticket ever recorded."""
    if since is not None and until is not None and until <= since:
        raise _invalid("until", "until must be later than since", until.isoformat())
    return RateFilter(city, channel, scenario, department, since, until)


FilterDep = Annotated[RateFilter, Depends(rate_filter)]


async def _shared_json(
    deps: MetricsDeps,
    filters: RateFilter,
    by: Dimension | None,
    shape: Callable[[dict[str, Totals]], BaseModel],
) -> Response:
    """The answer as JSON, computed and serialised once for readers asking the same at once,
    and reused for a moment (`answers`): eight dashboards asking together cost one query
    and one serialisation."""

    async def compute() -> bytes:
        async with deps.database.read() as db:
            totals = await read_totals(db, filters, by=by, now=utc_now())
        return shape(totals).model_dump_json().encode()

    body = await deps.answers.get((filters, by), compute)
    return Response(content=body, media_type="application/json")


def _all_rates(totals: dict[str, Totals]) -> RatesPublic:
    total = next(iter(totals.values()), Totals())
    return RatesPublic(rates=rates_public(rates_of(total)))


def _rates_by(dimension: Dimension) -> Callable[[dict[str, Totals]], RatesByPublic]:
    def shape(totals: dict[str, Totals]) -> RatesByPublic:
        return RatesByPublic(
            by=dimension,
            groups=[
                RateGroup(key=key, rates=rates_public(rates_of(group)))
                for key, group in totals.items()
            ],
        )

    return shape


@router.get("/rates", response_model=RatesPublic)
async def read_rates(caller: Auditor, deps: Deps, filters: FilterDep) -> Response:
    """Every evaluation rate of the selected tickets, each with numerator and denominator.

    A rate whose denominator is 0 has `value: null`. Transfers, work orders, replies and
    callbacks belong to their ticket (its city, channel, scenario and `submitted_at`): one
    whose ticket's own event has not arrived yet is counted as soon as it does. Callbacks
    are counted per callback for satisfaction, per ticket for the callback rate."""
    return await _shared_json(deps, filters, None, _all_rates)


@router.get("/rates/by/{dimension}", response_model=RatesByPublic)
async def read_rates_by(
    caller: Auditor, dimension: Dimension, deps: Deps, filters: FilterDep
) -> Response:
    """The rates per city, channel, scenario or department, with the same filters.

    Grouped by department, the call and callback rates (which ignore department) are the
    same in every group.
    """
    return await _shared_json(deps, filters, dimension, _rates_by(dimension))


@router.get(
    "/audit/unanswered",
    response_model=UnansweredPage,
    responses={
        200: {
            "content": {"text/csv": {}},
            "description": "JSON, or CSV with `format=csv` (total and next cursor in headers)",
        },
        422: {"description": "A bad filter or cursor"},
    },
)
async def audit_unanswered(
    caller: Auditor,
    db: ReadDep,
    deps: Deps,
    city: Name = None,
    department: Name = None,
    overdue_only: bool = False,
    as_of: Annotated[
        date | None,
        Query(
            description="What was unanswered at the end (24:00 Asia/Shanghai) of this day, by "
            "the events' own times: overdue, ages and replies as they stood then. Not after "
            "today; default: now."
        ),
    ] = None,
    format: Literal["json", "csv"] = "json",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Cursor = None,
) -> Any:
    """Work orders with no reply yet (or at the end of `as_of`), most overdue first, each with
    its age in working days."""
    now = utc_now()
    moment = now if as_of is None else _end_of(as_of, now)
    query = UnansweredQuery(
        city=city,
        department=department,
        overdue_only=overdue_only,
        limit=limit,
        after=decode_cursor(cursor) if cursor else None,
        as_of=None if as_of is None else moment,
    )
    total, items, more = await unanswered_work_orders(db, query, now=moment, calendar=deps.calendar)
    next_cursor = encode_cursor(items[-1].due_at, items[-1].work_order_id) if more else None
    if format == "csv":
        headers = {"X-Total-Count": str(total)}
        if next_cursor:
            headers["X-Next-Cursor"] = next_cursor
        return Response(
            content=unanswered_csv(items), media_type="text/csv; charset=utf-8", headers=headers
        )
    return UnansweredPage(total=total, items=items, next_cursor=next_cursor)


def _end_of(day: date, now: datetime) -> datetime:
    """24:00 Asia/Shanghai of `day`; a 422 for a day before 2000 or after today."""
    if day < EARLIEST_QUERY_TIME.date():
        raise _invalid("as_of", f"must not be before {EARLIEST_QUERY_TIME.date()}", day)
    if day > local_day(now):
        raise _invalid("as_of", "must not be after today (Asia/Shanghai)", day)
    return end_of_day(day)


def unanswered_csv(items: list[UnansweredWorkOrder]) -> str:
    """The audit rows as CSV with a header line."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=UNANSWERED_CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for item in items:
        row = item.model_dump(mode="json")
        writer.writerow({k: str(v).lower() if isinstance(v, bool) else v for k, v in row.items()})
    return out.getvalue()


@router.get(
    "/tickets/{ticket_id}/timeline",
    response_model=TimelinePublic,
    responses={404: {"description": "No event of this ticket has reached metrics"}},
)
async def read_timeline(
    caller: Auditor,
    ticket_id: PathId,
    db: ReadDep,
    as_of: Annotated[
        QueryTime | None,
        Query(description="Tell the story as it stood at this time (default: now)."),
    ] = None,
) -> TimelinePublic:
    """A ticket's whole story from every service's events, in the order it happened: who
    caused each event (key id, role, department) and what it recorded; each work order's
    deadline and whether it was met; the ticket's state. A ticket whose events are still on
    their way shows what has arrived."""
    entries = await ticket_history(db, ticket_id)
    if not entries:
        raise NotFound(f"no event of ticket {ticket_id} has reached metrics")
    moment = as_of or utc_now()
    told = story(entries, as_of=moment)
    return TimelinePublic(
        ticket_id=ticket_id,
        as_of=moment,
        state=told.state,
        deadlines=[DeadlinePublic.model_validate(d, from_attributes=True) for d in told.deadlines],
        events=[_timeline_event(entry) for entry in told.events],
    )


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


@router.get("/audit/overdue/by/{dimension}", response_model=OverduePublic)
async def audit_overdue(
    caller: Auditor,
    dimension: OverdueDimension,
    db: ReadDep,
    city: Name = None,
    department: Name = None,
) -> OverduePublic:
    """Work orders past their deadline with no reply (督办), per department or per city: how
    many, and how many working days late (summed and the latest). What dispatch announces
    with `hotline.workorder.overdue.v1`, counted from the deadlines themselves, so a sweep
    that has not run yet changes nothing."""
    groups = await overdue_by(db, (dimension,), now=utc_now(), city=city, department=department)
    return OverduePublic(
        by=dimension,
        total=sum(group.overdue for group in groups),
        groups=[
            OverdueGroupPublic(
                key=group.key[0],
                overdue=group.overdue,
                working_days_late_total=group.working_days_late_total,
                working_days_late_max=group.working_days_late_max,
            )
            for group in groups
        ],
    )
