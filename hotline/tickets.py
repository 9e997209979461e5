"""`hotline ticket show ID`: a ticket's whole story, read from the metrics service's
timeline (every service's events in the order they happened); `hotline tickets export`:
every ticket a search selects, as CSV."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.console import Console, Group
from rich.table import Table

from hotline.metrics_api import KeyOption, UrlOption, client, export_csv, get, local_time

app = typer.Typer(
    help="Tickets as the metrics service knows them.",
    no_args_is_help=True,
    add_completion=False,
)

_MET = {True: "met", False: "missed", None: "open"}


def _actor(actor: dict[str, Any] | None) -> str:
    if actor is None:
        return "(system)"
    department = f" {actor['department']}" if actor.get("department") else ""
    return f"{actor['role']}{department} ({actor['key_id']})"


def _changes(event: dict[str, Any]) -> str:
    parts = []
    for name, value in event["changes"].items():
        if value is None or name in {"work_order_id"}:
            continue
        shown = json.dumps(value, ensure_ascii=False) if isinstance(value, dict) else value
        parts.append(f"{name}={shown}")
    return ", ".join(str(part) for part in parts)


def timeline_view(told: dict[str, Any]) -> Group:
    """The timeline as two tables (deadlines, events), times in Asia/Shanghai."""
    deadlines = Table(title=f"Ticket {told['ticket_id']}: {told['state']}", title_justify="left")
    for column in ("work order", "department", "redo", "created", "due", "first reply", "deadline"):
        deadlines.add_column(column, no_wrap=column == "work order")
    for deadline in told["deadlines"]:
        deadlines.add_row(
            deadline["work_order_id"],
            deadline["department"] or "",
            str(deadline["redo_round"] or ""),
            local_time(deadline["created_at"]),
            local_time(deadline["due_at"]),
            local_time(deadline["first_reply_at"]),
            _MET[deadline["met"]],
            style="red" if deadline["met"] is False else None,
        )
    events = Table(caption=f"as of {local_time(told['as_of'])}; times in Asia/Shanghai")
    for column in ("when", "event", "by", "work order", "what it recorded"):
        events.add_column(column, overflow="fold")
    for event in told["events"]:
        events.add_row(
            local_time(event["at"]),
            event["type"].removeprefix("hotline."),
            _actor(event["actor"]),
            event["work_order_id"] or "",
            _changes(event),
        )
    return Group(deadlines, events)


@app.command()
def show(
    ticket_id: Annotated[str, typer.Argument(help="The ticket's id.")],
    as_of: Annotated[
        str | None,
        typer.Option(help="The story as it stood then (RFC 3339 with an offset)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="The API's JSON as it is.")] = False,
    url: UrlOption = None,
    key: KeyOption = None,
) -> None:
    """A ticket's whole story: its events in order, who caused each, its deadlines and state."""
    params = {"as_of": as_of} if as_of else None
    with client(url, key) as http:
        response = get(http, f"/tickets/{quote(ticket_id, safe='')}/timeline", params)
    if as_json:
        sys.stdout.write(response.text + "\n")
        return
    Console(width=None if sys.stdout.isatty() else 160).print(timeline_view(response.json()))


Filter = Annotated[str | None, typer.Option(show_default=False)]


@app.command()
def export(
    state: Annotated[
        str | None,
        typer.Option(help="open, awaiting_reply, overdue, reopened, replied or closed."),
    ] = None,
    city: Filter = None,
    channel: Annotated[str | None, typer.Option(help="phone or online.")] = None,
    scenario: Filter = None,
    category: Filter = None,
    evaluator: Filter = None,
    department: Annotated[
        str | None, typer.Option(help="Tickets with a transfer or work order of it.")
    ] = None,
    phone: Annotated[
        str | None,
        typer.Option(help="One citizen's tickets (auditors only; the number is hashed)."),
    ] = None,
    since: Annotated[str | None, typer.Option(help="Submitted at or after (RFC 3339).")] = None,
    until: Annotated[str | None, typer.Option(help="Submitted before (RFC 3339).")] = None,
    due_since: Annotated[str | None, typer.Option(help="A work order due at or after.")] = None,
    due_until: Annotated[str | None, typer.Option(help="... and before.")] = None,
    overdue: Annotated[
        bool | None, typer.Option("--overdue/--not-overdue", help="With a work order past due.")
    ] = None,
    reopened: Annotated[
        bool | None, typer.Option("--reopened/--not-reopened", help="Reopened (重办).")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File to write (default: stdout).")
    ] = None,
    url: UrlOption = None,
    key: KeyOption = None,
) -> None:
    """Every ticket the filters select, as CSV, oldest first (following the API's cursors;
    a progress bar on a terminal)."""
    given = {
        "state": state,
        "city": city,
        "channel": channel,
        "scenario": scenario,
        "category": category,
        "evaluator": evaluator,
        "department": department,
        "phone": phone,
        "submitted_since": since,
        "submitted_until": until,
        "due_since": due_since,
        "due_until": due_until,
        "overdue": None if overdue is None else str(overdue).lower(),
        "reopened": None if reopened is None else str(reopened).lower(),
    }
    params = {name: value for name, value in given.items() if value is not None}
    with client(url, key) as http:
        if output is None:
            export_csv(http, "/tickets", params, sys.stdout, what="tickets")
            return
        # Written aside and renamed when whole: a failed export leaves no half file behind.
        partial = output.with_name(f".{output.name}.part")
        try:
            with partial.open("w", encoding="utf-8", newline="") as out:
                rows = export_csv(http, "/tickets", params, out, what="tickets")
            partial.replace(output)
        finally:
            partial.unlink(missing_ok=True)
    typer.echo(f"{rows} tickets written to {output}", err=True)
