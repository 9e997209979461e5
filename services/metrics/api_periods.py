"""Metrics's routes of the rates over time: `GET /rates/by/day`, `/rates/by/week` and
`/rates/by/month`. No SQL here.

Three fixed paths rather than one `/rates/by/{period}`: Starlette matches routes in the order
they are added, and a path parameter would also catch `/rates/by/city`. `create_app` adds
this router before the one of `/rates/by/{dimension}`, which then answers any other
`/rates/by/...` (a 422 naming `path.dimension`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Response
from fastapi.exceptions import RequestValidationError

from services.metrics.api import CSV_ANSWER, Auditor, FilterDep, FormatDep
from services.metrics.csv_answers import CSV_MEDIA_TYPE, Format, rates_csv
from services.metrics.deps import Deps, MetricsDeps
from services.metrics.models import RateGroup, RatesByPublic, rates_public
from services.metrics.period_views import read_period_totals
from services.metrics.periods import MAX_PERIOD_GROUPS, PERIODS, Period, TooManyPeriods
from services.metrics.rates import rates_of
from services.metrics.views import RateFilter
from shared.clock import utc_now

router = APIRouter(tags=["metrics"])

_FIRST_DAY = {"day": "the day", "week": "its Monday", "month": "the 1st"}


async def rates_by_period(
    deps: MetricsDeps, filters: RateFilter, period: Period, fmt: Format
) -> Response:
    """The answer as JSON or CSV, shared by readers asking the same at once (`answers`); a
    422 naming `since` when it would hold more than MAX_PERIOD_GROUPS groups."""

    async def compute() -> bytes:
        async with deps.database.read() as db:
            totals = await read_period_totals(db, filters, period, now=utc_now())
        groups = [
            RateGroup(key=start.isoformat(), rates=rates_public(rates_of(total)))
            for start, total in totals.items()
        ]
        if fmt == "csv":
            return rates_csv([(group.key, group.rates) for group in groups], period).encode()
        return RatesByPublic(by=period, groups=groups).model_dump_json().encode()

    try:
        body = await deps.answers.get(("period", filters, period, fmt), compute)
    except TooManyPeriods as exc:
        since = None if filters.since is None else filters.since.isoformat()
        raise RequestValidationError(
            [{"type": "value_error", "loc": ("query", "since"), "msg": str(exc), "input": since}]
        ) from None
    media_type = "application/json" if fmt == "json" else CSV_MEDIA_TYPE
    return Response(content=body, media_type=media_type)


def _route(
    period: Period,
) -> Callable[[Auditor, Deps, FilterDep, FormatDep], Awaitable[Response]]:
    async def read_rates_by_period(
        caller: Auditor, deps: Deps, filters: FilterDep, fmt: FormatDep
    ) -> Response:
        return await rates_by_period(deps, filters, period, fmt)

    read_rates_by_period.__name__ = f"read_rates_by_{period}"
    read_rates_by_period.__doc__ = (
        f"The rates per {period} (Asia/Shanghai) of the tickets' `submitted_at`, with the "
        "filters of `/rates`: one group per "
        f"{period} that has tickets, keyed by its first day ({_FIRST_DAY[period]}) as "
        "YYYY-MM-DD, in order. A group's rates are those of `/rates` with `since` and `until` "
        f"at the {period}'s bounds, cut by the window's own `since` and `until` (so the first "
        "and last groups may cover part of their period). Work orders not yet due count as "
        "awaiting a reply, as in `/rates`. As CSV: one line per period and rate. At most "
        f"{MAX_PERIOD_GROUPS:,} groups: beyond, a 422 naming `since`."
    )
    return read_rates_by_period


for _period in PERIODS:
    router.add_api_route(
        f"/rates/by/{_period}",
        _route(_period),
        methods=["GET"],
        response_model=RatesByPublic,
        responses={
            **CSV_ANSWER,
            422: {"description": "A bad filter, or more groups than an answer holds"},
        },
    )
