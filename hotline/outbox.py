"""`hotline outbox`: the events a relay set aside because they can never be published as they
are, and putting them back once fixed.

A set-aside event keeps its error; the later events of its ticket wait behind it (held), so
that ticket's events still reach the consumers in order once it is put back. Like `hotline
keys`, it works on the database (`DATABASE_URL`, or the embedded stack's), not over HTTP.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

import sqlalchemy as sa
import typer
from rich.console import Console
from rich.table import Table

from hotline.database import UNREACHABLE_ERRORS, unreachable
from hotline.stack_env import stack_settings
from shared.names import PUBLISHERS, ServiceName, service_named
from shared.outbox import NotSetAside, OutboxRow, OutboxStatus, standalone_outbox_store
from shared.settings import Settings

app = typer.Typer(
    help="Outbox events set aside because they can never be published as they are: list, "
    "show, retry.",
    no_args_is_help=True,
    add_completion=False,
)

T = TypeVar("T")

ERROR_CHARS_IN_LIST = 80


def _publisher(name: str) -> ServiceName:
    try:
        return service_named(name, PUBLISHERS)
    except ValueError as exc:
        raise typer.BadParameter(f"{exc} (the services with an outbox)") from None


Service = Annotated[
    str, typer.Argument(callback=_publisher, help=f"One of {', '.join(PUBLISHERS)}.")
]


def _fail(message: str) -> typer.Exit:
    Console(stderr=True).print(f"[red]error:[/red] {message}", highlight=False)
    return typer.Exit(2)


def _on_database(action: Callable[[Settings], Coroutine[Any, Any, T]]) -> T:
    settings = stack_settings()
    try:
        return asyncio.run(action(settings))
    except UNREACHABLE_ERRORS as exc:
        raise unreachable(settings, exc) from exc
    except sa.exc.ProgrammingError as exc:  # no outbox, or one without `set_aside_at` yet
        raise _fail(
            f"the outbox tables are missing or out of date ({type(exc.orig).__name__}): "
            "run `hotline migrate`"
        ) from exc


def _when(at: datetime | None) -> str:
    return f"{at.astimezone(UTC):%Y-%m-%d %H:%M:%S}Z" if at else ""


def _first_line(text: str | None, limit: int = ERROR_CHARS_IN_LIST) -> str:
    line = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


@dataclass(frozen=True)
class _ServiceOutbox:
    service: ServiceName
    rows: list[OutboxRow]
    status: OutboxStatus | None
    """None when the service's schema has no (up-to-date) outbox."""


async def _set_aside_everywhere(settings: Settings) -> list[_ServiceOutbox]:
    found = []
    for service in PUBLISHERS:
        async with standalone_outbox_store(settings, service) as store:
            try:
                found.append(
                    _ServiceOutbox(service, await store.set_aside_rows(), await store.status())
                )
            except sa.exc.ProgrammingError:  # not migrated (yet): say so, list the others
                found.append(_ServiceOutbox(service, [], None))
    return found


@app.command("list")
def list_set_aside() -> None:
    """Every service's events set aside, oldest first, and how many wait behind them."""
    outboxes = _on_database(_set_aside_everywhere)
    if not any(outbox.rows for outbox in outboxes):
        typer.echo("no events set aside")
    else:
        table = Table(title="Events set aside (they can never be published as they are)")
        table.add_column("service")
        table.add_column("seq", justify="right")
        table.add_column("event id", no_wrap=True, min_width=36)  # whole, to copy
        table.add_column("type")
        table.add_column("ticket", no_wrap=True)
        table.add_column("attempts", justify="right")
        table.add_column("set aside at")
        table.add_column("last error")
        for outbox in outboxes:
            for row in outbox.rows:
                table.add_row(
                    outbox.service,
                    str(row.seq),
                    row.event_id,
                    row.ce_type,
                    row.key,
                    str(row.attempts),
                    _when(row.set_aside_at),
                    _first_line(row.last_error),
                )
        Console(width=None if sys.stdout.isatty() else 200).print(table)
    for outbox in outboxes:
        status = outbox.status
        typer.echo(
            f"{outbox.service}: {status.set_aside} set aside, {status.held} held behind them, "
            f"{status.pending} pending"
            if status
            else f"{outbox.service}: no outbox here (`hotline migrate` makes it)"
        )
    if any(outbox.rows for outbox in outboxes):
        typer.echo(
            "`hotline outbox show SERVICE SEQ` shows one; fix it, then `hotline outbox retry "
            "SERVICE SEQ` puts it back"
        )


@app.command()
def show(
    service: Service,
    seq: Annotated[int, typer.Argument(help="The event's row number (`hotline outbox list`).")],
) -> None:
    """One outbox event in full: its state, attempts, error and data."""

    async def find(settings: Settings) -> OutboxRow | None:
        async with standalone_outbox_store(settings, _publisher(service)) as store:
            return await store.row(seq)

    row = _on_database(find)
    if row is None:
        raise _fail(f"{service} has no outbox event {seq} (published ones are kept for a day)")
    fields = {
        "service": service,
        "seq": row.seq,
        "state": row.state,
        "event id": row.event_id,
        "type": row.ce_type,
        "ticket": row.key,
        "topic": row.topic,
        "source": row.source,
        "time": row.time,
        "created at": _when(row.created_at),
        "published at": _when(row.published_at),
        "set aside at": _when(row.set_aside_at),
        "attempts": row.attempts,
    }
    for name, value in fields.items():
        typer.echo(f"{name + ':':14}{value}")
    typer.echo("last error:")
    typer.echo(f"  {row.last_error}" if row.last_error else "  (none)")
    typer.echo("data:")
    typer.echo(json.dumps(row.data, ensure_ascii=False, indent=2))


@app.command()
def retry(
    service: Service,
    seqs: Annotated[
        list[int] | None, typer.Argument(help="The rows to put back (`hotline outbox list`).")
    ] = None,
    every: Annotated[bool, typer.Option("--all", help="Every event of SERVICE set aside.")] = False,
) -> None:
    """Put events set aside back to pending, once fixed.

    The relay tries them again, then the events of their tickets held behind them, in
    order; one that fails again is set aside again."""
    if bool(seqs) == every:
        raise _fail("name the rows to put back (SEQ...) or give --all, not both")

    async def put_back(settings: Settings) -> list[OutboxRow]:
        async with standalone_outbox_store(settings, _publisher(service)) as store:
            done = await store.put_back(None if every else seqs)
            rows = [await store.row(seq) for seq in done]
            return [row for row in rows if row is not None]

    try:
        rows = _on_database(put_back)
    except NotSetAside as exc:
        raise _fail(f"{service}: {exc}; nothing was put back") from exc
    if not rows:
        typer.echo(f"{service}: no events set aside")
        return
    typer.echo(
        f"{service}: {len(rows)} event(s) put back (seq {', '.join(str(r.seq) for r in rows)}); "
        "the relay publishes them, and the events held behind them, in order"
    )
    for row in rows:
        if row.held:
            typer.echo(
                f"seq {row.seq} still waits behind an earlier event of ticket {row.key} that is "
                "set aside"
            )
