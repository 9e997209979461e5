"""Crash recovery of the embedded stack: supervision, refill of a fresh broker, and the
short fault-injection run (`make chaos` runs the long one)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

import httpx
import pytest
import sqlalchemy as sa

from hotline.chaos import chaos, render
from hotline.supervisor import StackStatus, process_alive
from shared.db import make_engine
from tests.e2e.test_intake import ticket
from tests.e2e.test_stack import StackProcess, descendants
from tests.support import eventually, scratch_dir

pytestmark = [pytest.mark.e2e, pytest.mark.embedded]


def record(stack: StackProcess, name: str) -> dict:
    status = StackStatus.load(stack.data_dir)
    assert status is not None
    return next(p for p in status.processes if p["name"] == name)


async def hotline_status(stack: StackProcess) -> subprocess.CompletedProcess[str]:
    """`hotline status` for the stack's data folder, as a person runs it."""
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "hotline.cli", "status", "--data-dir", str(stack.data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**stack.env, "COLUMNS": "200"},
        check=False,
    )


async def pending_in_intake_outbox(database_url: str) -> int:
    engine = make_engine(database_url, "public", pool_size=1)
    try:
        async with engine.connect() as connection:
            return int(
                (
                    await connection.execute(
                        sa.text("SELECT count(*) FROM intake.outbox WHERE published_at IS NULL")
                    )
                ).scalar_one()
            )
    finally:
        await engine.dispose()


async def tickets_counted(stack: StackProcess, client: httpx.AsyncClient) -> int:
    answer = await client.get(f"{stack.url('metrics')}/rates", headers=stack.auth("auditor"))
    if answer.status_code != 200:
        return -1
    return int(answer.json()["rates"]["first_contact_resolution_rate"]["denominator"])


async def test_a_killed_service_is_restarted_and_hotline_status_says_so():
    stack = StackProcess()
    try:
        await stack.start()
        before = record(stack, "dispatch")
        os.kill(before["pid"], signal.SIGKILL)
        line = await stack.wait_for_line("dispatch exited with code -9", timeout=30)
        assert "starting it again in 1s" in line

        async def restarted_and_ready() -> bool:
            now = record(stack, "dispatch")
            if now["restarts"] != 1 or now["state"] != "running":
                return False
            async with httpx.AsyncClient() as client:
                try:
                    return (await client.get(f"{stack.url('dispatch')}/readyz")).is_success
                except httpx.HTTPError:
                    return False

        await eventually(restarted_and_ready, timeout=60, message="dispatch back")
        after = record(stack, "dispatch")
        assert after["pid"] != before["pid"]
        assert after["last_exit"] == -9
        shown = await hotline_status(stack)
        assert shown.returncode == 0, shown.stdout + shown.stderr
        row = next(line for line in shown.stdout.splitlines() if "dispatch" in line)
        assert str(after["pid"]) in row
        assert "-9" in row
        assert "ready" in row
        # The log of the service says it too, and the restarted process shows its count.
        log = (stack.data_dir / "logs" / "dispatch.log").read_text()
        assert "dispatch exited with code -9; starting it again" in log
        async with httpx.AsyncClient() as client:
            metrics = (await client.get(f"{stack.url('dispatch')}/metrics")).text
        assert 'hotline_supervisor_restarts{service="dispatch"} 1.0' in metrics
        # The rest of the stack ran on meanwhile.
        assert record(stack, "intake")["restarts"] == 0
        assert await stack.interrupt() == 0
        shown = await hotline_status(stack)
        assert shown.returncode == 3
        assert "no stack runs" in shown.stdout
    finally:
        await stack.close()


async def test_after_kill_9_of_hotline_up_a_new_start_refills_the_broker_and_loses_nothing():
    """Events published to the old (memory-only) broker but never read by metrics are sent
    again to the new one, and counted once."""
    stack = StackProcess()
    again: StackProcess | None = None
    try:
        await stack.start()
        metrics_pid = record(stack, "metrics")["pid"]
        os.kill(metrics_pid, signal.SIGSTOP)  # metrics reads nothing from now on
        database_url = stack.stack_env()["DATABASE_URL"]
        async with httpx.AsyncClient(timeout=10) as client:
            for _ in range(40):
                created = await client.post(
                    f"{stack.url('intake')}/tickets", json=ticket(), headers=stack.auth("evaluator")
                )
                assert created.status_code == 201
        await eventually(
            lambda: _zero(pending_in_intake_outbox(database_url)),
            timeout=30,
            message="intake's events published to the old broker",
        )
        assert stack.process is not None
        tree = descendants(stack.process.pid)
        stack.process.kill()  # kill -9 of hotline up itself
        await stack.process.wait()
        os.kill(metrics_pid, signal.SIGKILL)  # a stopped process cannot act on SIGTERM
        await eventually(
            lambda: not [pid for pid in tree if process_alive(pid)],
            timeout=60,
            message="every child gone with hotline up",
        )

        again = StackProcess.reusing(stack)
        await again.start()
        assert any("re-sending events" in line for line in again.output), again.output
        async with httpx.AsyncClient(timeout=10) as client:
            await eventually(
                lambda: _equals(tickets_counted(again, client), 40),
                timeout=60,
                message="metrics counts the 40 tickets",
            )
            await again_drained(again, client)
            assert await tickets_counted(again, client) == 40  # once each, not twice
        assert await again.interrupt() == 0
    finally:
        if again is not None and again.process is not None and again.process.returncode is None:
            again.process.kill()
            await again.process.wait()
        await stack.close()


async def again_drained(stack: StackProcess, client: httpx.AsyncClient) -> None:
    """Metrics has read every topic to the end (so a double count would show by now)."""

    async def lag_zero() -> bool:
        text = (await client.get(f"{stack.url('metrics')}/metrics")).text
        lags = [
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("hotline_consumer_lag{")
        ]
        return bool(lags) and sum(lags) == 0

    await eventually(lag_zero, timeout=60, message="metrics caught up")


async def _zero(count: object) -> bool:
    return await count == 0  # type: ignore[misc]


async def _equals(count: object, wanted: int) -> bool:
    return await count == wanted  # type: ignore[misc]


@pytest.mark.fault_run
async def test_short_chaos_run_ends_with_every_figure_exact():
    """One kill -9 of each service and of the broker, under load; then an exact audit."""
    report = await chaos(
        seed=11,
        short=True,
        tickets=300,
        rate=10.0,
        pause=2.0,
        data_dir=scratch_dir("chaos-"),
        say=lambda line: None,
    )
    lines: list[str] = []
    render(report, lines.append)
    assert report["ok"], "\n".join(lines)
    assert len(report["faults"]) == 5
    assert report["audit"]["tickets_accepted"] == 300
    assert len(report["restarts_said"]) >= 4
