"""One runner, one failure policy: passing failures back off, lasting ones are reported."""

import asyncio

from prometheus_client import REGISTRY

from shared.background import Periodic, Runner
from shared.retry import Transient
from tests.support import eventually


class Scripted:
    """Background work that fails as told, then succeeds; counts its steps."""

    def __init__(self, name, failures, *, then=0.0):
        self.name = name
        self.max_backoff = 0.01
        self.failures = list(failures)
        self.steps = 0
        self.then = then

    async def step(self):
        self.steps += 1
        if self.failures:
            raise self.failures.pop(0)
        return self.then


def counted(metric, service, component):
    value = REGISTRY.get_sample_value(
        f"hotline_{metric}_total", {"service": service, "component": component}
    )
    return value or 0.0


async def test_a_passing_failure_is_retried_counted_as_transient_and_not_reported():
    work = Scripted("relay-t", [Transient("broker away"), ConnectionError("db away")], then=None)
    runner = Runner("svc-t")
    await asyncio.wait_for(runner.start(work, until=asyncio.Event()), timeout=5)
    assert work.steps == 3
    assert counted("transient_errors", "svc-t", "relay-t") == 2
    assert counted("permanent_errors", "svc-t", "relay-t") == 0
    assert runner.problems() == {}


async def test_a_lasting_failure_is_reported_with_its_reason_until_a_step_succeeds():
    work = Scripted("sweeper-p", [ValueError("bad row"), ValueError("bad row")], then=0.01)
    runner = Runner("svc-p")
    stop = asyncio.Event()
    seen = []
    work_step = work.step

    async def watched_step():
        seen.append(dict(runner.problems()))
        return await work_step()

    work.step = watched_step
    task = runner.start(work, until=stop)
    await eventually(lambda: work.steps >= 4, timeout=5)
    stop.set()
    await task
    # Before the second and third step the first failure was on record; then it cleared.
    assert seen[1] == {"sweeper-p": "failed: ValueError('bad row')"}
    assert seen[2] == {"sweeper-p": "failed: ValueError('bad row')"}
    assert seen[3] == {}
    assert runner.problems() == {}
    assert counted("permanent_errors", "svc-p", "sweeper-p") == 2


async def test_stop_cancels_work_that_does_not_end_by_itself():
    never = asyncio.Event()

    class Stuck:
        name = "stuck"
        max_backoff = 1.0

        async def step(self):
            await never.wait()

    runner = Runner("svc-s")
    task = runner.start(Stuck(), until=None)
    await runner.stop(timeout=0.05)
    assert task.cancelled()


async def test_periodic_work_runs_at_once_then_every_interval_and_a_wakeup_cuts_the_wait():
    calls = []

    async def action():
        calls.append(asyncio.get_running_loop().time())

    wakeup, stop = asyncio.Event(), asyncio.Event()
    runner = Runner("svc-w")
    task = runner.start(
        Periodic("tick", action, interval=60, max_backoff=1), until=stop, wakeup=wakeup
    )
    await eventually(lambda: len(calls) == 1, timeout=2)
    wakeup.set()
    await eventually(lambda: len(calls) == 2, timeout=2, message="woken before the interval")
    stop.set()
    await asyncio.wait_for(task, timeout=2)
    assert len(calls) == 2
