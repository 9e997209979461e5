"""Answers as CSV: every list and every rate answer of metrics can be had as CSV, asked with
`format=csv` or `Accept: text/csv`. Lists are streamed a chunk at a time, so a million rows
never sit in memory; the header line is the same whatever the rows.

Values: times in RFC 3339 as the JSON gives them, booleans `true`/`false`, null empty.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Annotated, Any, Final, Literal

from fastapi import Header, Query, Response
from fastapi.responses import StreamingResponse

from services.metrics.models import RatePublic

CSV_MEDIA_TYPE: Final = "text/csv; charset=utf-8"
RATE_COLUMNS: Final = ("rate", "value", "numerator", "denominator")

Format = Literal["json", "csv"]
FormatQuery = Annotated[
    Format | None,
    Query(description="`csv` for CSV (default: JSON, or CSV with `Accept: text/csv`)"),
]


def answer_format(format: FormatQuery = None, accept: Annotated[str, Header()] = "") -> Format:
    """CSV if `format=csv`, or if no format is given and the client accepts CSV (and not
    JSON first)."""
    if format is not None:
        return format
    wanted = [part.split(";")[0].strip().lower() for part in accept.split(",")]
    if "text/csv" in wanted:
        json_first = "application/json" in wanted and wanted.index(
            "application/json"
        ) < wanted.index("text/csv")
        return "json" if json_first else "csv"
    return "json"


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def csv_lines(columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> str:
    """The header line and the rows, as one text."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(name)) for name in columns])
    return out.getvalue()


async def streamed_csv(
    columns: Sequence[str], rows: AsyncIterable[Mapping[str, Any]], *, chunk: int = 500
) -> AsyncIterator[bytes]:
    """The header line, then the rows, `chunk` rows per piece sent."""
    yield csv_lines(columns, []).encode()
    batch: list[Mapping[str, Any]] = []
    async for row in rows:
        batch.append(row)
        if len(batch) >= chunk:
            yield _body(columns, batch)
            batch = []
    if batch:
        yield _body(columns, batch)


def _body(columns: Sequence[str], rows: list[Mapping[str, Any]]) -> bytes:
    return csv_lines(columns, rows).split("\n", 1)[1].encode()


def rates_csv(groups: Iterable[tuple[str | None, Mapping[str, RatePublic]]], by: str | None) -> str:
    """Rates one per line: (the group's key,) rate name, value, numerator, denominator."""
    columns = ((by,) if by else ()) + RATE_COLUMNS
    rows = [
        {**({by: key} if by else {}), "rate": name, **rate.model_dump()}
        for key, rates in groups
        for name, rate in rates.items()
    ]
    return csv_lines(columns, rows)


def csv_page(
    columns: Sequence[str],
    rows: Iterable[Mapping[str, Any]],
    *,
    total: int,
    next_cursor: str | None,
) -> Response:
    """One page of a list as CSV: the total in `X-Total-Count`, the next page's cursor (if
    any) in `X-Next-Cursor`."""
    headers = {"X-Total-Count": str(total)}
    if next_cursor:
        headers["X-Next-Cursor"] = next_cursor
    return Response(content=csv_lines(columns, rows), media_type=CSV_MEDIA_TYPE, headers=headers)


def csv_stream(columns: Sequence[str], rows: AsyncIterable[Mapping[str, Any]]) -> Response:
    """A whole list as CSV, streamed as its rows are read."""
    return StreamingResponse(streamed_csv(columns, rows), media_type=CSV_MEDIA_TYPE)
