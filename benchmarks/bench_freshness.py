"""How fresh are the figures: from `POST /tickets` answered to the ticket applied by metrics,
at a paced rate (200 tickets/s by default), over `--rounds` runs.

Starts a broker and PostgreSQL of its own (the embedded ones), intake and metrics as their
own processes, posts tickets at the rate for `--seconds`, waits until metrics has applied
them all, then reads each ticket's delay from the database: the time its event entered
intake's outbox (the request's one statement, just before the answer) to the time metrics's
batch that applied it began (`processed_events.processed_at`). `/rates` may answer with an
answer up to `HOTLINE_RATES_ANSWER_SECONDS` (0.25 s) older than that. Prints one JSON object.

    .venv/bin/python -m benchmarks.bench_freshness --rate 200 --seconds 30 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
from sqlalchemy.engine import make_url

from benchmarks.bench_intake import BODY
from benchmarks.common import embedded_servers, machine, spread, store_key
from shared.settings import Settings


@dataclass
class Posted:
    """What a paced run sent: `due` tickets were scheduled, `accepted` got a 201, `failed`
    another answer or none; `accepted + failed < due` when the stack could not keep up."""

    due: int
    accepted: int
    failed: int


async def post_paced(
    url: str, token: str, rate: float, seconds: float, *, in_flight: int = 16
) -> Posted:
    """POST tickets at `rate` a second for `seconds`, at most `in_flight` at once: a ticket
    whose turn comes while all are busy waits, and none starts after `seconds`. (httpx scans
    every connection of its pool, and every queued request, for each request: a large pool,
    or requests piling up in it, made the load generator itself the bottleneck.)"""
    headers = {"Authorization": f"Bearer {token}"}
    accepted = failed = 0
    slots = asyncio.Semaphore(in_flight)
    limits = httpx.Limits(max_connections=in_flight)
    async with httpx.AsyncClient(headers=headers, limits=limits, timeout=30) as client:

        async def post() -> None:
            nonlocal accepted, failed
            try:
                answer = await client.post(url, json=BODY)
            except httpx.HTTPError:
                failed += 1
                return
            finally:
                slots.release()
            if answer.status_code == 201:
                accepted += 1
            else:
                failed += 1

        started = time.monotonic()
        tasks = []
        due = int(rate * seconds)
        for n in range(due):
            await asyncio.sleep(max(0.0, started + n / rate - time.monotonic()))
            await slots.acquire()
            if time.monotonic() - started >= seconds:
                slots.release()
                break
            tasks.append(asyncio.create_task(post()))
        await asyncio.gather(*tasks)
    return Posted(due, accepted, failed)


DELAYS = """
SELECT extract(epoch FROM applied.processed_at - sent.created_at) AS seconds
FROM metrics.processed_events AS applied
JOIN intake.outbox AS sent USING (event_id)
WHERE sent.created_at >= $1
"""


async def one_round(dsn: str, intake: str, token: str, rate: float, seconds: float) -> Any:
    connection = await asyncpg.connect(dsn)
    try:
        since = await connection.fetchval("SELECT now()")
        posted = await post_paced(f"{intake}/tickets", token, rate, seconds)
        accepted = posted.accepted
        deadline = time.monotonic() + 120
        while True:
            applied = await connection.fetchval(
                "SELECT count(*) FROM metrics.processed_events AS applied"
                " JOIN intake.outbox AS sent USING (event_id) WHERE sent.created_at >= $1",
                since,
            )
            if applied >= accepted or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        delays = sorted(float(row["seconds"]) for row in await connection.fetch(DELAYS, since))
    finally:
        await connection.close()

    def quantile(q: float) -> float:
        return round(delays[min(len(delays) - 1, int(q * len(delays)))], 3) if delays else 0.0

    return {
        "posted": posted.due,
        "accepted": accepted,
        "failed": posted.failed,
        "applied": len(delays),
        "p50_seconds": quantile(0.5),
        "p99_seconds": quantile(0.99),
        "max_seconds": round(delays[-1], 3) if delays else 0.0,
    }


def bench(rate: float, seconds: float, rounds: int) -> dict[str, Any]:
    with embedded_servers("freshness") as servers:
        intake = servers.start_services("intake", "metrics")["intake"].url
        token = asyncio.run(store_key(Settings(database_url=servers.database_url)))
        dsn = make_url(servers.database_url).set(drivername="postgresql").render_as_string(False)
        runs = [asyncio.run(one_round(dsn, intake, token, rate, seconds)) for _ in range(rounds)]
    return {
        "benchmark": "freshness: POST /tickets answered -> applied by metrics",
        "rate_per_second": rate,
        "seconds_per_run": seconds,
        "rounds": rounds,
        "machine": machine(),
        "runs": runs,
        "p50_seconds": spread([run["p50_seconds"] for run in runs]),
        "p99_seconds": spread([run["p99_seconds"] for run in runs]),
        "accepted_all": all(run["accepted"] == run["posted"] for run in runs),
        "applied_all": all(run["applied"] == run["accepted"] for run in runs),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rate", type=float, default=200.0, help="tickets a second")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.seconds <= 0 or args.rounds < 1:
        parser.error("--rate and --seconds must be positive, --rounds at least 1")
    result = bench(args.rate, args.seconds, args.rounds)
    print(json.dumps(result, ensure_ascii=False))
    return 0 if result["accepted_all"] and result["applied_all"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
