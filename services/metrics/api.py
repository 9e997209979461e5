"""Metrics's routes: parse the filters, call a view, shape the answer. No SQL here."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel

from services.metrics.deps import Deps, MetricsDeps
from services.metrics.models import (
    UNANSWERED_CSV_COLUMNS,
    RateGroup,
    RatesByPublic,
    RatesPublic,
    UnansweredPage,
    UnansweredWorkOrder,
    rates_public,
)
from services.metrics.rates import Totals, rates_of
from services.metrics.views import (
    Dimension,
    RateFilter,
    UnansweredQuery,
    read_totals,
    unanswered_work_orders,
)
from shared.app import ReadDep
from shared.auth.http import Allow
from shared.auth.store import Principal
from shared.clock import utc_now
from shared.events import Channel
from shared.inputs import Label, QueryTime
from shared.pagination import Cursor, decode_cursor, encode_cursor

router = APIRouter(tags=["metrics"])

Auditor = Annotated[Principal, Depends(Allow("auditor"))]

Name = Label | None


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
        raise RequestValidationError(
            [
                {
                    "type": "value_error",
                    "loc": ("query", "until"),
                    "msg": "until must be later than since",
                    "input": until.isoformat(),
                }
            ]
        )
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
    format: Literal["json", "csv"] = "json",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Cursor = None,
) -> Any:
    """Work orders with no reply yet, most overdue first, each with its age in working days."""
    query = UnansweredQuery(
        city=city,
        department=department,
        overdue_only=overdue_only,
        limit=limit,
        after=decode_cursor(cursor) if cursor else None,
    )
    total, items, more = await unanswered_work_orders(
        db, query, now=utc_now(), calendar=deps.calendar
    )
    next_cursor = encode_cursor(items[-1].due_at, items[-1].work_order_id) if more else None
    if format == "csv":
        headers = {"X-Total-Count": str(total)}
        if next_cursor:
            headers["X-Next-Cursor"] = next_cursor
        return Response(
            content=unanswered_csv(items), media_type="text/csv; charset=utf-8", headers=headers
        )
    return UnansweredPage(total=total, items=items, next_cursor=next_cursor)


def unanswered_csv(items: list[UnansweredWorkOrder]) -> str:
    """The audit rows as CSV with a header line."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=UNANSWERED_CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for item in items:
        row = item.model_dump(mode="json")
        writer.writerow({k: str(v).lower() if isinstance(v, bool) else v for k, v in row.items()})
    return out.getvalue()
