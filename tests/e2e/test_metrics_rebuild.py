"""`python -m services.metrics rebuild` (`hotline metrics rebuild`): metrics recomputed from
the event history while the service keeps answering, events arriving meanwhile included;
killed half-way, it leaves the live figures alone and runs again from the start.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer
from sqlalchemy.engine import make_url

from services.metrics.rebuild import HistoryIncomplete, Rebuild
from shared.kafka import connection_options
from tests.metric_stories import (
    assert_cells_equal_the_facts,
    expected_figures,
    figures_of,
    publish,
    shuffled_records,
    story,
)
from tests.support import eventually, running_service, service_environment, start

pytestmark = [pytest.mark.e2e, pytest.mark.kafka_leg]


async def connect(settings) -> asyncpg.Connection:
    url = make_url(settings.database_url).set(drivername="postgresql")
    return await asyncpg.connect(url.render_as_string(hide_password=False))


async def count_in(connection: asyncpg.Connection, schema: str) -> int:
    try:
        return int(await connection.fetchval(f'SELECT count(*) FROM "{schema}".processed_events'))
    except (asyncpg.UndefinedTableError, asyncpg.InvalidSchemaNameError):
        return 0


async def schemas(connection: asyncpg.Connection, like: str) -> set[str]:
    rows = await connection.fetch("SELECT nspname FROM pg_namespace WHERE nspname LIKE $1", like)
    return {row["nspname"] for row in rows}


async def rates_of(metrics) -> dict[str, tuple[int, int]]:
    return figures_of((await metrics.http.get("/rates")).json()["rates"])


async def send_poison(settings) -> None:
    producer = AIOKafkaProducer(**connection_options(settings))
    await producer.start()
    try:
        await producer.send_and_wait(
            settings.topic("intake"), b"\x00not an event", key=b"R-poison", headers=[]
        )
    finally:
        await producer.stop()


async def test_a_rebuild_replaces_wrong_figures_while_the_service_answers(settings):
    settings = settings.model_copy(update={"rates_refresh_seconds": 0.2})
    first, first_ids = shuffled_records(random.Random(5), range(60))
    later, later_ids = shuffled_records(random.Random(6), range(60, 90))
    schema = settings.schema_of("metrics")
    connection = await connect(settings)
    try:
        async with running_service("metrics", settings) as metrics:
            await publish(settings, first)
            await send_poison(settings)
            await eventually(
                lambda: _is(count_in(connection, schema), first_ids), message="first applied"
            )
            assert await rates_of(metrics) == expected_figures(range(60))
            # A bug made the cells wrong: the rebuild must put them right.
            await connection.execute(
                f'UPDATE "{schema}".rate_cells SET transfers_failed = transfers_failed + 7'
            )
            assert await rates_of(metrics) != expected_figures(range(60))

            seen: list[tuple[int, int]] = []
            rebuild = Rebuild(settings, batch_size=25)
            running = asyncio.create_task(
                rebuild.run(lambda done, total: seen.append((done, total)))
            )
            await publish(settings, later)  # arriving while it runs
            while not running.done():
                answer = await metrics.http.get("/rates")  # the old figures keep answering
                assert answer.status_code == 200, answer.text
                await asyncio.sleep(0.05)
            report = await running

            await eventually(
                lambda: _is(count_in(connection, schema), first_ids + later_ids),
                timeout=30,
                message="every event in the rebuilt schema",
            )
            assert await rates_of(metrics) == expected_figures(range(90))
            history = f'SELECT count(*) FROM "{schema}".ticket_events'
            assert await connection.fetchval(history) == first_ids + later_ids
            # The running service writes to the rebuilt tables after the swap.
            newest = [(owner, event, f"late-{i}") for i, (owner, event) in enumerate(story(90))]
            await publish(settings, newest)
            await eventually(
                lambda: _is(count_in(connection, schema), first_ids + later_ids + 5),
                message="an event after the swap applied",
            )
            assert await rates_of(metrics) == expected_figures(range(91))
            await assert_cells_equal_the_facts(metrics)
        assert await schemas(connection, f"{schema}\\_\\_%") == set()  # shadow and old gone
    finally:
        await connection.close()

    assert report.skipped >= 1  # the poison record, dead-lettered when it first came
    assert report.applied >= first_ids
    assert seen
    assert seen[-1][0] == report.records
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)
    assert list(report.phases) == [
        "prepare",
        "replay",
        "catch up",
        "check",
        "swap",
        "after swap",
        "drop old",
    ]


@contextlib.asynccontextmanager
async def metrics_with(settings, seed: int, tickets: range) -> AsyncIterator[tuple[Any, Any, int]]:
    """A running metrics service with the stories of `tickets` applied, a connection to the
    database, and the number of distinct events."""
    records, distinct = shuffled_records(random.Random(seed), tickets)
    connection = await connect(settings)
    try:
        async with running_service("metrics", settings) as metrics:
            await publish(settings, records)
            await eventually(
                lambda: _is(count_in(connection, settings.schema_of("metrics")), distinct),
                timeout=60,
                message="all applied",
            )
            yield metrics, connection, distinct
    finally:
        await connection.close()


async def test_a_rebuild_killed_half_way_leaves_the_live_figures_and_runs_again(settings, tmp_path):
    schema = settings.schema_of("metrics")
    async with metrics_with(settings, 7, range(300)) as (metrics, connection, distinct):
        before = await rates_of(metrics)
        assert before == expected_figures(range(300))

        env = service_environment(settings)
        command = [sys.executable, "-m", "services.metrics", "rebuild", "--batch", "10"]
        child = start("rebuild", command, tmp_path / "rebuild.log", env)
        try:
            await eventually(
                lambda: _more_than(count_in(connection, f"{schema}__rebuild"), 0),
                timeout=60,
                message="the rebuild under way",
            )
            os.kill(child.process.pid, signal.SIGKILL)
            assert child.process.wait(timeout=10) == -signal.SIGKILL
        finally:
            if child.process.poll() is None:
                child.process.kill()
        assert await count_in(connection, f"{schema}__rebuild") < distinct  # half-way
        assert await rates_of(metrics) == before  # the live schema untouched

        report = await Rebuild(settings, batch_size=500).run()
        assert report.applied == distinct
        assert await rates_of(metrics) == before
        assert await schemas(connection, f"{schema}\\_\\_%") == set()


async def test_a_rebuild_refuses_to_swap_when_the_topics_lost_history(settings):
    """Events the live figures count but the topics no longer hold (retention, a broker that
    restarted empty) would vanish from the figures: the rebuild stops before the swap."""
    schema = settings.schema_of("metrics")
    async with metrics_with(settings, 8, range(20)) as (metrics, connection, distinct):
        before = await rates_of(metrics)
        # An event applied long ago whose record the broker has since dropped.
        await connection.execute(
            f'INSERT INTO "{schema}".processed_events (event_id, ce_type, processed_at)'
            " VALUES ('long-gone', 'hotline.ticket.submitted.v1', now() - interval '1 day')"
        )
        with pytest.raises(HistoryIncomplete, match="1 events the live figures count"):
            await Rebuild(settings, batch_size=100).run()
        assert await rates_of(metrics) == before
        assert await count_in(connection, schema) == distinct + 1  # the live schema kept
        assert await schemas(connection, f"{schema}\\_\\_%") == set()


def test_a_batch_below_one_is_refused_with_the_option_named(settings):
    done = subprocess.run(
        [sys.executable, "-m", "services.metrics", "rebuild", "--batch", "0"],
        env=service_environment(settings),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "--batch must be at least 1" in done.stderr


async def _is(count, expected: int) -> bool:
    return await count == expected


async def _more_than(count, least: int) -> bool:
    return await count > least
