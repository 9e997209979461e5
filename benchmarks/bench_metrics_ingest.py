"""How fast metrics applies events: one replica, two replicas, against its consumer loop with
no-op handlers and a bare aiokafka consumer, in the same run.

Publishes the events of N tickets (submitted, a transfer, a work order, its first reply, a
callback: five events a ticket) straight to the topics, once per variant (each has its own
topics, consumer group and database), then starts the variant's worker processes
(`benchmarks.metrics_worker`) and times them from the first event applied to the last, so
the start, migrations and group join are left out. Each variant runs `--rounds` times; the
result gives each figure's median, lowest and highest, and checks that the cells count every
ticket. After the one-replica run, the code of `hotline metrics rebuild` recomputes that
database from the same topics (start, migrations and swap included), timed in records per
second. Needs a broker and PostgreSQL: KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL, or local ones
it starts.

    .venv/bin/python -m benchmarks.bench_metrics_ingest --tickets 10000 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer
from sqlalchemy.engine import make_url

from benchmarks.common import machine, spread, stop_all
from hotline.embedded import start_broker, start_postgres
from services.metrics.rebuild import Rebuild
from shared.envelope import encode, event_data
from shared.events import (
    CallbackLogged,
    CallOutcome,
    Event,
    TicketSubmitted,
    TransferAttempted,
    WorkOrderCreated,
    WorkOrderReplied,
)
from shared.kafka import connection_options, ensure_topics, start_producer
from shared.names import ServiceName
from shared.settings import Settings


def stories(tickets: int) -> Iterator[tuple[ServiceName, Event]]:
    """(topic owner, event) for N tickets, five events each."""
    start = datetime(2025, 3, 3, 9, tzinfo=UTC)
    for n in range(tickets):
        ticket = f"bench-{n}"
        at = start + timedelta(minutes=n)
        yield (
            "intake",
            TicketSubmitted(
                ticket_id=ticket,
                city=f"city-{n % 30}",
                channel="phone",
                scenario=f"s{n % 5}",
                category="help",
                submitted_at=at,
                call=CallOutcome(
                    answered=True, wait_seconds=10 + n % 20, resolved_at_first_contact=n % 2 == 0
                ),
            ),
        )
        yield (
            "dispatch",
            TransferAttempted(
                ticket_id=ticket,
                transfer_id=f"x-{n}",
                department=f"d{n % 8}",
                mode="transfer",
                connected=n % 4 != 0,
                at=at + timedelta(minutes=1),
            ),
        )
        yield (
            "dispatch",
            WorkOrderCreated(
                ticket_id=ticket,
                work_order_id=f"w-{n}",
                department=f"d{n % 8}",
                created_at=at + timedelta(minutes=2),
                due_at=at + timedelta(days=7),
                due_working_days=5,
                calendar_source="chinesecalendar",
            ),
        )
        yield (
            "dispatch",
            WorkOrderReplied(
                ticket_id=ticket,
                work_order_id=f"w-{n}",
                reply_id=f"r-{n}",
                department=f"d{n % 8}",
                quality="definite",
                at=at + timedelta(days=2 + n % 9),
                first=True,
            ),
        )
        yield (
            "followup",
            CallbackLogged(
                ticket_id=ticket,
                callback_id=f"c-{n}",
                reached=True,
                satisfaction="satisfied",
                at=at + timedelta(days=12),
            ),
        )


async def publish(settings: Settings, tickets: int) -> int:
    await ensure_topics(settings)
    producer = await start_producer(settings, client_id="bench")
    try:
        futures = []
        for owner, event in stories(tickets):
            record = encode(
                event_id=str(uuid.uuid4()),
                ce_type=event.ce_type,
                source=f"/bench/{owner}",
                time=event.occurred_at(),
                key=event.ticket_id,
                data=event_data(event),
            )
            futures.append(
                await producer.send(
                    settings.topic(owner), record.value, key=record.key, headers=record.headers
                )
            )
        await asyncio.gather(*futures)
        return len(futures)
    finally:
        await producer.stop()


@contextlib.asynccontextmanager
async def servers() -> AsyncIterator[tuple[str, str]]:
    """Existing servers from the environment, or local ones for the run."""
    kafka, database = os.environ.get("KAFKA_BOOTSTRAP_SERVERS"), os.environ.get("DATABASE_URL")
    data_dir = Path(tempfile.mkdtemp(prefix="hotline-bench-"))
    data_dir.chmod(0o711)
    broker = postgres = None
    try:
        if not kafka:
            broker = start_broker(data_dir)
            kafka = broker.bootstrap_servers
        if not database:
            postgres = start_postgres(data_dir)
            database = postgres.url
        yield kafka, database
    finally:
        for server in (broker, postgres):
            if server is not None:
                server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


async def fresh_database(url: str) -> str:
    parsed = make_url(url)
    name = f"bench_{uuid.uuid4().hex[:10]}"
    admin = parsed.set(drivername="postgresql", database="postgres")
    connection = await asyncpg.connect(admin.render_as_string(hide_password=False))
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    return parsed.set(database=name).render_as_string(hide_password=False)


_DATA_ROOT = Path(tempfile.gettempdir()) / f"hotline-bench-data-{os.getpid()}"
"""The variants' data folders, removed at the end of the run."""


def bench_settings(kafka: str, database: str) -> Settings:
    """A run of its own: its own database and topics (so its own consumer group)."""
    return Settings(
        kafka_bootstrap_servers=kafka,
        database_url=database,
        topic_prefix=f"bench{uuid.uuid4().hex[:6]}.",
        data_dir=_DATA_ROOT / uuid.uuid4().hex,
        log_level="WARNING",
    )


async def processed_count(connection: asyncpg.Connection) -> int:
    return int(await connection.fetchval("SELECT count(*) FROM metrics.processed_events"))


async def cells_exact(connection: asyncpg.Connection, tickets: int) -> bool:
    """The all-time total of tickets in the cells is the number published."""
    total = await connection.fetchval(
        "SELECT sum(tickets) FROM metrics.rate_cells WHERE grouping_set = 0 AND grain = 'all'"
    )
    return bool(total == tickets)


def worker_env(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "DATABASE_URL": settings.database_url,
        "HOTLINE_TOPIC_PREFIX": settings.topic_prefix,
        "HOTLINE_DATA_DIR": str(settings.data_dir),
        "HOTLINE_LOG_LEVEL": "WARNING",
        "HOTLINE_KAFKA_IDEMPOTENT_PRODUCER": "false",
    }


async def applied_rate(
    settings: Settings, events: int, replicas: int, *, noop: bool, timeout: float = 1800
) -> tuple[float, asyncpg.Connection]:
    """Events/s of `replicas` worker processes, from the first event applied to the last (the
    start, migrations and group join are not counted)."""
    command = [sys.executable, "-m", "benchmarks.metrics_worker", *(["--noop"] if noop else [])]
    env = worker_env(settings)
    workers = [subprocess.Popen(command, env=env) for _ in range(replicas)]  # noqa: ASYNC220
    connection = await asyncpg.connect(
        make_url(settings.database_url).set(drivername="postgresql").render_as_string(False)
    )
    try:
        deadline = time.monotonic() + timeout
        first: tuple[float, int] | None = None
        while True:
            if time.monotonic() > deadline or any(w.poll() is not None for w in workers):
                raise SystemExit(f"not applied within {timeout}s, or a worker exited")
            try:
                count = await processed_count(connection)
            except asyncpg.UndefinedTableError:
                count = 0  # not migrated yet
            now = time.perf_counter()
            if count and first is None:
                first = (now, count)
            if count >= events and first is not None:
                if count == first[1]:
                    raise SystemExit("all applied before a second look: use more --tickets")
                return (events - first[1]) / (now - first[0]), connection
            await asyncio.sleep(0.05)
    finally:
        stop_all(workers)


async def kafka_alone_rate(settings: Settings, events: int) -> float:
    """Records/s of a bare aiokafka consumer reading the same topics (no group, no database)."""
    topics = [settings.topic(owner) for owner in ("intake", "dispatch", "followup")]
    consumer = AIOKafkaConsumer(
        *topics,
        **connection_options(settings),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        seen, first, first_batch = 0, 0.0, 0
        while seen < events:
            batches = await consumer.getmany(timeout_ms=200, max_records=5000)
            got = sum(len(records) for records in batches.values())
            if got and not seen:
                first, first_batch = time.perf_counter(), got
            seen += got
        return (events - first_batch) / (time.perf_counter() - first)
    finally:
        await consumer.stop()


VARIANTS = ("kafka_alone", "noop_loop", "metrics_1", "metrics_2")


async def one_round(kafka: str, database: str, tickets: int) -> dict[str, float | bool]:
    """Each variant on topics and a database of its own, the same events."""
    figures: dict[str, float | bool] = {}
    for variant in VARIANTS:
        settings = bench_settings(kafka, await fresh_database(database))
        events = await publish(settings, tickets)
        if variant == "kafka_alone":
            figures[variant] = await kafka_alone_rate(settings, events)
            continue
        replicas = 2 if variant == "metrics_2" else 1
        rate, connection = await applied_rate(
            settings, events, replicas, noop=variant == "noop_loop"
        )
        try:
            figures[variant] = rate
            if variant != "noop_loop":
                figures[f"{variant}_exact"] = await cells_exact(connection, tickets)
            if variant == "metrics_1":
                report = await Rebuild(settings, batch_size=5000).run()
                figures["rebuild"] = report.records / report.seconds
                figures["rebuild_exact"] = await cells_exact(connection, tickets)
        finally:
            await connection.close()
    return figures


async def run(tickets: int, rounds: int) -> dict[str, Any]:
    try:
        async with servers() as (kafka, database):
            results = [await one_round(kafka, database, tickets) for _ in range(rounds)]
    finally:
        shutil.rmtree(_DATA_ROOT, ignore_errors=True)
    rates = {
        variant: spread([float(r[variant]) for r in results]) for variant in (*VARIANTS, "rebuild")
    }
    return {
        "benchmark": "metrics events applied per second (real mix: 5 events per ticket)",
        "tickets": tickets,
        "events": tickets * 5,
        "rounds": rounds,
        "machine": machine(),
        "events_per_second": rates,
        "two_replicas_vs_one": round(
            rates["metrics_2"]["median"] / rates["metrics_1"]["median"], 2
        ),
        "metrics_vs_noop_loop": round(
            rates["metrics_1"]["median"] / rates["noop_loop"]["median"], 3
        ),
        "rebuild_minutes_for_5_million_events": round(
            5_000_000 / rates["rebuild"]["median"] / 60, 1
        ),
        "exact": all(r[k] for r in results for k in r if k.endswith("_exact")),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--tickets", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    result = asyncio.run(run(args.tickets, args.rounds))
    print(json.dumps(result))
    raise SystemExit(0 if result["exact"] else 1)


if __name__ == "__main__":
    main()
