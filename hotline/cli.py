"""The `hotline` command: run the stack, one service, migrations, topics."""

from __future__ import annotations

import asyncio
import os
import runpy
import sys
from pathlib import Path
from typing import Annotated

import typer

from hotline.audit import app as audit_app
from hotline.dlq import app as dlq_app
from hotline.keys import app as keys_app
from hotline.metrics import app as metrics_app
from hotline.outbox import app as outbox_app
from hotline.service_processes import MigrationFailed
from hotline.service_processes import migrate as migrate_services
from hotline.simulator.command import simulate
from hotline.status import status
from hotline.tickets import app as tickets_app
from shared.kafka import ensure_topics
from shared.names import SERVICE_NAMES, ServiceName, service_named
from shared.observability import configure_logging
from shared.settings import Settings

app = typer.Typer(
    help="12345 hotline ticket tracker: intake, dispatch, followup and metrics.",
    no_args_is_help=True,
    add_completion=False,
)

app.add_typer(audit_app, name="audit")
app.add_typer(keys_app, name="keys")
app.add_typer(dlq_app, name="dlq")
app.add_typer(outbox_app, name="outbox")
app.add_typer(metrics_app, name="metrics")
app.add_typer(tickets_app, name="ticket")
app.add_typer(tickets_app, name="tickets", hidden=True)  # either spelling works

DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", help="State folder (default .hotline, or HOTLINE_DATA_DIR)."),
]


def _settings(data_dir: Path | None = None) -> Settings:
    if data_dir is not None:
        os.environ["HOTLINE_DATA_DIR"] = str(data_dir)
    return Settings()


def _check_service(name: str) -> ServiceName:
    try:
        return service_named(name)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


@app.command()
def up(
    data_dir: DataDir = None,
    simulator: Annotated[
        bool,
        typer.Option(
            "--simulator/--no-simulator",
            help="Play a gentle stream of simulated tickets (HOTLINE_SIMULATOR_RATE a second).",
        ),
    ] = True,
) -> None:
    """Run the whole stack: embedded broker and database unless given, then the services."""
    from hotline.stack import run_stack  # the stack needs Linux-only modules; load on use

    settings = _settings(data_dir)
    configure_logging("WARNING", json_logs=False)
    raise typer.Exit(run_stack(settings, typer.echo, with_simulator=simulator))


@app.command()
def serve(
    service: Annotated[str, typer.Argument(callback=_check_service, help="Which service.")],
) -> None:
    """Run one service against existing servers (like `python -m services.<name>`)."""
    sys.argv = [f"services.{service}", "serve"]
    runpy.run_module(f"services.{service}", run_name="__main__", alter_sys=True)


@app.command()
def migrate(
    service: Annotated[
        str | None, typer.Argument(help="One service; all four when left out.")
    ] = None,
) -> None:
    """Bring service schemas to their newest revision."""
    settings = _settings()
    names: list[ServiceName] = [_check_service(service)] if service else list(SERVICE_NAMES)
    try:
        migrate_services(names)
    except MigrationFailed as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from exc
    for name in names:
        typer.echo(f"{name}: schema {settings.schema_of(name)} is up to date")


@app.command()
def topics() -> None:
    """Create the topics (and their dead-letter topics) that do not exist yet."""
    asyncio.run(ensure_topics(_settings()))
    typer.echo("topics are in place")


app.command()(simulate)
app.command()(status)


if __name__ == "__main__":
    app()
