"""How fast is `GET /rates` with N tickets stored, against the naive GROUP BY over the facts?

Loads N synthetic tickets' facts (with their transfers, work orders and callbacks, counters
computed by `services.metrics.rates`) straight into the metrics tables with COPY, builds the
cells from them with the same SQL the service uses for repairs, checks that `/rates` and the
naive sum over the facts agree, then times `/rates` and `/rates/by/...` in-process (ASGI),
with and without filters and windows, one request at a time; `healthz_median_ms` is the
HTTP stack's own floor (GET /healthz through the same middleware), and `baseline_median_ms`
the naive full scan. Then it runs metrics as its own process and loads `/rates` and
`/rates/by/city` with 8 connections at once (wrk, 3 rounds of 10 s). Prints one JSON object.

    .venv/bin/python -m benchmarks.bench_rates                     # 20,000 tickets
    .venv/bin/python -m benchmarks.bench_rates --tickets 1000000

Uses DATABASE_URL if set, else starts a throwaway PostgreSQL (hotline.embedded).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from sqlalchemy.engine import make_url

from benchmarks.common import (
    Run,
    parse_wrk,
    spread,
    stop_all,
    store_key,
    wait_answering,
    wrk,
)
from hotline.embedded import free_port, start_postgres
from services.metrics.app import create_app
from services.metrics.commands import rebuild_cells
from services.metrics.models import (
    callback_facts,
    ticket_facts,
    transfer_facts,
    work_order_facts,
)
from services.metrics.rates import (
    ZERO,
    Counts,
    TicketFacts,
    Totals,
    callback_counts,
    rates_of,
    ticket_counts,
    transfer_counts,
    wait_of,
    work_order_counts,
)
from services.metrics.views import RateFilter, add_fact_sums, awaiting_reply, read_totals
from services.metrics.windows import TimeRange
from shared.settings import Settings

CITIES = [f"城市{n:02d}" for n in range(50)]
SCENARIOS = [
    "社保查询",
    "户籍办理",
    "公积金",
    "医保报销",
    "住房保障",
    "交通出行",
    "市场监管",
    "教育入学",
]
DEPARTMENTS = [f"部门{n}" for n in range(10)]
DAYS = 730
CHUNK = 50_000


def synthetic_facts(
    tickets: int, now: datetime, seed: int = 12345
) -> Iterator[dict[str, list[tuple[Any, ...]]]]:
    """Chunks of rows for the four fact tables, all counted (their tickets are known)."""
    rng = random.Random(seed)
    rows: dict[str, list[tuple[Any, ...]]] = {name: [] for name in _COLUMNS}

    def add(table: str, counts: Counts, **values: Any) -> None:
        values.update(counts.values(_COUNTERS[table]))
        rows[table].append(tuple(values[column] for column in _COLUMNS[table]))

    for number in range(tickets):
        ticket_id = f"t{number:09d}"
        submitted = now - timedelta(seconds=rng.randrange(DAYS * 86_400))
        channel = "phone" if rng.random() < 0.7 else "online"
        dims = {
            "counted": True,
            "city": rng.choice(CITIES),
            "channel": channel,
            "scenario": rng.choice(SCENARIOS),
            "submitted_at": submitted,
        }
        answered = rng.random() < 0.966
        wait = round(min(rng.expovariate(1 / 13.7), 300), 1) if channel == "phone" else None
        resolved = answered and rng.random() < 0.6
        replied = callbacks = 0
        if rng.random() < 0.3:
            mode = "transfer" if rng.random() < 0.8 else "three_way"
            connected = rng.random() < (0.78 if mode == "transfer" else 0.95)
            add(
                "transfer_facts",
                transfer_counts(mode, connected),  # type: ignore[arg-type]
                transfer_id=f"x{number}",
                ticket_id=ticket_id,
                department=rng.choice(DEPARTMENTS),
                mode=mode,
                connected=connected,
                at=submitted,
                **dims,
            )
        if rng.random() < 0.4:
            created = submitted + timedelta(hours=1)
            due = created + timedelta(days=7)
            reply_at = quality = None
            if rng.random() < 0.72:
                reply_at = created + timedelta(hours=rng.randrange(1, 9 * 24))
                quality = rng.choices(["definite", "partial", "none"], [78, 15, 7])[0]
                replied = 1
            add(
                "work_order_facts",
                work_order_counts(due, reply_at, quality),  # type: ignore[arg-type]
                work_order_id=f"w{number}",
                ticket_id=ticket_id,
                department=rng.choice(DEPARTMENTS),
                created_known=True,
                created_at=created,
                due_at=due,
                first_reply_id=f"r{number}" if reply_at else None,
                first_reply_at=reply_at,
                first_reply_quality=quality,
                **dims,
            )
        if (resolved or replied) and rng.random() < 0.5:
            callbacks = 1
            reached = rng.random() < 0.85
            satisfaction = rng.choices(
                ["satisfied", "basically_satisfied", "unsatisfied", None], [70, 20, 7, 3]
            )[0]
            add(
                "callback_facts",
                callback_counts(reached, satisfaction),  # type: ignore[arg-type]
                callback_id=f"c{number}",
                ticket_id=ticket_id,
                reached=reached,
                satisfaction=satisfaction if reached else None,
                at=now,
                **dims,
            )
        facts = TicketFacts(
            channel,  # type: ignore[arg-type]
            answered,
            wait_of(wait) if answered else None,
            resolved,
            replied,
            callbacks,
        )
        add(
            "ticket_facts",
            ticket_counts(facts),
            ticket_id=ticket_id,
            answered=answered,
            wait_seconds=facts.wait_seconds,
            resolved_at_first_contact=resolved,
            replied_work_orders=replied,
            callbacks_logged=callbacks,
            **dims,
        )
        if (number + 1) % CHUNK == 0:
            yield rows
            rows.update({name: [] for name in _COLUMNS})
    yield rows


_DIMS = ("counted", "city", "channel", "scenario", "submitted_at")
_TABLES = {
    table.name: table for table in (ticket_facts, transfer_facts, work_order_facts, callback_facts)
}
_LEADING = {
    "ticket_facts": (
        "ticket_id",
        *_DIMS,
        "answered",
        "wait_seconds",
        "resolved_at_first_contact",
        "replied_work_orders",
        "callbacks_logged",
    ),
    "transfer_facts": ("transfer_id", "ticket_id", "department", "mode", "connected", "at", *_DIMS),
    "work_order_facts": (
        "work_order_id",
        "ticket_id",
        "department",
        "created_known",
        "created_at",
        "due_at",
        "first_reply_id",
        "first_reply_at",
        "first_reply_quality",
        *_DIMS,
    ),
    "callback_facts": ("callback_id", "ticket_id", "reached", "satisfaction", "at", *_DIMS),
}
_COUNTERS = {
    name: tuple(c.name for c in table.columns if c.name not in _LEADING[name])
    for name, table in _TABLES.items()
}
_COLUMNS = {name: _LEADING[name] + _COUNTERS[name] for name in _TABLES}


async def load(dsn: str, schema: str, tickets: int, now: datetime) -> float:
    """COPY the facts in; returns seconds taken."""
    started = time.perf_counter()
    connection = await asyncpg.connect(dsn)
    try:
        for chunk in synthetic_facts(tickets, now):
            for name, records in chunk.items():
                if records:
                    await connection.copy_records_to_table(
                        name, records=records, columns=list(_COLUMNS[name]), schema_name=schema
                    )
    finally:
        await connection.close()
    return time.perf_counter() - started


def _ms(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median_ms": round(statistics.median(ordered) * 1000, 2),
        "p95_ms": round(ordered[max(0, int(len(ordered) * 0.95) - 1)] * 1000, 2),
    }


_DATA_DIR = Path(tempfile.gettempdir()) / f"hotline-bench-rates-{os.getpid()}"
"""The service's data folder for the run, removed at its end (`main`)."""


async def run(
    database_url: str,
    tickets: int,
    repeats: int,
    *,
    rounds: int = 3,
    seconds: int = 10,
    connections: int = 8,
) -> dict[str, Any]:
    """Load, build, check, time; the result as a dict."""
    settings = Settings.model_validate(
        {
            "database_url": database_url,
            "schema_prefix": f"bench{uuid.uuid4().hex[:6]}_",
            "kafka_bootstrap_servers": "127.0.0.1:9",  # no broker: only the HTTP side is timed
            "rates_refresh_seconds": 3600,
            # One request at a time measures the computation: no answer reused. The loaded
            # server below shares answers as deployed (HOTLINE_RATES_ANSWER_SECONDS).
            "rates_answer_seconds": 0,
            "data_dir": str(_DATA_DIR),
        }
    )
    schema = settings.schema_of("metrics")
    dsn = make_url(settings.database_url).set(drivername="postgresql").render_as_string(False)
    now = datetime.now(UTC)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        runtime = app.state.runtime
        load_seconds = await load(dsn, schema, tickets, now)
        started = time.perf_counter()
        await rebuild_cells(runtime.database.unit_of_work)
        build_seconds = time.perf_counter() - started
        connection = await asyncpg.connect(dsn)
        try:
            # As autovacuum would leave them: statistics, and the visibility map that lets
            # index-only scans skip the heap.
            await connection.execute(f'VACUUM ANALYZE "{schema}".rate_cells')
            for name in _TABLES:
                await connection.execute(f'VACUUM ANALYZE "{schema}".{name}')
            cells = await connection.fetchval(f'SELECT count(*) FROM "{schema}".rate_cells')
        finally:
            await connection.close()

        baseline = []
        for _ in range(max(3, repeats // 10)):
            started = time.perf_counter()
            naive = await naive_totals(runtime, now)
            baseline.append(time.perf_counter() - started)
        async with runtime.database.read() as db:
            fast = (await read_totals(db, RateFilter(), by=None, now=now))[""]
        if rates_of(fast) != rates_of(naive):
            raise SystemExit("the cells and the naive GROUP BY disagree")

        token = await store_key(settings, "auditor")
        headers = {"Authorization": f"Bearer {token}"}
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://metrics", headers=headers
        ) as client:
            per_query: dict[str, dict[str, float]] = {}
            every: list[float] = []
            for label, path, params in queries(now):
                samples = []
                for attempt in range(repeats + 2):
                    started = time.perf_counter()
                    response = await client.get(path, params=params)
                    elapsed = time.perf_counter() - started
                    response.raise_for_status()
                    if attempt >= 2:  # the first two warm the caches and the statement cache
                        samples.append(elapsed)
                per_query[label] = _ms(samples)
                every += samples
            floor = []
            for _ in range(repeats):
                started = time.perf_counter()
                (await client.get("/healthz")).raise_for_status()
                floor.append(time.perf_counter() - started)
    concurrent = under_load(settings, token, rounds, seconds, connections)
    overall = _ms(every)
    return {
        "tickets": tickets,
        "median_ms": overall["median_ms"],
        "p95_ms": overall["p95_ms"],
        "baseline_median_ms": _ms(baseline)["median_ms"],
        "healthz_median_ms": _ms(floor)["median_ms"],
        "cells": cells,
        "load_seconds": round(load_seconds, 1),
        "build_cells_seconds": round(build_seconds, 1),
        "per_query": per_query,
        "concurrent": concurrent,
    }


LOADED = (("rates", "/rates"), ("rates_by_city", "/rates/by/city"))
"""What is loaded with many connections at once (the issue's goal: p99 under 20 ms)."""


def under_load(
    settings: Settings, token: str, rounds: int, seconds: int, connections: int
) -> dict[str, Any]:
    """`/rates` and `/rates/by/city` with `connections` at once (wrk), against metrics as its
    own process (uvicorn, as deployed), `rounds` times each: requests/s and p50/p99 with
    their spread."""
    if shutil.which("wrk") is None:
        raise SystemExit("needs wrk (Debian: apt-get install wrk)")
    folder = Path(tempfile.mkdtemp(prefix="hotline-bench-rates-"))
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "HOTLINE_SCHEMA_PREFIX": settings.schema_prefix,
        "HOTLINE_DATA_DIR": str(settings.data_dir),
        "HOTLINE_METRICS_PORT": str(port),
        "HOTLINE_LOG_LEVEL": "WARNING",
        "HOTLINE_RATES_REFRESH_SECONDS": "3600",
        "HOTLINE_RATE_LIMIT": "1000000/second",
    }
    log = (folder / "metrics.log").open("ab")
    server = subprocess.Popen(
        [sys.executable, "-m", "services.metrics"], env=env, stdout=log, stderr=log
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_answering(f"{base}/healthz", server)
        runs: dict[str, list[Run]] = {label: [] for label, _ in LOADED}
        for _, path in LOADED:
            wrk(f"{base}{path}", token, 2, connections, folder)  # warm-up, not counted
        for _ in range(rounds):
            for label, path in LOADED:
                runs[label].append(
                    parse_wrk(label, wrk(f"{base}{path}", token, seconds, connections, folder))
                )
    finally:
        stop_all([server])
        shutil.rmtree(folder, ignore_errors=True)
    return {
        "connections": connections,
        "answer_seconds": Settings().rates_answer_seconds,
        "seconds_per_run": seconds,
        **{
            label: {
                "requests_per_second": spread([r.requests_per_second for r in label_runs]),
                "p50_ms": spread([r.p50_ms for r in label_runs]),
                "p99_ms": spread([r.p99_ms for r in label_runs]),
                "errors": sum(r.errors for r in label_runs),
            }
            for label, label_runs in runs.items()
        },
    }


async def naive_totals(runtime: Any, now: datetime) -> Totals:
    """The same totals from a GROUP BY over every fact row (plus the awaiting-reply count)."""
    sums: dict[tuple[str, str], Counts] = defaultdict(lambda: ZERO)
    async with runtime.database.read() as db:
        await add_fact_sums(db, RateFilter(), None, (TimeRange(),), sums)
        awaiting = await awaiting_reply(db, RateFilter(), None, now)
    return Totals(sums[("", "")], awaiting.get("", 0))


def queries(now: datetime) -> list[tuple[str, str, dict[str, str]]]:
    """What is timed: no filter, filters, windows (aligned and not), breakdowns."""
    odd = (now - timedelta(days=30)).isoformat()
    year_start = "2025-01-01T00:00:00+08:00"
    year_end = "2026-01-01T00:00:00+08:00"
    return [
        ("all", "/rates", {}),
        ("city", "/rates", {"city": CITIES[7]}),
        ("department", "/rates", {"department": DEPARTMENTS[3]}),
        (
            "city+channel+scenario+department",
            "/rates",
            {
                "city": CITIES[7],
                "channel": "phone",
                "scenario": SCENARIOS[2],
                "department": DEPARTMENTS[3],
            },
        ),
        ("last 30 days (partial first day)", "/rates", {"since": odd}),
        ("calendar year 2025", "/rates", {"since": year_start, "until": year_end}),
        ("city, last 30 days", "/rates", {"city": CITIES[7], "since": odd}),
        ("by city", "/rates/by/city", {}),
        (
            "by department, year 2025",
            "/rates/by/department",
            {"since": year_start, "until": year_end},
        ),
        ("by city, last 30 days", "/rates/by/city", {"since": odd}),
    ]


def main() -> None:
    """Parse arguments, find or start PostgreSQL, run, print JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickets", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=30, help="timed requests per query")
    parser.add_argument("--rounds", type=int, default=3, help="wrk runs per loaded query")
    parser.add_argument("--seconds", type=int, default=10, help="length of each wrk run")
    parser.add_argument("--connections", type=int, default=8)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    database_url = os.environ.get("DATABASE_URL")
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, _DATA_DIR, True)
        if not database_url:
            data_dir = Path(tempfile.mkdtemp(prefix="hotline-bench-pg-"))
            data_dir.chmod(0o711)  # PostgreSQL runs as an unprivileged user when we are root
            stack.callback(shutil.rmtree, data_dir, True)
            postgres = start_postgres(data_dir)
            stack.callback(postgres.stop)
            database_url = postgres.url
        result = asyncio.run(
            run(
                database_url,
                args.tickets,
                args.repeats,
                rounds=args.rounds,
                seconds=args.seconds,
                connections=args.connections,
            )
        )
    print(json.dumps(result, ensure_ascii=False, indent=2))


if __name__ == "__main__":
    main()
