"""Metrics replicas in one consumer group, with no lock between them: the first one killed
with `kill -9` once it has written a whole batch and before it commits, then two take over
(that two writers really run at once is shown in `tests/integration/test_metrics_writers.py`).

The events of 120 tickets go to the three topics shuffled (replies before their work orders,
callbacks before their tickets), with redeliveries under the same event id and resent facts
under new ones. Once every event is in, each fact is counted once, the cells (summed over
the shards the replicas wrote) equal the cells rebuilt from the facts, and `/rates` gives the
figures the tickets were made with.
"""

from __future__ import annotations

import random
import signal
import sys
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from hotline.embedded import free_port, terminate
from shared.faults import trigger_path
from shared.settings import Settings
from tests.metric_stories import (
    assert_cells_equal_the_facts,
    expected_figures,
    figures_of,
    publish,
    shuffled_records,
)
from tests.support import (
    Child,
    eventually,
    killed_at_crash_point,
    running_service,
    service_environment,
    start,
)

pytestmark = [pytest.mark.e2e, pytest.mark.kafka_leg]

TICKETS = 120


def replica(settings: Settings, folder: Path, name: str, fault_dir: Path | None) -> Child:
    env = service_environment(settings)
    env["HOTLINE_METRICS_PORT"] = str(free_port())
    env["HOTLINE_LOG_LEVEL"] = "INFO"
    if fault_dir is not None:
        env["HOTLINE_FAULT_DIR"] = str(fault_dir)
    return start(name, [sys.executable, "-m", "services.metrics"], folder / f"{name}.log", env)


async def processed(connection: asyncpg.Connection, schema: str) -> int:
    try:
        return int(await connection.fetchval(f'SELECT count(*) FROM "{schema}".processed_events'))
    except asyncpg.UndefinedTableError:
        return 0  # not migrated yet


async def test_two_replicas_and_a_kill_9_mid_commit_count_every_fact_once(settings, tmp_path):
    # Small batches: many transactions, so the replicas' writes interleave.
    settings = settings.model_copy(update={"consumer_batch_size": 40})
    records, distinct = shuffled_records(random.Random(13), range(TICKETS))
    await publish(settings, records)

    fault_dir = tmp_path / "faults"
    fault_dir.mkdir()
    # Replica a starts alone, so its first batch is certainly its (a second member joining
    # first could take every partition and apply everything before a ever got a batch).
    first = replica(settings, tmp_path, "metrics-a", fault_dir)
    trigger_path(fault_dir, "metrics", "consumer-flushed", first.process.pid).touch()
    children = [first]
    url = make_url(settings.database_url).set(drivername="postgresql")
    connection = await asyncpg.connect(url.render_as_string(hide_password=False))
    schema = settings.schema_of("metrics")
    try:
        # at its first written batch
        await killed_at_crash_point(first, fault_dir, "consumer-flushed", timeout=60)
        # Two replicas take over the group and apply the rest, the killed batch included.
        second = replica(settings, tmp_path, "metrics-b", None)
        again = replica(settings, tmp_path, "metrics-a2", None)
        children += [second, again]

        async def all_applied() -> bool:
            return await processed(connection, schema) == distinct

        await eventually(all_applied, timeout=120, message="every event applied once")
        # The history was written in the killed batch's transaction too: nothing of it
        # was lost with the kill, nothing kept twice.
        history = await connection.fetchval(f'SELECT count(*) FROM "{schema}".ticket_events')
        assert history == distinct
        assert second.process.poll() is None, second.tail()
        assert again.process.poll() is None, again.tail()
    finally:
        await connection.close()
        for child in children:
            terminate(child.process, signal.SIGTERM, 10, child.name)

    async with running_service("metrics", settings) as metrics:
        rates = (await metrics.http.get("/rates")).json()["rates"]
        await assert_cells_equal_the_facts(metrics)
    assert figures_of(rates) == expected_figures(range(TICKETS))
