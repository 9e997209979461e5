"""`hotline ticket show ID`: a ticket's whole story, read from the metrics service's
timeline (every service's events in the order they happened)."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.console import Console, Group
from rich.table import Table

from hotline.metrics_api import KeyOption, UrlOption, client, get, local_time

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
