"""`hotline audit ...`: audits read from the metrics service's HTTP API, never its tables."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from hotline.metrics_api import KeyOption, UrlOption, client, export_csv, get, local_time

app = typer.Typer(
    help="Audits of the hotline, read from the metrics service.",
    no_args_is_help=True,
    add_completion=False,
)


def unanswered_table(page: dict[str, Any]) -> Table:
    """The page as a table, times in Asia/Shanghai, overdue rows in red."""
    items = page["items"]
    table = Table(
        title="Unanswered work orders (most overdue first)",
        caption=f"{len(items)} of {page['total']} shown; times in Asia/Shanghai",
    )
    table.add_column("work order", no_wrap=True, min_width=36)  # ids whole, to copy
    table.add_column("ticket", overflow="fold")
    table.add_column("city")
    table.add_column("department")
    table.add_column("created")
    table.add_column("due")
    table.add_column("overdue")
    table.add_column("age (working days)", justify="right")
    for item in items:
        table.add_row(
            item["work_order_id"],
            item["ticket_id"],
            item["city"] or "(ticket not yet known)",
            item["department"],
            local_time(item["created_at"]),
            local_time(item["due_at"]),
            "yes" if item["overdue"] else "no",
            str(item["age_working_days"]),
            style="red" if item["overdue"] else None,
        )
    return table


@app.command()
def unanswered(
    city: Annotated[str | None, typer.Option(help="Only this city.")] = None,
    department: Annotated[str | None, typer.Option(help="Only this department.")] = None,
    overdue_only: Annotated[
        bool, typer.Option("--overdue-only", help="Only work orders past their due time.")
    ] = False,
    csv_output: Annotated[
        bool,
        typer.Option("--csv", help="Every row as CSV (as the API gives it) instead of a table."),
    ] = False,
    as_of: Annotated[
        str | None,
        typer.Option(help="What was unanswered at the end of this day (YYYY-MM-DD)."),
    ] = None,
    limit: Annotated[
        int, typer.Option(min=1, max=1000, help="At most this many rows in the table.")
    ] = 100,
    url: UrlOption = None,
    key: KeyOption = None,
) -> None:
    """Work orders with no reply yet, most overdue first, with their age in working days."""
    params: dict[str, Any] = {}
    if as_of:
        params["as_of"] = as_of
    if city:
        params["city"] = city
    if department:
        params["department"] = department
    if overdue_only:
        params["overdue_only"] = "true"
    with client(url, key) as http:
        if csv_output:
            export_csv(http, "/audit/unanswered", params, sys.stdout, what="work orders")
            return
        response = get(http, "/audit/unanswered", {**params, "limit": limit})
    Console(width=None if sys.stdout.isatty() else 160).print(unanswered_table(response.json()))
