"""How fast the metrics service applies events, against the bare consumer loop.

Publishes the events of N tickets (submitted, a transfer, a work order, its first reply, a
callback: five events a ticket) straight to the topics, then times the metrics service
applying all of them from a cold start; the baseline is the same consumer loop with
handlers that do nothing but record the event as processed, in the same run. Needs a
broker and PostgreSQL: KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL, or local ones it starts.

    .venv/bin/python -m benchmarks.bench_metrics_ingest --tickets 2000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import sqlalchemy as sa
from sqlalchemy.engine import make_url

import services.metrics
from hotline.embedded import start_broker, start_postgres
from services.metrics.app import create_app
from shared.app import ServiceDeps, create_service_app
from shared.db import Transaction
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
from shared.kafka import ensure_topics, start_producer
from shared.names import ServiceName
from shared.projections import Projections
from shared.runtime import Runtime, ServiceSpec
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


async def processed_count(runtime: Runtime) -> int:
    async with runtime.database.engine.connect() as connection:
        result = await connection.execute(sa.text("SELECT count(*) FROM processed_events"))
        return int(result.scalar_one())


async def time_until_applied(app: Any, events: int, timeout: float = 1800) -> float:
    started = time.perf_counter()
    async with app.router.lifespan_context(app):
        runtime = app.state.runtime
        deadline = time.monotonic() + timeout
        while await processed_count(runtime) < events:
            if time.monotonic() > deadline:
                raise SystemExit(f"not applied within {timeout}s")
            await asyncio.sleep(0.2)
        return time.perf_counter() - started


async def record_only(tx: Transaction, event: Event) -> None:
    """The baseline handler: nothing but the loop's own bookkeeping."""


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


def bench_settings(kafka: str, database: str) -> Settings:
    """A run of its own: its own database and topics (so its own consumer group)."""
    return Settings(
        kafka_bootstrap_servers=kafka,
        database_url=database,
        topic_prefix=f"bench{uuid.uuid4().hex[:6]}.",
        data_dir=Path(tempfile.mkdtemp(prefix="hotline-bench-data-")),
        log_level="WARNING",
    )


def baseline_app(settings: Settings) -> Any:
    """The metrics consumer with handlers that do nothing: the loop's own cost."""
    events = (
        TicketSubmitted,
        TransferAttempted,
        WorkOrderCreated,
        WorkOrderReplied,
        CallbackLogged,
    )
    projections = Projections[Transaction]()
    for event in events:
        projections.on(event)(record_only)
    spec = ServiceSpec(
        name="metrics",
        title="baseline",
        migrations=Path(services.metrics.__file__).parent / "migrations",
        routers=[],
        publishes=False,
        consumes=("intake", "dispatch", "followup"),
        projections=projections,
    )
    runtime = Runtime(spec, settings)
    deps = ServiceDeps(database=runtime.database, settings=settings, auth=runtime.auth)
    return create_service_app(runtime, deps)


async def run(tickets: int) -> dict[str, Any]:
    async with servers() as (kafka, database):
        metrics = bench_settings(kafka, await fresh_database(database))
        baseline = bench_settings(kafka, await fresh_database(database))
        events = await publish(metrics, tickets)
        await publish(baseline, tickets)
        baseline_seconds = await time_until_applied(baseline_app(baseline), events)
        metrics_seconds = await time_until_applied(create_app(metrics), events)
    return {
        "tickets": tickets,
        "events": events,
        "metrics_seconds": round(metrics_seconds, 2),
        "metrics_events_per_second": round(events / metrics_seconds, 1),
        "baseline_seconds": round(baseline_seconds, 2),
        "baseline_events_per_second": round(events / baseline_seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--tickets", type=int, default=2000)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.tickets))))


if __name__ == "__main__":
    main()
