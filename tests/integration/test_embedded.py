"""The embedded stack really starts, serves, persists, stops and cleans up after crashed runs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError, KafkaTimeoutError, RequestTimedOutError

from hotline.embedded import (
    EmbeddedStartError,
    RunningBroker,
    RunningPostgres,
    process,
    start_broker,
    start_postgres,
)

pytestmark = [pytest.mark.integration, pytest.mark.embedded]

REPO_ROOT = Path(__file__).resolve().parents[2]


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `condition` until it holds, failing the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def pid_gone(pid: int) -> bool:
    """No such process, or only a zombie left for some other parent to reap."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def cluster_pids(cluster: Path) -> set[int]:
    """Processes working in `cluster`: every postgres process chdirs to its data directory."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if Path(os.readlink(entry / "cwd")) == cluster:
                pids.add(int(entry.name))
        except OSError:
            continue
    return pids


def asyncpg_dsn(running: RunningPostgres) -> str:
    return running.url.replace("postgresql+asyncpg://", "postgresql://")


@pytest.fixture
def data_dir() -> Iterator[Path]:
    # Not pytest's tmp_path: it sits under a 0700 folder the postgres user cannot traverse.
    path = Path(tempfile.mkdtemp(prefix="hotline-embedded-"))
    path.chmod(0o711)  # mkdtemp makes it 0700; as root, postgres runs as another user
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def broker(data_dir: Path) -> Iterator[RunningBroker]:
    running = start_broker(data_dir)
    yield running
    running.stop()


@pytest.fixture
def postgres_stops() -> Iterator[list[RunningPostgres]]:
    """Servers a test started, stopped at teardown even if the test failed half-way."""
    started: list[RunningPostgres] = []
    yield started
    for running in started:
        running.stop()


# ----------------------------------------------------------------------------------------------
# Broker
# ----------------------------------------------------------------------------------------------


async def test_broker_round_trip_then_stop(broker: RunningBroker) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers)
    await producer.start()
    try:
        await producer.send_and_wait("embedded.check", b"hello", key=b"ticket-1")
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        "embedded.check",
        bootstrap_servers=broker.bootstrap_servers,
        auto_offset_reset="earliest",  # no group: skips the join/rebalance round trips
    )
    await consumer.start()
    try:
        message = await asyncio.wait_for(consumer.getone(), timeout=15)
    finally:
        await consumer.stop()
    assert (message.key, message.value) == (b"ticket-1", b"hello")

    broker.stop()
    assert broker.process.poll() is not None  # exited and reaped: no zombie
    with pytest.raises(ProcessLookupError):
        os.kill(broker.process.pid, 0)
    broker.stop()  # idempotent
    assert "listening on" in broker.log_path.read_text()


async def test_paused_broker_times_out_then_recovers(broker: RunningBroker) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers, request_timeout_ms=1000)
    await producer.start()
    try:
        await producer.send_and_wait("embedded.outage", b"before")
        broker.pause()
        with pytest.raises((RequestTimedOutError, KafkaTimeoutError)):
            await asyncio.wait_for(producer.send_and_wait("embedded.outage", b"during"), 15)
        broker.resume()
        deadline = time.monotonic() + 15
        while True:  # the producer may need a reconnect or a retry after the outage
            try:
                await producer.send_and_wait("embedded.outage", b"after")
                break
            except KafkaError:
                if time.monotonic() >= deadline:
                    raise
    finally:
        broker.resume()
        await producer.stop()

    broker.pause()
    broker.stop(timeout=5)  # a frozen broker still stops: stop() also sends SIGCONT
    assert broker.process.returncode == 0  # tansu exits cleanly on SIGTERM, no SIGKILL needed


@contextlib.contextmanager
def first_port_taken(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """A port another socket holds, handed out as the first "free" port; the next is free."""
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        ports = iter([taken, process.free_port()])
        monkeypatch.setattr(process, "free_port", lambda: next(ports))
        yield taken


def test_broker_retries_when_its_chosen_port_is_taken(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with first_port_taken(monkeypatch) as taken:
        running = start_broker(data_dir)
        try:
            assert running.port != taken
        finally:
            running.stop()
        # An explicit port is the caller's choice: no retry, a clear error.
        with pytest.raises(EmbeddedStartError, match="exited"):
            start_broker(data_dir, port=taken, ready_timeout=10)


# ----------------------------------------------------------------------------------------------
# PostgreSQL
# ----------------------------------------------------------------------------------------------


async def test_postgres_data_survives_a_restart(
    data_dir: Path, postgres_stops: list[RunningPostgres]
) -> None:
    first = start_postgres(data_dir)
    postgres_stops.append(first)
    assert first.url.startswith("postgresql+asyncpg://postgres@127.0.0.1:")
    assert first.url.endswith("/hotline")
    conn = await asyncpg.connect(asyncpg_dsn(first))
    try:
        await conn.execute("CREATE TABLE ticket (id int PRIMARY KEY, title text)")
        await conn.execute("INSERT INTO ticket VALUES (1, '噪音扰民')")
    finally:
        await conn.close()
    first.stop()
    assert first.process.poll() is not None
    assert cluster_pids(first.data_path) == set()
    first.stop()  # idempotent

    second = start_postgres(data_dir)
    postgres_stops.append(second)
    conn = await asyncpg.connect(asyncpg_dsn(second))
    try:
        assert await conn.fetchval("SELECT title FROM ticket WHERE id = 1") == "噪音扰民"
    finally:
        await conn.close()
    second.stop()
    assert cluster_pids(second.data_path) == set()
    assert "database system is shut down" in second.log_path.read_text()


async def test_postmaster_left_by_a_crashed_run_is_stopped(
    data_dir: Path, postgres_stops: list[RunningPostgres], caplog: pytest.LogCaptureFixture
) -> None:
    orphan = start_postgres(data_dir)
    orphan_process = orphan.process  # kept only to reap it; the module no longer knows it
    del orphan  # a crashed `hotline up` never calls stop()

    running = start_postgres(data_dir)
    postgres_stops.append(running)
    assert "left running" in caplog.text
    orphan_process.wait(timeout=10)
    assert running.process.pid != orphan_process.pid
    assert orphan_process.pid not in cluster_pids(running.data_path)
    conn = await asyncpg.connect(asyncpg_dsn(running))
    try:
        assert await conn.fetchval("SELECT 1") == 1
    finally:
        await conn.close()
    running.stop()
    assert cluster_pids(running.data_path) == set()


def test_postgres_retries_when_its_chosen_port_is_taken(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, postgres_stops: list[RunningPostgres]
) -> None:
    with first_port_taken(monkeypatch) as taken:
        running = start_postgres(data_dir)
        postgres_stops.append(running)
        assert running.port != taken
        assert "already in use" in running.log_path.read_text()
        running.stop()
        with pytest.raises(EmbeddedStartError, match="could not bind"):
            start_postgres(data_dir, port=taken)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands the cluster to another user")
def test_unreachable_data_dir_is_explained() -> None:
    hidden = Path(tempfile.mkdtemp(prefix="hotline-embedded-"))  # 0700, owned by root
    try:
        with pytest.raises(EmbeddedStartError, match="HOTLINE_DATA_DIR") as caught:
            start_postgres(hidden / "nested")
        assert str(hidden) in str(caught.value)
        assert (hidden.stat().st_mode & 0o777) == 0o700  # we never chmod the user's folders
    finally:
        shutil.rmtree(hidden, ignore_errors=True)


# ----------------------------------------------------------------------------------------------
# Both: children die with an abruptly killed parent
# ----------------------------------------------------------------------------------------------

CRASHING_PARENT = textwrap.dedent(
    """
    import json, os, signal, sys
    from pathlib import Path
    from hotline.embedded import start_broker, start_postgres

    data_dir = Path(sys.argv[1])
    broker = start_broker(data_dir)
    postgres = start_postgres(data_dir)
    print(json.dumps({"broker": broker.process.pid, "postgres": postgres.process.pid}), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_children_die_when_the_parent_is_killed(data_dir: Path) -> None:
    parent = subprocess.run(
        [sys.executable, "-c", CRASHING_PARENT, str(data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
        check=False,
    )
    assert parent.returncode == -signal.SIGKILL, parent.stderr
    pids = json.loads(parent.stdout)
    wait_until(lambda: pid_gone(pids["broker"]), 10, "the orphaned broker to exit")
    wait_until(lambda: pid_gone(pids["postgres"]), 30, "the orphaned postmaster to exit")
    cluster = data_dir.resolve() / "postgres"
    wait_until(lambda: not cluster_pids(cluster), 10, "all postgres processes to exit")
    assert "fast shutdown request" in (data_dir / "logs" / "postgres.log").read_text()
