"""The comparison run, and `hotline simulate`'s entry point for either kind of run.

N tickets are back-dated into a window of their own in the past (`window`), so every
deadline has passed and no other traffic shares the window; then `/rates` for that window
is polled until it equals what the run expects (`truth`), or the settle timeout passes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

from rich.console import Console

from hotline.simulator.client import (
    Endpoints,
    RequestRefused,
    ServiceClients,
    ServiceUnreachable,
    SimulatorError,
    check_keys,
    check_reachable,
    open_clients,
    read_rates,
)
from hotline.simulator.comparison import Comparison, compare
from hotline.simulator.config import RunConfig, Say, new_run_id
from hotline.simulator.live import run_live
from hotline.simulator.model import Story, generate_story, rng_for
from hotline.simulator.pacing import launch_at_rate
from hotline.simulator.players import Player, whole_seconds
from hotline.simulator.report import as_json, render_table
from hotline.simulator.results import RunResult
from hotline.simulator.truth import Expected, Selection, SentTicket, combined, expected_rates
from hotline.simulator.window import Window, choose_window
from shared.auth.keyfile import KeyRing
from shared.clock import utc_now
from shared.names import SERVICE_NAMES


async def simulate(config: RunConfig, clients: ServiceClients, *, say: Say = print) -> RunResult:
    """The comparison run: play `config.tickets` back-dated stories (fewer when
    `config.duration` passes first), then poll `/rates` for their window until it equals
    the expectation or the settle timeout passes."""
    run_id = config.run_id or new_run_id()
    check_keys(clients.keys, config.params.departments())
    await check_reachable(clients, SERVICE_NAMES)
    window, baseline = await choose_window(clients, config, run_id)
    say(
        f"run {run_id}: {config.tickets} tickets (seed {config.seed}) at {config.rate:g}/s, "
        f"submitted {window.since:%Y-%m-%d} .. {window.until - timedelta(days=1):%Y-%m-%d} "
        "(Asia/Shanghai)"
        + (
            " — the window already holds tickets; they are added to the expectation"
            if baseline
            else ""
        )
    )
    player = Player(clients, config, run_id)
    length = (window.until - window.since).total_seconds()

    async def jobs() -> AsyncIterator[tuple[Story, datetime | None]]:
        until = None if config.duration is None else time.monotonic() + config.duration
        for index in range(config.tickets):
            if until is not None and time.monotonic() >= until:
                return
            when = rng_for(config.seed, index, "when").uniform(1.0, length - 1.0)
            yield (
                generate_story(config.params, config.seed, index),
                whole_seconds(window.since + timedelta(seconds=when)),
            )

    last_said = [time.monotonic()]

    def progress() -> None:
        if time.monotonic() - last_said[0] >= 5:
            last_said[0] = time.monotonic()
            say(f"  sent {player.counts['tickets']}/{config.tickets} tickets")

    try:
        await launch_at_rate(
            player,
            jobs(),
            tolerated=(RequestRefused,),
            on_failure=player.fail,
            tick=progress,
        )
    except* ServiceUnreachable as group:
        raise group.exceptions[0] from None
    say(f"sent {player.tally()}; waiting for /rates (up to {config.settle_timeout:g} s)")
    comparison, waited = await settle(clients, player.sent, window, baseline, config, say=say)
    return RunResult(
        run_id=run_id,
        seed=config.seed,
        window=window,
        sent=player.sent,
        baseline=baseline,
        comparison=comparison,
        failures=player.failures,
        settle_seconds=waited,
    )


async def settle(
    clients: ServiceClients,
    sent: list[SentTicket],
    window: Window,
    baseline: dict[str, Expected] | None,
    config: RunConfig,
    *,
    say: Say = print,
) -> tuple[Comparison, float]:
    """Poll `/rates` for the run's window until it equals what was sent (or the settle
    timeout passes): the last comparison and the seconds it took."""
    selection = Selection(since=window.since, until=window.until)
    began = last_said = time.monotonic()
    while True:
        expected = expected_rates(sent, now=utc_now(), selection=selection)
        if baseline is not None:
            expected = combined(expected, baseline)
        comparison = compare(expected, await read_rates(clients, window.query()))
        waited = time.monotonic() - began
        if comparison.match or waited >= config.settle_timeout:
            return comparison, waited
        if time.monotonic() - last_said >= 5:
            last_said = time.monotonic()
            say(f"  /rates after {waited:.0f} s: {settle_progress(comparison)}")
        await asyncio.sleep(config.poll_interval)


def settle_progress(comparison: Comparison) -> str:
    """How far `/rates` has caught up: rates matching, and answered tickets counted."""
    matching = len(comparison.rows) - len(comparison.mismatched)
    line = f"{matching} of {len(comparison.rows)} rates match"
    for row in comparison.rows:
        if row.name == "first_contact_resolution_rate" and row.reported is not None:
            line += (
                f", {row.reported.denominator} of {row.expected.denominator} answered tickets in"
            )
    return line


async def run(
    config: RunConfig,
    *,
    endpoints: Endpoints | None = None,
    keys: KeyRing | None = None,
    clients: ServiceClients | None = None,
    live: bool = False,
    json_output: bool = False,
    console: Console | None = None,
    request_timeout: float = 10.0,
) -> int:
    """`hotline simulate`: a comparison run (exit 0 all match, 1 a rate differs, 2 the run
    failed) or, with `live`, a live run until SIGINT/SIGTERM (exit 0). Clients are opened
    on `endpoints`, with `keys`, unless given."""
    out = console or Console()
    if console is None and not out.is_terminal:
        out.width = max(out.width, 120)  # a log file or a pipe: keep the table's rows whole
    notes = Console(stderr=True) if json_output else out

    def say(line: str) -> None:
        notes.print(line, markup=False, highlight=False, soft_wrap=True)

    try:
        async with contextlib.AsyncExitStack() as stack:
            if clients is None:
                if endpoints is None or keys is None:
                    raise SimulatorError("give the services' endpoints and keys, or clients")
                clients = await stack.enter_async_context(
                    open_clients(endpoints, request_timeout, keys)
                )
            if live:
                await run_live(config, clients, say)
                return 0
            result = await simulate(config, clients, say=say)
    except SimulatorError as exc:
        Console(stderr=True).print(f"[red]error:[/red] {exc}", highlight=False)
        return 2
    if json_output:
        out.print_json(data=as_json(result))
    else:
        render_table(result, out)
    return result.exit_code
