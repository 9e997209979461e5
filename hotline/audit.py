"""`hotline audit ...`: audits read from the metrics service's HTTP API, never its tables."""

from __future__ import annotations

import sys
from datetime import datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import httpx
import typer
from rich.console import Console
from rich.table import Table

from shared.auth.keyfile import KEYS_FILE_NAME, KeyRing, KeysFileError
from shared.settings import Settings

SHANGHAI = ZoneInfo("Asia/Shanghai")

app = typer.Typer(
    help="Audits of the hotline, read from the metrics service.",
    no_args_is_help=True,
    add_completion=False,
)


def default_url() -> str:
    """The metrics service on this machine, at its configured port."""
    return f"http://127.0.0.1:{Settings().metrics_port}"


def auditor_key(given: str | None) -> str | None:
    """The key to send: the one given, else the auditor key of the embedded stack's keys
    file, else none (the service then answers 401, which is said plainly)."""
    if given:
        return given
    keys_file = Settings().data_dir / KEYS_FILE_NAME
    if not keys_file.exists():
        return None
    try:
        return KeyRing.from_file(keys_file).token("auditor")
    except (KeysFileError, KeyError):
        return None


def fetch_unanswered(
    url: str, params: dict[str, Any], *, key: str | None, timeout: float = 10.0
) -> httpx.Response:
    """GET /audit/unanswered; typer.Exit(1) with a clear message if the API cannot answer."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        with httpx.Client(base_url=url, timeout=timeout, headers=headers) as client:
            response = client.get("/audit/unanswered", params=params)
    except httpx.TransportError as exc:
        typer.echo(f"error: cannot reach the metrics service at {url}: {exc}", err=True)
        typer.echo("is it running? (`hotline up`, or pass --url)", err=True)
        raise typer.Exit(1) from exc
    if response.status_code != 200:
        typer.echo(
            f"error: the metrics service answered {response.status_code}: {_detail(response)}",
            err=True,
        )
        if response.status_code in (401, 403):
            typer.echo("pass an auditor's key with --key (or HOTLINE_API_KEY)", err=True)
        raise typer.Exit(1)
    return response


def _detail(response: httpx.Response) -> str:
    try:
        return str(response.json().get("detail", response.text))
    except ValueError:
        return response.text[:500]


def _local(moment: str) -> str:
    return datetime.fromisoformat(moment).astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M")


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
            _local(item["created_at"]),
            _local(item["due_at"]),
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
        bool, typer.Option("--csv", help="CSV (as the API gives it) instead of a table.")
    ] = False,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many rows.")] = 100,
    url: Annotated[
        str | None,
        typer.Option(help="Metrics service base URL (default: http://127.0.0.1:<metrics port>)."),
    ] = None,
    key: Annotated[
        str | None,
        typer.Option(
            envvar="HOTLINE_API_KEY",
            help="An auditor's API key (default: the one in <data dir>/api-keys.toml).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Work orders with no reply yet, most overdue first, with their age in working days."""
    base = url or default_url()
    params: dict[str, Any] = {"limit": limit, "format": "csv" if csv_output else "json"}
    if city:
        params["city"] = city
    if department:
        params["department"] = department
    if overdue_only:
        params["overdue_only"] = "true"
    response = fetch_unanswered(base, params, key=auditor_key(key))
    if csv_output:
        sys.stdout.write(response.text)
        return
    Console(width=None if sys.stdout.isatty() else 160).print(unanswered_table(response.json()))
