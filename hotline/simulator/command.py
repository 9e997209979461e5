"""The `hotline simulate` command: options in, a run out, its exit status back."""

from __future__ import annotations

import asyncio
import secrets
from datetime import date
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from hotline.simulator.client import Endpoints
from hotline.simulator.config import RunConfig
from hotline.simulator.params import (
    SimulatorParams,
    load_params,
    parameter_rows,
    with_overrides,
)
from hotline.simulator.run import run
from shared.auth.keyfile import KEYS_FILE_NAME, KeyRing, KeysFileError
from shared.settings import Settings

LIVE_RATE = 0.5
"""Tickets a second in --live mode: gentle, yet /rates moves every few seconds."""
COMPARISON_RATE = 50.0


def _probability(what: str) -> Any:
    return typer.Option(min=0.0, max=1.0, help=f"{what} (default: see --show-params).")


def _url(service: str) -> Any:
    return typer.Option(
        help=f"{service}'s base URL (default: http://<HOTLINE_HOST>:<HOTLINE_{service.upper()}"
        "_PORT>).",
        show_default=False,
    )


def _day(value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise typer.BadParameter("a date like 2025-11-03") from exc


def simulate(
    tickets: Annotated[int, typer.Option(min=1, help="Tickets to send (not with --live).")] = 100,
    rate: Annotated[
        float | None,
        typer.Option(
            min=0.001,
            help=f"Tickets started a second (default: {COMPARISON_RATE:g}, "
            f"{LIVE_RATE:g} with --live).",
            show_default=False,
        ),
    ] = None,
    cities: Annotated[
        str | None,
        typer.Option(help="Comma-separated cities (default: those the 2025 report names)."),
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(help="Seed of the stories (default: random, printed).", show_default=False),
    ] = None,
    live: Annotated[
        bool,
        typer.Option(
            "--live",
            help="Submit tickets now, steps seconds apart, until Ctrl-C or SIGTERM; "
            "no comparison, a summary line now and then.",
        ),
    ] = False,
    days: Annotated[
        int, typer.Option(min=1, max=60, help="Length of the run's own past window.")
    ] = 7,
    window_start: Annotated[
        str | None,
        typer.Option(
            help="First day (YYYY-MM-DD, Asia/Shanghai) of the window (default: 60 to 400 "
            "days ago, from the run id, avoiding windows earlier runs used).",
            show_default=False,
        ),
    ] = None,
    run_id: Annotated[
        str | None, typer.Option(help="Run id (default: random).", show_default=False)
    ] = None,
    settle_timeout: Annotated[
        float, typer.Option(min=0.0, help="Seconds to wait for /rates to catch up.")
    ] = 60.0,
    concurrency: Annotated[int, typer.Option(min=1, help="Tickets in flight at most.")] = 16,
    params_file: Annotated[
        Path | None,
        typer.Option(
            "--params",
            exists=True,
            dir_okay=False,
            help="JSON or TOML file overriding any parameter (see --show-params).",
        ),
    ] = None,
    show_params: Annotated[
        bool, typer.Option("--show-params", help="Print every parameter and its source; exit.")
    ] = False,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the comparison as JSON (notes to stderr).")
    ] = False,
    connection_rate: Annotated[float | None, _probability("Phone calls answered")] = None,
    mean_wait: Annotated[
        float | None,
        typer.Option(min=0.0, help="Mean wait in seconds (default: see --show-params)."),
    ] = None,
    transfer_failure_rate: Annotated[
        float | None, _probability("Transfers that do not connect")
    ] = None,
    three_way_failure_rate: Annotated[
        float | None, _probability("Three-way calls that do not connect")
    ] = None,
    unanswered_rate: Annotated[
        float | None, _probability("Phone work orders never answered")
    ] = None,
    definite_rate: Annotated[float | None, _probability("Replies that are definite")] = None,
    phone_share: Annotated[float | None, _probability("Tickets by phone (the rest online)")] = None,
    callback_rate: Annotated[float | None, _probability("Eligible tickets called back")] = None,
    keys_file: Annotated[
        Path | None,
        typer.Option(
            "--keys",
            dir_okay=False,
            help="Keys file with a key per role and one per department's desk (default: "
            "<data dir>/api-keys.toml, which `hotline up` writes).",
            show_default=False,
        ),
    ] = None,
    intake_url: Annotated[str | None, _url("intake")] = None,
    dispatch_url: Annotated[str | None, _url("dispatch")] = None,
    followup_url: Annotated[str | None, _url("followup")] = None,
    metrics_url: Annotated[str | None, _url("metrics")] = None,
) -> None:
    """Play evaluators, operators, departments and callback staff against the services'
    HTTP APIs; then compare the rates expected from what was sent with /rates (exit 0 when
    all match, 1 when one differs, 2 when the run failed)."""
    params = load_params(params_file) if params_file else SimulatorParams()
    params = with_overrides(
        params,
        cities=[c.strip() for c in cities.split(",") if c.strip()] if cities else None,
        connection_rate=connection_rate,
        mean_wait_seconds=mean_wait,
        transfer_failure_rate=transfer_failure_rate,
        three_way_failure_rate=three_way_failure_rate,
        phone_work_order_unanswered_rate=unanswered_rate,
        definite_reply_rate=definite_rate,
        phone_share=phone_share,
        callback_rate=callback_rate,
    )
    if show_params:
        print_params(params)
        return
    config = RunConfig(
        params=params,
        tickets=tickets,
        rate=rate or (LIVE_RATE if live else COMPARISON_RATE),
        seed=seed if seed is not None else secrets.randbelow(1_000_000),
        concurrency=concurrency,
        run_id=run_id,
        days=days,
        window_start=_day(window_start),
        settle_timeout=settle_timeout,
    )
    settings = Settings()
    keys_path = keys_file or settings.data_dir / KEYS_FILE_NAME
    try:
        keys = KeyRing.from_file(keys_path)
    except KeysFileError as exc:
        Console(stderr=True).print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from exc
    endpoints = Endpoints.from_settings(
        settings,
        intake=intake_url,
        dispatch=dispatch_url,
        followup=followup_url,
        metrics=metrics_url,
    )
    code = asyncio.run(
        run(config, endpoints=endpoints, keys=keys, live=live, json_output=json_output)
    )
    raise typer.Exit(code)


def print_params(params: SimulatorParams) -> None:
    """The parameter table: name, value, source."""
    table = Table(title="simulator parameters", title_justify="left")
    table.add_column("parameter")
    table.add_column("value")
    table.add_column("source")
    for name, value, source in parameter_rows(params):
        table.add_row(name, value, source)
    Console().print(table)
