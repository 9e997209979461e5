"""The whole stack under sustained load: tickets with their whole lifecycle, posted -> all
counted, and each service's resident memory over the run.

Starts the embedded broker and PostgreSQL of its own and the four services as their own
processes, then, for `--rounds` runs:
- `--kind lifecycle` (default): the simulator's comparison run (`hotline simulate`'s code),
  starting stories at `--rate` a second for `--seconds`, at most `--concurrency` in flight
  (so fewer when the stack cannot keep up). Each story
  submits its ticket and plays its transfers, work order, reply and callbacks in the 2025
  report's mix, each step as the role that does it. The figure is the stories' tickets over
  the seconds from the first POST until `/rates` for the run's window equals what was sent
  (every event of every ticket counted, exactly).
- `--kind tickets`: `POST /tickets` alone at a paced `--rate` (as `bench_freshness` posts),
  for the memory figure at a rate the lifecycle cannot sustain here.
Every `--sample-seconds` it reads each service's resident memory (RSS) from /proc; it
reports the last sample, the highest, and the growth over the second half of the run.
Prints one JSON object.

    .venv/bin/python -m benchmarks.bench_sustained --rate 1000 --seconds 60 --rounds 3
    .venv/bin/python -m benchmarks.bench_sustained --kind tickets --rate 200 --seconds 600
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import statistics
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from benchmarks.bench_freshness import post_paced
from benchmarks.common import embedded_servers, machine, spread, store_entries
from hotline.simulator.client import Endpoints, ServiceClients
from hotline.simulator.config import RunConfig, new_run_id
from hotline.simulator.params import SimulatorParams
from hotline.simulator.run import simulate
from hotline.stack import rss_mb
from shared.auth.keyfile import KeyRing, generate_entries
from shared.names import SERVICE_NAMES, ServiceName
from shared.settings import Settings

POOL_CONNECTIONS = 32
"""Connections per HTTP client: httpx finds a free connection by scanning its whole pool,
so one client with a connection per story in flight spent half the driver's time there
(py-spy); the stories are spread over several clients of this size instead."""


@dataclass
class SpreadClients(ServiceClients):
    """Several clients per service, each request on the next one."""

    spares: dict[str, Iterator[httpx.AsyncClient]] = field(default_factory=dict)

    def of(self, service: ServiceName) -> httpx.AsyncClient:
        return next(self.spares[service])


@contextlib.asynccontextmanager
async def spread_clients(
    endpoints: Endpoints, keys: KeyRing, concurrency: int
) -> AsyncIterator[ServiceClients]:
    """Clients for `concurrency` stories in flight, `POOL_CONNECTIONS` connections each."""
    count = max(1, -(-concurrency // POOL_CONNECTIONS))
    limits = httpx.Limits(max_connections=POOL_CONNECTIONS)
    async with contextlib.AsyncExitStack() as stack:
        clients = {
            name: [
                await stack.enter_async_context(
                    httpx.AsyncClient(base_url=getattr(endpoints, name), timeout=30, limits=limits)
                )
                for _ in range(count)
            ]
            for name in SERVICE_NAMES
        }
        yield SpreadClients(
            **{name: pool[0] for name, pool in clients.items()},
            keys=keys,
            spares={name: itertools.cycle(pool) for name, pool in clients.items()},
        )


class MemorySampler:
    """Each service's RSS every `every` seconds, in a task of its own."""

    def __init__(self, pids: dict[ServiceName, int], every: float) -> None:
        self.pids = pids
        self.every = every
        self.samples: dict[str, list[float]] = {name: [] for name in pids}
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            for name, pid in self.pids.items():
                self.samples[name].append(round(rss_mb(pid), 1))
            await asyncio.sleep(self.every)

    @contextlib.asynccontextmanager
    async def sampling(self) -> AsyncIterator[MemorySampler]:
        self._task = asyncio.create_task(self._run())
        try:
            yield self
        finally:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            for name, pid in self.pids.items():
                self.samples[name].append(round(rss_mb(pid), 1))

    def report(self) -> dict[str, Any]:
        """Per service: the last sample, the highest, and the growth from the mean of the
        second quarter of the run to the mean of its last quarter (start-up excluded)."""
        out: dict[str, Any] = {}
        for name, values in self.samples.items():
            quarter = max(1, len(values) // 4)
            early = values[quarter : 2 * quarter] or values
            late = values[-quarter:]
            out[name] = {
                "last_mb": values[-1],
                "max_mb": max(values),
                "growth_mb": round(statistics.mean(late) - statistics.mean(early), 1),
                "samples": len(values),
            }
        return out


async def lifecycle_round(
    endpoints: Endpoints, keys: KeyRing, rate: float, seconds: float, concurrency: int
) -> dict[str, Any]:
    """One comparison run: stories started at `rate` (as fast as `concurrency` lets them) for
    `seconds`; its tickets counted per second, from the first POST to all counted."""
    config = RunConfig(
        params=SimulatorParams(),
        tickets=int(rate * seconds),
        duration=seconds,
        rate=rate,
        seed=int(time.time()) % 1_000_000,
        concurrency=concurrency,
        run_id=new_run_id(),
        settle_timeout=600,
    )
    notes: list[str] = []
    async with spread_clients(endpoints, keys, concurrency) as clients:
        started = time.monotonic()
        result = await simulate(config, clients, say=notes.append)
        elapsed = time.monotonic() - started
    return {
        "tickets": len(result.sent),
        "failures": len(result.failures),
        "first_failures": result.failures[:3],
        "exact": result.comparison.match,
        "mismatched": result.comparison.mismatched,
        "seconds": round(elapsed, 1),
        "settle_seconds": round(result.settle_seconds, 1),
        "tickets_per_second": round(len(result.sent) / elapsed, 1),
    }


async def tickets_round(
    endpoints: Endpoints, keys: KeyRing, rate: float, seconds: float
) -> dict[str, Any]:
    """`POST /tickets` at `rate` for `seconds`."""
    started = time.monotonic()
    posted = await post_paced(f"{endpoints.intake}/tickets", keys.token("evaluator"), rate, seconds)
    elapsed = time.monotonic() - started
    return {
        "tickets": posted.accepted,
        "due": posted.due,
        "failures": posted.failed,
        "exact": posted.failed == 0,
        "seconds": round(elapsed, 1),
        "tickets_per_second": round(posted.accepted / elapsed, 1),
    }


@contextlib.contextmanager
def stack() -> Iterator[tuple[Endpoints, KeyRing, dict[ServiceName, int]]]:
    """The four services on the benchmark's own servers: where they answer, a key for every
    role and department, and their process ids."""
    with embedded_servers("sustained") as servers:
        services = servers.start_services(*SERVICE_NAMES)
        entries = generate_entries(SimulatorParams().departments(), label="bench")
        asyncio.run(store_entries(Settings(database_url=servers.database_url), entries))
        endpoints = Endpoints(**{name: service.url for name, service in services.items()})
        yield endpoints, KeyRing(entries), {n: s.process.pid for n, s in services.items()}


def bench(
    kind: str, rate: float, seconds: float, rounds: int, concurrency: int, every: float
) -> dict[str, Any]:
    with stack() as (endpoints, keys, pids):
        sampler = MemorySampler(pids, every)

        async def run_all() -> list[dict[str, Any]]:
            runs = []
            async with sampler.sampling():
                for _ in range(rounds):
                    if kind == "lifecycle":
                        runs.append(
                            await lifecycle_round(endpoints, keys, rate, seconds, concurrency)
                        )
                    else:
                        runs.append(await tickets_round(endpoints, keys, rate, seconds))
            return runs

        runs = asyncio.run(run_all())
    memory = sampler.report()
    return {
        "benchmark": f"sustained {kind}: posted -> all counted, and each service's RSS",
        "kind": kind,
        "rate_asked_per_second": rate,
        "seconds_per_run": seconds,
        "concurrency": concurrency,
        "rounds": rounds,
        "machine": machine(),
        "runs": runs,
        "tickets_per_second": spread([run["tickets_per_second"] for run in runs]),
        "exact": all(run["exact"] and not run["failures"] for run in runs),
        "rss": memory,
        "rss_max_last_mb": max(figures["last_mb"] for figures in memory.values()),
        "rss_max_growth_mb": max(figures["growth_mb"] for figures in memory.values()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--kind", choices=("lifecycle", "tickets"), default="lifecycle")
    parser.add_argument("--rate", type=float, default=1000.0, help="tickets started a second")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=512, help="stories in flight")
    parser.add_argument("--sample-seconds", type=float, default=5.0)
    args = parser.parse_args(argv)
    if min(args.rate, args.seconds, args.sample_seconds) <= 0:
        parser.error("--rate, --seconds and --sample-seconds must be positive")
    if args.rounds < 1 or args.concurrency < 1:
        parser.error("--rounds and --concurrency must be at least 1")
    result = bench(
        args.kind, args.rate, args.seconds, args.rounds, args.concurrency, args.sample_seconds
    )
    print(json.dumps(result, ensure_ascii=False))
    return 0 if result["exact"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
