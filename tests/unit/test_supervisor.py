"""The restart policy of `hotline up` and the status file `hotline status` reads."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from hotline.chaos import Fault, plan
from hotline.supervisor import ProcessRecord, RestartPolicy, StackStatus
from shared.faults import FAULT_DIR_ENV


def test_the_delay_doubles_with_each_exit_in_a_row_up_to_the_maximum():
    policy = RestartPolicy(first_delay=1, max_delay=30)
    assert [policy.delay(n) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]
    assert policy.delay(10_000) == 30  # no overflow however long the loop


def test_a_process_that_ran_long_enough_starts_a_new_series_of_delays():
    policy = RestartPolicy(first_delay=1, max_delay=30, stable_after=60)
    record = ProcessRecord("dispatch")
    record.started(100)
    assert record.exited(1, policy) == 1
    record.started(101)
    assert record.exited(1, policy) == 2  # crashed again at once: longer wait
    record.started(102)
    record.started_monotonic = time.monotonic() - 61  # then it ran a minute
    assert record.exited(137, policy) == 1
    assert record.state == "restarting"
    assert record.last_exit == 137
    assert record.pid is None


def test_a_restarting_process_is_due_only_after_its_delay():
    policy = RestartPolicy(first_delay=30)
    record = ProcessRecord("metrics")
    record.started(7)
    record.exited(1, policy)
    assert not record.due()
    record.restart_at = time.monotonic() - 0.1
    assert record.due()
    record.started(8)
    assert not record.due()


def test_the_status_file_round_trips_without_internal_fields(tmp_path):
    record = ProcessRecord("intake", restarts=2)
    record.started(1234)
    StackStatus.now({"intake": "http://127.0.0.1:1"}, [record]).save(tmp_path)
    loaded = StackStatus.load(tmp_path)
    assert loaded is not None
    assert loaded.processes == [
        {
            "name": "intake",
            "pid": 1234,
            "state": "running",
            "restarts": 2,
            "last_exit": None,
            "since": record.since,
        }
    ]
    assert loaded.age_seconds() < 60
    (tmp_path / "status.json").write_text("{not json")
    assert StackStatus.load(tmp_path) is None


def test_a_chaos_plan_is_reproducible_and_covers_every_fault():
    assert plan(1, short=False) == plan(1, short=False)
    assert plan(1, short=False) != plan(2, short=False)
    full = plan(1, short=False)
    kinds = [fault.kind for fault in full]
    for service in ("intake", "dispatch", "followup", "metrics"):
        assert Fault("kill", service) in full
        assert any(f.kind == "crash-point" and f.target == service for f in full)
    for kind in ("broker-kill", "broker-pause", "postgres-restart", "db-cut"):
        assert kinds.count(kind) == 1
    for service in ("dispatch", "metrics"):
        assert full.index(Fault("replica-leave", service)) > full.index(
            Fault("replica-join", service)
        )
    short = plan(1, short=True)
    assert sorted(f.kind for f in short) == ["broker-kill"] + ["kill"] * 4


def _processes(faults: list[Fault], service: str) -> list[int]:
    """How many processes of `service` run after each fault of the plan."""
    count, counts = 1, []
    for fault in faults:
        if fault.target == service and fault.kind in ("replica-join", "replica-leave"):
            count += 1 if fault.kind == "replica-join" else -1
        counts.append(count)
    return counts


@pytest.mark.parametrize("short", [True, False])
def test_the_kafka_plan_scales_to_three_while_the_busiest_broker_is_down_and_back_to_one(short):
    faults = plan(7, short=short, broker="kafka")
    kinds = [fault.kind for fault in faults]
    assert kinds.count("leader-kill") == kinds.count("leader-start") == 1
    down = range(kinds.index("leader-kill"), kinds.index("leader-start"))
    for service in ("dispatch", "metrics"):
        counts = _processes(faults, service)
        assert max(counts) == 3
        assert counts[-1] == 1
        assert min(counts) >= 1
        assert any(counts[i] == 3 for i in down), f"{service} never at three while down"
    assert not {"broker-kill", "broker-pause", "postgres-restart", "db-cut"} & set(kinds)
    if not short:
        for service in ("intake", "dispatch", "followup", "metrics"):
            assert Fault("kill", service) in faults


def _pass_crash_point(fault_dir, arm: str) -> int:
    """A child process that passes a crash point, armed for itself, another pid, or none."""
    script = (
        "import os, pathlib, sys\n"
        "from shared.faults import crash_point, trigger_path\n"
        f"arm = {arm!r}\n"
        "pid = os.getpid() if arm == 'self' else 1\n"
        "if arm != 'none':\n"
        "    trigger_path(pathlib.Path(sys.argv[1]), 'dispatch', 'consumer-applied', pid).touch()\n"
        "crash_point('dispatch', 'consumer-applied')\n"
    )
    env = {**os.environ, FAULT_DIR_ENV: str(fault_dir)}
    return subprocess.run(
        [sys.executable, "-c", script, str(fault_dir)], env=env, check=False, timeout=60
    ).returncode


def test_a_crash_point_kills_only_the_process_it_was_armed_for(tmp_path):
    assert _pass_crash_point(tmp_path, "self") == -signal.SIGKILL
    assert list(tmp_path.iterdir()) == []  # disarmed by the process that died
    assert _pass_crash_point(tmp_path, "other") == 0  # a replica of the same service
    assert _pass_crash_point(tmp_path, "none") == 0
