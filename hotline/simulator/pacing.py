"""Stories started at a steady rate: at most `concurrency` tickets in flight, launched at
`rate` tickets a second, for the comparison run and the live run alike."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import datetime

from hotline.simulator.client import SimulatorError
from hotline.simulator.model import Story
from hotline.simulator.players import Player


async def launch_at_rate(
    player: Player,
    jobs: AsyncIterator[tuple[Story, datetime | None]],
    *,
    tolerated: tuple[type[SimulatorError], ...],
    on_failure: Callable[[Story, SimulatorError], object],
    stop: asyncio.Event | None = None,
    tick: Callable[[], None] | None = None,
) -> None:
    """Start one story every 1/rate seconds, at most `concurrency` in flight (both from the
    player's config), and wait for them. A `tolerated` error ends its story only
    (`on_failure` hears of it); any other ends the run and is raised. When `stop` is set,
    no story starts and those in flight are abandoned."""
    rate = player.config.rate
    slots = asyncio.Semaphore(player.config.concurrency)
    loop = asyncio.get_running_loop()
    started = loop.time()
    in_flight: set[asyncio.Task[None]] = set()

    async def play(story: Story, submitted_at: datetime | None) -> None:
        try:
            if submitted_at is None:
                await player.play_live(story)
            else:
                await player.play_backdated(story, submitted_at)
        except tolerated as exc:
            on_failure(story, exc)
        finally:
            slots.release()

    async def next_slot(count: int) -> bool:
        """Wait for story `count`'s turn and a free slot; False if stopped meanwhile."""
        delay = started + count / rate - loop.time()
        if stop is None:
            if delay > 0:
                await asyncio.sleep(delay)
            await slots.acquire()
            return True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=max(0.0, delay))
        if stop.is_set():
            return False
        acquire = asyncio.ensure_future(slots.acquire())
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait({acquire, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if not acquire.done():
            acquire.cancel()
            return False
        if stop.is_set():
            slots.release()
            return False
        return True

    async with asyncio.TaskGroup() as group:
        count = 0
        async for story, submitted_at in jobs:
            if not await next_slot(count):
                break
            task = group.create_task(play(story, submitted_at))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
            count += 1
            if tick is not None:
                tick()
        if stop is not None and stop.is_set():
            for task in in_flight:
                task.cancel()
