"""`hotline simulate` end to end: the four services on the real broker and PostgreSQL, the
simulator playing its stories over their HTTP APIs, and `/rates` agreeing with what it sent."""

from __future__ import annotations

from contextlib import AsyncExitStack

import pytest
from rich.console import Console

from hotline.simulator.client import ServiceClients
from hotline.simulator.config import RunConfig
from hotline.simulator.params import SimulatorParams
from hotline.simulator.report import render_table
from hotline.simulator.run import simulate
from shared.names import RATE_NAMES
from tests.support import eventually, running_service, stored_keys

pytestmark = pytest.mark.e2e

SERVICES = ("intake", "dispatch", "followup", "metrics")


async def start_all(stack, settings):
    """Services one after the other (their migrations share Alembic's global state), then
    wait for all of them to join the broker."""
    running = {
        name: await stack.enter_async_context(
            running_service(name, settings, wait_for_broker=False)
        )
        for name in SERVICES
    }
    for service in running.values():
        await eventually(service.runtime.broker_connected.is_set, message="on the broker")
    return running


async def test_a_simulated_run_is_reported_by_rates_exactly_as_it_was_sent(settings):
    # More callbacks than the calibrated 16% so that 60 tickets exercise the callback and
    # satisfaction rates; this seed's 60 stories hold at least one of every outcome (an
    # unanswered call, failed transfers and three-way calls, late and missing replies,
    # unreached and unsatisfied callbacks), so no rate is trivially 0 or 100%.
    params = SimulatorParams().model_copy(update={"callback_rate": 0.6})
    config = RunConfig(
        params=params,
        tickets=60,
        rate=200,
        seed=20251139,
        concurrency=16,
        settle_timeout=45,
        poll_interval=0.2,
    )
    async with AsyncExitStack() as stack:
        running = await start_all(stack, settings)
        keys = await stored_keys(settings, params.departments())
        clients = ServiceClients(**{name: running[name].http for name in SERVICES}, keys=keys)
        result = await simulate(config, clients, say=print)
    output = Console(record=True, width=120)
    render_table(result, output)  # shown with `pytest -s`
    table = output.export_text()
    assert result.failures == []
    assert result.comparison.match, table
    assert result.exit_code == 0
    assert len(result.sent) == 60
    for row in result.comparison.rows:
        expected = row.expected
        assert expected.denominator > 0, row.name
        if row.name != "avg_wait_seconds":
            assert 0 < expected.numerator < expected.denominator, row.name
    assert f"all {len(RATE_NAMES)} rates match" in table
