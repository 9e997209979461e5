"""Metrics's routes: parse the filters, call a view, shape the answer. No SQL here."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import date, datetime
from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, Query, Response
from fastapi.exceptions import RequestValidationError

from services.metrics.csv_answers import (
    CSV_MEDIA_TYPE,
    Format,
    answer_format,
    csv_lines,
    csv_page,
    csv_stream,
    rates_csv,
)
from services.metrics.deps import Deps, MetricsDeps
from services.metrics.models import (
    UNANSWERED_CSV_COLUMNS,
    OverdueGroupPublic,
    OverduePublic,
    RateGroup,
    RatesByPublic,
    RatesPublic,
    UnansweredPage,
    rates_public,
)
from services.metrics.rates import Totals, rates_of
from services.metrics.views import (
    Dimension,
    OverdueDimension,
    RateFilter,
    UnansweredQuery,
    every_unanswered,
    overdue_by,
    read_totals,
    unanswered_work_orders,
)
from shared.app import ReadDep
from shared.auth.http import Allow
from shared.auth.store import Principal
from shared.clock import utc_now
from shared.events import Channel
from shared.inputs import EARLIEST_QUERY_TIME, Label, QueryTime
from shared.pagination import Cursor, decode_cursor, encode_cursor
from shared.workdays import end_of_day, local_day

DEFAULT_LIMIT: Final = 100
"""Rows of a JSON page when `limit` is not given."""

router = APIRouter(tags=["metrics"])

Auditor = Annotated[Principal, Depends(Allow("auditor"))]

Name = Label | None


def invalid(field: str, message: str, value: object) -> RequestValidationError:
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
        raise invalid("until", "until must be later than since", until.isoformat())
    return RateFilter(city, channel, scenario, department, since, until)


FilterDep = Annotated[RateFilter, Depends(rate_filter)]


FormatDep = Annotated[Format, Depends(answer_format)]
CSV_ANSWER: Final[dict[int | str, dict[str, Any]]] = {
    200: {"content": {"text/csv": {}}, "description": "JSON, or CSV (`format=csv`)"}
}


async def _shared_answer(
    deps: MetricsDeps,
    filters: RateFilter,
    by: Dimension | None,
    shape: Callable[[dict[str, Totals]], RatesPublic | RatesByPublic],
    fmt: Format,
) -> Response:
    """The answer, computed and serialised once for readers asking the same at once, and
    reused for a moment (`answers`): eight dashboards asking together cost one query and
    one serialisation."""

    async def compute() -> bytes:
        async with deps.database.read() as db:
            totals = await read_totals(db, filters, by=by, now=utc_now())
        answer = shape(totals)
        if fmt == "json":
            return answer.model_dump_json().encode()
        if isinstance(answer, RatesPublic):
            return rates_csv([(None, answer.rates)], None).encode()
        return rates_csv([(group.key, group.rates) for group in answer.groups], by).encode()

    body = await deps.answers.get((filters, by, fmt), compute)
    media_type = "application/json" if fmt == "json" else CSV_MEDIA_TYPE
    return Response(content=body, media_type=media_type)


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


@router.get("/rates", response_model=RatesPublic, responses=CSV_ANSWER)
async def read_rates(caller: Auditor, deps: Deps, filters: FilterDep, fmt: FormatDep) -> Response:
    """Every evaluation rate of the selected tickets, each with numerator and denominator.

    A rate whose denominator is 0 has `value: null`. Transfers, work orders, replies and
    callbacks belong to their ticket (its city, channel, scenario and `submitted_at`): one
    whose ticket's own event has not arrived yet is counted as soon as it does. Callbacks
    are counted per callback for satisfaction, per ticket for the callback rate. As CSV: one
    line per rate (rate, value, numerator, denominator)."""
    return await _shared_answer(deps, filters, None, _all_rates, fmt)


@router.get("/rates/by/{dimension}", response_model=RatesByPublic, responses=CSV_ANSWER)
async def read_rates_by(
    caller: Auditor, dimension: Dimension, deps: Deps, filters: FilterDep, fmt: FormatDep
) -> Response:
    """The rates per city, channel, scenario or department, with the same filters.

    Grouped by department, the call and callback rates (which ignore department) are the
    same in every group. As CSV: one line per group and rate (the dimension's value first).
    """
    return await _shared_answer(deps, filters, dimension, _rates_by(dimension), fmt)


@router.get(
    "/audit/unanswered",
    response_model=UnansweredPage,
    responses={
        200: {
            "content": {"text/csv": {}},
            "description": "JSON, or CSV with `format=csv` or `Accept: text/csv`: every row "
            "streamed without `limit`; with it, one page (total and next cursor in headers)",
        },
        422: {"description": "A bad filter or cursor"},
    },
)
async def audit_unanswered(
    caller: Auditor,
    db: ReadDep,
    deps: Deps,
    fmt: FormatDep,
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
    limit: Annotated[
        int | None, Query(ge=1, le=1000, description="Rows per page (JSON: 100 by default)")
    ] = None,
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
        limit=limit or DEFAULT_LIMIT,
        after=decode_cursor(cursor) if cursor else None,
        as_of=None if as_of is None else moment,
    )
    if fmt == "csv" and limit is None:

        async def rows() -> AsyncIterator[dict[str, Any]]:
            async with deps.database.read() as stream_db:
                async for item in every_unanswered(
                    stream_db, query, now=moment, calendar=deps.calendar
                ):
                    yield item.model_dump()

        return csv_stream(UNANSWERED_CSV_COLUMNS, rows())
    total, items, more = await unanswered_work_orders(db, query, now=moment, calendar=deps.calendar)
    next_cursor = encode_cursor(items[-1].due_at, items[-1].work_order_id) if more else None
    if fmt == "csv":
        page = [item.model_dump() for item in items]
        return csv_page(UNANSWERED_CSV_COLUMNS, page, total=total, next_cursor=next_cursor)
    return UnansweredPage(total=total, items=items, next_cursor=next_cursor)


def _end_of(day: date, now: datetime) -> datetime:
    """24:00 Asia/Shanghai of `day`; a 422 for a day before 2000 or after today."""
    if day < EARLIEST_QUERY_TIME.date():
        raise invalid("as_of", f"must not be before {EARLIEST_QUERY_TIME.date()}", day)
    if day > local_day(now):
        raise invalid("as_of", "must not be after today (Asia/Shanghai)", day)
    return end_of_day(day)


@router.get("/audit/overdue/by/{dimension}", response_model=OverduePublic, responses=CSV_ANSWER)
async def audit_overdue(
    caller: Auditor,
    dimension: OverdueDimension,
    db: ReadDep,
    fmt: FormatDep,
    city: Name = None,
    department: Name = None,
) -> Any:
    """Work orders past their deadline with no reply (督办), per department or per city: how
    many, and how many working days late (summed and the latest). What dispatch announces
    with `hotline.workorder.overdue.v1`, counted from the deadlines themselves, so a sweep
    that has not run yet changes nothing."""
    groups = await overdue_by(db, (dimension,), now=utc_now(), city=city, department=department)
    answer = OverduePublic(
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
    if fmt == "csv":
        rows = [group.model_dump() for group in answer.groups]
        columns = list(OverdueGroupPublic.model_fields)
        return Response(content=csv_lines(columns, rows), media_type=CSV_MEDIA_TYPE)
    return answer
