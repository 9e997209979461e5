"""The live run: tickets submitted now, their steps a few real seconds apart, until stopped;
a one-line summary now and then. Nothing is compared: the traffic is for watching."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Final

import httpx

from hotline.simulator.client import ServiceClients, SimulatorError, check_keys, read_rates
from hotline.simulator.config import RunConfig, Say, new_run_id
from hotline.simulator.model import Story, iter_stories
from hotline.simulator.pacing import launch_at_rate
from hotline.simulator.players import Player
from shared.clock import utc_now
from shared.names import SERVICE_NAMES, ServiceName
from shared.workdays import SHANGHAI

LIVE_RATES: Final = (
    ("connection_rate", "connected"),
    ("avg_wait_seconds", "wait"),
    ("first_contact_resolution_rate", "first-contact"),
    ("unanswered_rate", "unanswered"),
    ("definite_reply_rate", "definite"),
    ("satisfaction_rate", "satisfied"),
)
"""The rates a summary line shows, with their short labels."""


async def wait_until_ready(clients: ServiceClients, say: Say, stop: asyncio.Event) -> bool:
    """Poll every service's /readyz until all answer 200 (the stack may still be starting);
    False if stopped first."""
    waiting: set[ServiceName] = set()
    for service in SERVICE_NAMES:
        client = clients.of(service)
        while not stop.is_set():
            with contextlib.suppress(httpx.TransportError):
                if (await client.get("/readyz")).is_success:
                    break
            if service not in waiting:
                waiting.add(service)
                say(f"live: waiting for {service} at {client.base_url} ...")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1.0)
    return not stop.is_set()


async def simulate_live(
    config: RunConfig, clients: ServiceClients, *, say: Say = print, stop: asyncio.Event
) -> Player:
    """Tickets submitted now at `config.rate` a second until `stop` is set; a summary line
    every `config.summary_every` seconds. Stories in flight when stopped are abandoned."""
    run_id = config.run_id or new_run_id()
    check_keys(clients.keys, config.params.departments())
    player = Player(clients, config, run_id)
    if not await wait_until_ready(clients, say, stop):
        return player
    began = utc_now()
    say(f"live: run {run_id}, {config.rate:g} tickets/s; stop with Ctrl-C")

    def failed(story: Story, exc: SimulatorError) -> None:
        say(f"live: {player.fail(story, exc)}")

    async def jobs() -> AsyncIterator[tuple[Story, datetime | None]]:
        for story in iter_stories(config.params, config.seed):
            yield story, None

    async def summaries() -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=config.summary_every)
            say(await live_summary(player, clients, began))

    reporter = asyncio.create_task(summaries())
    try:
        await launch_at_rate(
            player,
            jobs(),
            tolerated=(SimulatorError,),
            on_failure=failed,
            stop=stop,
        )
    finally:
        stop.set()
        await reporter
    return player


async def live_summary(player: Player, clients: ServiceClients, since: datetime) -> str:
    """One line: what was sent so far, and a few of `/rates` for tickets since `since`."""
    line = f"live: {player.tally()}"
    if player.failures:
        line += f", {len(player.failures)} failed"
    try:
        rates = await read_rates(clients, {"since": since.isoformat()})
    except SimulatorError as exc:
        return f"{line} | /rates unavailable ({exc})"
    shown = []
    for name, label in LIVE_RATES:
        value = rates.get(name, {}).get("value")
        if value is not None:
            shown.append(
                f"{label} {value:.1%}" if name != "avg_wait_seconds" else f"{label} {value:.1f}s"
            )
    return f"{line} | /rates since {since.astimezone(SHANGHAI):%H:%M} UTC+8: " + (
        ", ".join(shown) or "nothing yet"
    )


async def run_live(config: RunConfig, clients: ServiceClients, say: Say) -> None:
    """The live run, stopped cleanly by SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    handled = (signal.SIGINT, signal.SIGTERM)
    for signum in handled:
        loop.add_signal_handler(signum, stop.set)
    try:
        player = await simulate_live(config, clients, say=say, stop=stop)
    finally:
        for signum in handled:
            loop.remove_signal_handler(signum)
    say(f"live: stopped after {player.counts['tickets']} tickets")
