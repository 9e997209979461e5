"""`make chaos`: the embedded stack under load while faults are injected, then an exact audit.

A driver (the simulator's comparison run) plays tickets with their whole lifecycle against
`hotline up --no-simulator`, while an injector, following a seeded plan, kills each service
with SIGKILL (some at a crash point: mid-batch of a consumer, after a relay's publish and
before its mark), kills the broker, freezes it with SIGSTOP, restarts PostgreSQL, cuts one
consumer's database connections for a while, and runs a second replica of dispatch and
metrics that joins and leaves. At the end, with everything drained, it checks:

- every rate's numerator and denominator equal the driver's own tally (the simulator's
  ground truth, counting only what a service acknowledged);
- every ticket intake accepted is known to dispatch, followup and metrics;
- every event a consumer handles was applied by it, once (its processed-event ids);
- no dead letter was written (the driver sends nothing poison);
- nothing waits in an outbox and every consumer group has read its topics to the end.

It prints the faults, the peak backlog, the time to drain and the comparison, and writes
them as JSON. `python -m hotline.chaos --help`; `make test` runs a short plan
(tests/e2e/test_recovery.py).

`--broker kafka` runs the stack on a three-broker Apache Kafka cluster instead of the
embedded tansu: while tickets flow, dispatch and metrics go from one process to two and three
(each a member of its consumer group) and back to one, and the broker that leads most
partitions is killed with SIGKILL and later started again (hotline/kafka_faults.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import httpx
import sqlalchemy as sa

from hotline.embedded import free_port
from hotline.embedded.kafka_cluster import RunningKafkaCluster, start_kafka_cluster
from hotline.kafka_faults import LeaderFaults
from hotline.refill import read_through
from hotline.simulator.client import Endpoints, open_clients
from hotline.simulator.config import RunConfig
from hotline.simulator.report import as_json
from hotline.simulator.run import settle, simulate
from hotline.stack_env import read_stack_env
from hotline.supervisor import StackStatus
from shared.auth.keyfile import KEYS_FILE_NAME, KeyRing
from shared.db import make_engine
from shared.faults import FAULT_DIR_ENV, trigger_path
from shared.kafka import connection_options, dlq_topic
from shared.names import CONSUMES, PUBLISHERS, SERVICE_NAMES, ServiceName, service_named
from shared.offsets import end_offsets, topic_partitions
from shared.settings import Settings

Say = Callable[[str], None]


@dataclass(frozen=True)
class Fault:
    """One fault of the plan: what, to whom, and for how long when it lasts."""

    kind: str
    """kill, crash-point, broker-kill, broker-pause, postgres-restart, db-cut,
    replica-join, replica-leave."""
    target: str = ""
    point: str = ""
    seconds: float = 0.0


Broker = Literal["tansu", "kafka"]


def plan(seed: int, *, short: bool, broker: Broker = "tansu") -> list[Fault]:
    """The faults of a run in a seeded order. Short: one kill per service and one broker
    kill. Full: two kills per service (one at a crash point), a broker kill and a 30 s
    freeze, a PostgreSQL restart, a 30 s database cut and replicas joining and leaving.
    On Kafka, see `kafka_plan`."""
    rng = random.Random(seed)  # noqa: S311 - a reproducible plan, not a secret
    if broker == "kafka":
        return kafka_plan(rng, short=short)
    if short:
        faults = [Fault("kill", name) for name in SERVICE_NAMES] + [Fault("broker-kill")]
        rng.shuffle(faults)
        return faults
    points: dict[ServiceName, str] = {
        "intake": "relay-published",
        "dispatch": "consumer-mid-batch",
        "followup": "relay-published",
        "metrics": "consumer-applied",
    }
    # Crash points need traffic of their kind: they come first, while tickets flow.
    first = [Fault("crash-point", name, points[name]) for name in SERVICE_NAMES]
    first += [Fault("broker-kill"), Fault("db-cut", "metrics", seconds=30)]
    then = [Fault("kill", name) for name in SERVICE_NAMES]
    then += [Fault("broker-pause", seconds=30), Fault("postgres-restart")]
    rng.shuffle(first)
    rng.shuffle(then)
    # Replicas join early and leave late, around the other faults.
    return [
        Fault("replica-join", "dispatch"),
        *first[:3],
        Fault("replica-join", "metrics"),
        *first[3:],
        Fault("replica-leave", "dispatch"),
        *then,
        Fault("replica-leave", "metrics"),
    ]


def kafka_plan(rng: random.Random, *, short: bool) -> list[Fault]:
    """Dispatch and metrics scale to two and three processes while the busiest broker is
    down, and back to one after it returned. Full: a kill -9 of each service as well, and the
    consumers' crash points, in a seeded order while the broker is down or catching up."""
    scale = ("dispatch", "metrics")
    faults = [Fault("replica-join", name) for name in scale]
    faults.append(Fault("leader-kill"))
    faults += [Fault("replica-join", name) for name in scale]
    if not short:
        more = [Fault("kill", name) for name in SERVICE_NAMES]
        more += [
            Fault("crash-point", "dispatch", "consumer-mid-batch"),
            Fault("crash-point", "metrics", "consumer-applied"),
        ]
        rng.shuffle(more)
        faults += [*more[:3], Fault("leader-start"), *more[3:]]
    else:
        faults.append(Fault("leader-start"))
    faults += [Fault("replica-leave", name) for name in scale * 2]
    return faults


@dataclass
class Observed:
    """What the run saw, for the report."""

    faults: list[dict[str, Any]] = field(default_factory=list)
    peak_backlog: int = 0
    peak_backlog_at: float = 0.0
    drain_after_last_ticket_seconds: float = 0.0
    drain_after_last_fault_seconds: float = 0.0
    kafka: dict[str, Any] = field(default_factory=dict)
    """The broker kill's figures on Apache Kafka (hotline/kafka_faults.py)."""


def isolated_stack_env(data_dir: Path) -> tuple[dict[ServiceName, int], dict[str, str]]:
    """Ports and environment for a `hotline up` of its own: its data folder, free ports,
    the embedded broker and database (whatever this shell points at), a short drain."""
    ports: dict[ServiceName, int] = {name: free_port() for name in SERVICE_NAMES}
    env = {
        k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL")
    }
    env.update({f"HOTLINE_{name.upper()}_PORT": str(port) for name, port in ports.items()})
    env.update(
        HOTLINE_DATA_DIR=str(data_dir),
        HOTLINE_EMBEDDED_BROKER_PORT=str(free_port()),
        HOTLINE_EMBEDDED_POSTGRES_PORT=str(free_port()),
        HOTLINE_SHUTDOWN_DRAIN_SECONDS="5",
    )
    return ports, env


class StackUnderTest:
    """`hotline up --no-simulator` in its own data folder, on free ports."""

    def __init__(self, data_dir: Path, kafka: RunningKafkaCluster | None = None) -> None:
        self.data_dir = data_dir
        self.kafka = kafka
        self.fault_dir = data_dir / "faults"
        self.fault_dir.mkdir(parents=True, exist_ok=True)
        self.ports, self.env = isolated_stack_env(data_dir)
        self.env.update(HOTLINE_LOG_LEVEL="WARNING")
        self.env[FAULT_DIR_ENV] = str(self.fault_dir)
        if kafka is not None:
            # As an operator points the stack at a cluster of three: every topic on all three
            # brokers, and the broker drops a producer's retried duplicates.
            self.env.update(
                KAFKA_BOOTSTRAP_SERVERS=kafka.bootstrap_servers,
                HOTLINE_TOPIC_REPLICATION_FACTOR=str(len(kafka.nodes)),
                HOTLINE_KAFKA_IDEMPOTENT_PRODUCER="true",
            )
        else:  # the embedded tansu refuses it (`hotline up` says so to its own services)
            self.env["HOTLINE_KAFKA_IDEMPOTENT_PRODUCER"] = "false"
        self.process: asyncio.subprocess.Process | None = None
        self.output: list[str] = []
        self.replicas: dict[ServiceName, list[asyncio.subprocess.Process]] = {}
        """Processes of a service beyond the one `hotline up` supervises, oldest first."""
        self._reader: asyncio.Task[None] | None = None

    async def start(self, timeout: float = 120) -> None:
        """Start it and wait for "Ready."."""
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "hotline.cli",
            "up",
            "--no-simulator",
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        ready = asyncio.Event()
        self._reader = asyncio.create_task(self._read(ready))
        async with asyncio.timeout(timeout):
            await ready.wait()

    async def _read(self, ready: asyncio.Event) -> None:
        assert self.process is not None
        assert self.process.stdout is not None
        while line := (await self.process.stdout.readline()).decode():
            self.output.append(line)
            if "Ready." in line:
                ready.set()
        if not ready.is_set():
            raise RuntimeError("hotline up ended:\n" + "".join(self.output))

    def settings(self) -> Settings:
        """Settings that reach the stack's broker and database."""
        found = read_stack_env(self.data_dir)
        return Settings(
            kafka_bootstrap_servers=found["KAFKA_BOOTSTRAP_SERVERS"],
            database_url=found["DATABASE_URL"],
            data_dir=self.data_dir,
        )

    def status(self) -> StackStatus:
        """The supervisor's status file."""
        found = StackStatus.load(self.data_dir)
        if found is None:
            raise RuntimeError("no status file")
        return found

    def record(self, name: str) -> dict[str, Any]:
        """One process of the status file."""
        for process in self.status().processes:
            if process["name"] == name:
                return process
        raise KeyError(name)

    def url(self, name: ServiceName) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    async def stop(self, timeout: float = 120) -> int:
        """Ctrl-C, as a person stops it."""
        for replica in (r for group in self.replicas.values() for r in group):
            with contextlib.suppress(ProcessLookupError):
                replica.terminate()
            await replica.wait()
        if self.process is None or self.process.returncode is not None:
            return -1
        self.process.send_signal(signal.SIGINT)
        async with asyncio.timeout(timeout):
            if self._reader is not None:
                with contextlib.suppress(Exception):
                    await self._reader
            return await self.process.wait()


async def until(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    """Poll `check` until true; fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


async def all_ready(stack: StackUnderTest) -> bool:
    """Every service of the stack answers /readyz 200."""
    async with httpx.AsyncClient(timeout=2) as client:
        for name in SERVICE_NAMES:
            try:
                if (await client.get(f"{stack.url(name)}/readyz")).status_code != 200:
                    return False
            except httpx.HTTPError:
                return False
    return True


class Injector:
    """Carries out the faults of a plan against a stack, one after another."""

    def __init__(self, stack: StackUnderTest, observed: Observed, say: Say) -> None:
        self.stack = stack
        self.observed = observed
        self.say = say
        self.began = time.monotonic()
        self.leaders = (
            LeaderFaults(stack.kafka, stack.settings()) if stack.kafka is not None else None
        )

    async def run(self, faults: list[Fault], pause: float) -> None:
        """Each fault in turn, `pause` seconds after the last one recovered."""
        for fault in faults:
            await asyncio.sleep(pause)  # the spacing of the plan, not a wait for a condition
            started = time.monotonic()
            self.say(f"fault: {fault.kind} {fault.target} {fault.point}".rstrip())
            note = await getattr(self, fault.kind.replace("-", "_"))(fault)
            self.observed.faults.append(
                {
                    **asdict(fault),
                    "at_seconds": round(started - self.began, 1),
                    "recovered_after_seconds": round(time.monotonic() - started, 1),
                    "note": note,
                }
            )

    async def _running(self, name: str) -> dict[str, Any]:
        """The status record of `name` once it runs (it may still be restarting)."""
        await until(lambda: _is_running(self.stack, name), 120, f"{name} running")
        return self.stack.record(name)

    async def kill(self, fault: Fault) -> str:
        """SIGKILL a service; wait until the supervisor has it running and ready again."""
        before = await self._running(fault.target)
        pid = before["pid"]
        if pid:
            os.kill(int(pid), signal.SIGKILL)
        await self._restarted(fault.target, int(before["restarts"]))
        return f"pid {pid} killed"

    async def crash_point(self, fault: Fault) -> str:
        """Make a service kill itself when it reaches a crash point; fall back to a plain
        kill if it does not get there within 30 s (no traffic of that kind)."""
        before = await self._running(fault.target)
        trigger = trigger_path(self.stack.fault_dir, fault.target, fault.point, before["pid"])
        trigger.touch()
        try:
            await until(lambda: _gone(trigger), 30, f"{fault.target} to reach {fault.point}")
            note = f"killed itself at {fault.point}"
        except TimeoutError:
            trigger.unlink(missing_ok=True)
            if before["pid"]:
                os.kill(int(before["pid"]), signal.SIGKILL)
            note = f"did not reach {fault.point} in 30 s; killed plainly"
        await self._restarted(fault.target, int(before["restarts"]))
        return note

    async def broker_kill(self, fault: Fault) -> str:
        """SIGKILL the embedded broker; the stack starts a new one and refills it."""
        before = self.stack.record("broker")
        os.kill(int(before["pid"]), signal.SIGKILL)
        await until(
            lambda: _restarts_above(self.stack, "broker", int(before["restarts"])),
            120,
            "a new broker",
        )
        await until(lambda: all_ready(self.stack), 120, "every service ready")
        return f"pid {before['pid']} killed"

    async def broker_pause(self, fault: Fault) -> str:
        """SIGSTOP the broker for the fault's length (the freeze is the fault), then go on."""
        pid = int(self.stack.record("broker")["pid"])
        os.kill(pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(fault.seconds)
        finally:
            os.kill(pid, signal.SIGCONT)
        await until(lambda: all_ready(self.stack), 120, "every service ready")
        return f"pid {pid} stopped for {fault.seconds:g} s"

    async def postgres_restart(self, fault: Fault) -> str:
        """Immediate shutdown of PostgreSQL (SIGQUIT: like a crash, recovery at start)."""
        before = self.stack.record("postgres")
        os.kill(int(before["pid"]), signal.SIGQUIT)
        await until(
            lambda: _restarts_above(self.stack, "postgres", int(before["restarts"])),
            120,
            "PostgreSQL again",
        )
        await until(lambda: all_ready(self.stack), 120, "every service ready")
        return f"pid {before['pid']} shut down"

    async def db_cut(self, fault: Fault) -> str:
        """Terminate every database connection of one service (and its replica) as soon as
        it opens one, for the fault's length: to it, the database is unreachable."""
        settings = self.stack.settings()
        engine = make_engine(settings.database_url, "public", pool_size=1)
        name = f"hotline-{fault.target}"
        ended = 0
        try:
            deadline = time.monotonic() + fault.seconds
            while time.monotonic() < deadline:
                async with engine.connect() as connection:
                    result = await connection.execute(
                        sa.text(
                            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                            "WHERE application_name = :name"
                        ),
                        {"name": name},
                    )
                    ended += int(result.scalar_one())
                await asyncio.sleep(0.1)
        finally:
            await engine.dispose()
        await until(lambda: all_ready(self.stack), 120, "every service ready")
        return f"{ended} connections ended"

    async def replica_join(self, fault: Fault) -> str:
        """A second process of a service joins its consumer group (its own HTTP port)."""
        name: ServiceName = service_named(fault.target)
        settings = self.stack.settings()
        port = free_port()
        env = dict(self.stack.env)
        env.update(
            KAFKA_BOOTSTRAP_SERVERS=settings.kafka_bootstrap_servers,
            DATABASE_URL=settings.database_url,
            HOTLINE_MIGRATE_ON_START="false",
            **{f"HOTLINE_{name.upper()}_PORT": str(port)},
        )
        group = self.stack.replicas.setdefault(name, [])
        log = (self.stack.data_dir / "logs" / f"{name}-replica-{len(group) + 1}.log").open("ab")
        replica = await asyncio.create_subprocess_exec(
            sys.executable, "-m", f"services.{name}", env=env, stdout=log, stderr=log
        )
        group.append(replica)

        async def answers() -> bool:
            async with httpx.AsyncClient(timeout=2) as client:
                with contextlib.suppress(httpx.HTTPError):
                    return (await client.get(f"http://127.0.0.1:{port}/readyz")).is_success
            return False

        await until(answers, 60, f"the {name} replica")
        return f"pid {replica.pid} on port {port}: {len(group) + 1} processes"

    async def replica_leave(self, fault: Fault) -> str:
        """The newest extra process stops as it would be scaled down (SIGTERM: it drains)."""
        group = self.stack.replicas.get(service_named(fault.target), [])
        if not group:
            return "no replica"
        replica = group.pop()
        replica.terminate()
        code = await replica.wait()
        return f"exited with {code}: {len(group) + 1} processes"

    async def leader_kill(self, fault: Fault) -> str:
        """SIGKILL the Kafka broker leading most partitions; recovered once all have a live
        leader (the services are not waited for: the broker stays down for later faults)."""
        if self.leaders is None:
            raise ValueError("leader-kill needs --broker kafka")
        found = await self.leaders.kill_busiest()
        self.observed.kafka["leader_kill"] = found
        return (
            f"node {found['node_id']} led {found['partitions_led']} of {found['partitions']} "
            f"partitions; {found['seconds_without_a_leader']} s until all had a live leader"
        )

    async def leader_start(self, fault: Fault) -> str:
        """Start the killed broker again; recovered once it is back in sync everywhere."""
        if self.leaders is None:
            raise ValueError("leader-start needs --broker kafka")
        found = await self.leaders.start_again()
        self.observed.kafka["leader_start"] = found
        await until(lambda: all_ready(self.stack), 120, "every service ready")
        return ", ".join(f"{k} {v}" for k, v in found.items())

    async def _restarted(self, name: str, restarts: int) -> None:
        await until(lambda: _restarts_above(self.stack, name, restarts), 90, f"{name} again")
        await until(lambda: all_ready(self.stack), 120, "every service ready")


async def _gone(path: Path) -> bool:
    return not path.exists()  # noqa: ASYNC240 - one stat, no waiting


async def _is_running(stack: StackUnderTest, name: str) -> bool:
    record = stack.record(name)
    return record["state"] == "running" and bool(record["pid"])


async def _restarts_above(stack: StackUnderTest, name: str, restarts: int) -> bool:
    record = stack.record(name)
    return int(record["restarts"]) > restarts and record["state"] == "running"


async def backlog(settings: Settings) -> int:
    """Events waiting in every outbox."""
    return await _outbox_count(settings, "published_at IS NULL")


async def events_published(settings: Settings) -> int:
    """Events every outbox has handed to the broker."""
    return await _outbox_count(settings, "published_at IS NOT NULL")


async def _outbox_count(settings: Settings, where: str) -> int:
    engine = make_engine(settings.database_url, "public", pool_size=1)
    try:
        async with engine.connect() as connection:
            total = 0
            for name in PUBLISHERS:
                schema = settings.schema_of(name)
                statement = f'SELECT count(*) FROM "{schema}".outbox WHERE {where}'
                total += int((await connection.execute(sa.text(statement))).scalar_one())
            return total
    finally:
        await engine.dispose()


async def watch_backlog(stack: StackUnderTest, observed: Observed, stop: asyncio.Event) -> None:
    """Sample the outbox backlog every half second, keeping the peak."""
    began = time.monotonic()
    while not stop.is_set():
        with contextlib.suppress(Exception):  # the database may be restarting
            waiting = await backlog(stack.settings())
            if waiting > observed.peak_backlog:
                observed.peak_backlog = waiting
                observed.peak_backlog_at = round(time.monotonic() - began, 1)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)


async def audit(settings: Settings) -> dict[str, Any]:
    """What the stack holds, against what intake accepted."""
    engine = make_engine(settings.database_url, "public", pool_size=1)
    schema = settings.schema_of
    found: dict[str, Any] = {}
    try:
        async with engine.connect() as connection:

            async def scalar(statement: str) -> int:
                return int((await connection.execute(sa.text(statement))).scalar_one())

            found["tickets_accepted"] = await scalar(
                f'SELECT count(*) FROM "{schema("intake")}".tickets'
            )
            known_in: dict[ServiceName, str] = {
                "dispatch": "tickets",
                "followup": "tickets",
                "metrics": "ticket_facts",
            }
            for name, table in known_in.items():
                found[f"tickets_unknown_to_{name}"] = await scalar(
                    f'SELECT count(*) FROM "{schema("intake")}".tickets i '
                    f'WHERE NOT EXISTS (SELECT 1 FROM "{schema(name)}".{table} t '
                    "WHERE t.ticket_id = i.ticket_id)"
                )
            for consumer, upstream in CONSUMES.items():
                for publisher in upstream:
                    # Events of a type this consumer applies, that it has no record of.
                    found[f"events_of_{publisher}_missed_by_{consumer}"] = await scalar(
                        f'SELECT count(*) FROM "{schema(publisher)}".outbox o '
                        f'WHERE o.ce_type IN (SELECT DISTINCT ce_type FROM "{schema(consumer)}"'
                        ".processed_events) AND NOT EXISTS (SELECT 1 FROM "
                        f'"{schema(consumer)}".processed_events p WHERE p.event_id = o.event_id)'
                    )
            found["events_waiting_in_outboxes"] = sum(
                [
                    await scalar(
                        f'SELECT count(*) FROM "{schema(p)}".outbox WHERE published_at IS NULL'
                    )
                    for p in PUBLISHERS
                ]
            )
    finally:
        await engine.dispose()
    found["topics_not_read_to_the_end"] = sorted(
        set(PUBLISHERS) - set(await read_through(settings))
    )
    found["dead_letters"] = await dead_letter_count(settings)
    return found


async def settled_audit(settings: Settings, timeout: float = 60.0) -> dict[str, Any]:
    """The audit once it is clean, or its last answer after `timeout` s. Things happen after
    the driver's last ticket that it does not count: dispatch's sweeper publishes overdue
    notices, consumers commit offsets just after their effects. Lag must come back to zero,
    not be zero at one instant."""
    deadline = time.monotonic() + timeout
    while True:
        found = await audit(settings)
        if clean(found) or time.monotonic() > deadline:
            return found
        await asyncio.sleep(1.0)  # the poll interval of a wait on a condition


async def dead_letter_count(settings: Settings) -> int:
    """Records in the stack's dead-letter topics."""
    from aiokafka import AIOKafkaConsumer

    probe = AIOKafkaConsumer(**connection_options(settings))
    await probe.start()
    try:
        # This stack's own (a cluster may hold other stacks' topics, under other prefixes).
        topics = [dlq_topic(settings.topic(name)) for name in PUBLISHERS]
        found = await topic_partitions(probe, topics)
        partitions = [tp for tps in found.values() for tp in tps]
        if not partitions:
            return 0
        starts = await probe.beginning_offsets(partitions)
        ends = await end_offsets(probe, partitions)
        return sum(ends[tp] - starts[tp] for tp in partitions)
    finally:
        await probe.stop()


def clean(found: dict[str, Any]) -> bool:
    """Whether the audit found nothing lost, doubled, left behind or dead-lettered."""
    return all(value in (0, []) for key, value in found.items() if key != "tickets_accepted")


async def chaos(
    *,
    seed: int,
    short: bool,
    tickets: int,
    rate: float,
    pause: float,
    data_dir: Path,
    say: Say = print,
    broker: Broker = "tansu",
    cluster: RunningKafkaCluster | None = None,
) -> dict[str, Any]:
    """One run: start the stack, drive it while injecting the plan's faults, drain, audit.
    Returns the report (also for JSON); `report["ok"]` says whether all checks passed.

    On Kafka, `cluster` is a running cluster to use (its killed broker is started again
    before this returns); without one, a cluster of three is started in `data_dir`."""
    faults = plan(seed, short=short, broker=broker)
    say(f"chaos: seed {seed}, {tickets} tickets at {rate:g}/s, {len(faults)} faults, on {broker}")
    with contextlib.ExitStack() as cleanup:
        if broker == "tansu":
            cluster = None
        elif cluster is None:
            # Blocks the loop while three JVMs start: nothing else runs yet.
            cluster = start_kafka_cluster(data_dir / "kafka")
            cleanup.callback(cluster.stop)
            say(f"kafka: three brokers on {cluster.bootstrap_servers}")
        return await _run(
            StackUnderTest(data_dir, cluster), faults, seed, short, tickets, rate, pause, say
        )


async def _run(
    stack: StackUnderTest,
    faults: list[Fault],
    seed: int,
    short: bool,
    tickets: int,
    rate: float,
    pause: float,
    say: Say,
) -> dict[str, Any]:
    data_dir = stack.data_dir
    observed = Observed()
    await stack.start()
    injector = Injector(stack, observed, say)
    stop = asyncio.Event()
    watcher = asyncio.create_task(watch_backlog(stack, observed, stop))
    try:
        keys = KeyRing.from_file(data_dir / KEYS_FILE_NAME)
        endpoints = Endpoints(**{name: stack.url(name) for name in SERVICE_NAMES})
        config = RunConfig(
            tickets=tickets, rate=rate, seed=seed, settle_timeout=240, not_known_timeout=180
        )
        async with open_clients(endpoints, 30.0, keys) as clients:
            injecting = asyncio.create_task(injector.run(faults, pause))
            result = await simulate(config, clients, say=say)
            observed.drain_after_last_ticket_seconds = round(result.settle_seconds, 1)
            await injecting
            # Faults may have outlasted the sending: compare again once all are over.
            comparison, waited = await settle(
                clients, result.sent, result.window, result.baseline, config, say=say
            )
            result = replace(result, comparison=comparison)
        observed.drain_after_last_fault_seconds = round(waited, 1)
        found = await settled_audit(stack.settings())
        events = await events_published(stack.settings())
    finally:
        stop.set()
        await watcher
        code = await stack.stop()
        if injector.leaders is not None and injector.leaders.victim is not None:
            await injector.leaders.start_again()  # a run that failed half-way
    report = {
        "seed": seed,
        "short": short,
        "broker": "kafka" if stack.kafka is not None else "tansu",
        "tickets_sent": len(result.sent),
        "events_published": events,
        "kafka": observed.kafka,
        "driver_failures": [str(f) for f in result.failures],
        "faults": observed.faults,
        "peak_backlog": observed.peak_backlog,
        "peak_backlog_at_seconds": observed.peak_backlog_at,
        "drain_after_last_ticket_seconds": observed.drain_after_last_ticket_seconds,
        "drain_after_last_fault_seconds": observed.drain_after_last_fault_seconds,
        "simulation": as_json(result),
        "audit": found,
        "stack_exit_code": code,
        "restarts_said": [line.strip() for line in stack.output if "starting it again" in line],
    }
    report["ok"] = bool(
        result.comparison.match and clean(found) and not result.failures and code == 0
    )
    return report


def render(report: dict[str, Any], say: Say = print) -> None:
    """The report for a person."""
    say("")
    say("faults:")
    for fault in report["faults"]:
        what = f"{fault['kind']} {fault['target']} {fault['point']}".strip()
        say(
            f"  t+{fault['at_seconds']:>6.1f}s  {what:<40} recovered in "
            f"{fault['recovered_after_seconds']:.1f}s  ({fault['note']})"
        )
    say(f"tickets: {report['tickets_sent']}, events published: {report['events_published']}")
    kill, back = (report["kafka"].get(k) for k in ("leader_kill", "leader_start"))
    if kill:
        say(
            f"kafka: node {kill['node_id']} (leader of {kill['partitions_led']} of "
            f"{kill['partitions']} partitions) killed; every partition had a live leader "
            f"{kill['seconds_without_a_leader']} s later"
            + (f"; back in sync {back['in_sync_after_seconds']} s after its start" if back else "")
        )
    say(f"peak backlog: {report['peak_backlog']} events (t+{report['peak_backlog_at_seconds']}s)")
    say(
        "time until /rates matched: "
        f"{report['drain_after_last_ticket_seconds']} s after the last ticket was sent, "
        f"{report['drain_after_last_fault_seconds']} s after the last fault"
    )
    say("rates (expected = the driver's tally; reported = /rates):")
    for row in report["simulation"]["rates"]:
        expected, reported = row["expected"], row["reported"] or {}
        say(
            f"  {'ok ' if row['match'] else 'BAD'} {row['rate']:<32} "
            f"{expected.get('numerator')}/{expected.get('denominator')} vs "
            f"{reported.get('numerator')}/{reported.get('denominator')}"
        )
    say("audit:")
    for key, value in report["audit"].items():
        say(f"  {key}: {value}")
    if report["driver_failures"]:
        say(f"driver failures: {report['driver_failures'][:5]}")
    say("PASS" if report["ok"] else "FAIL")


def main(argv: list[str] | None = None) -> int:
    """`python -m hotline.chaos`: exit 0 when every check passed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=12345)
    parser.add_argument(
        "--short", action="store_true", help="one kill per service, one broker kill"
    )
    parser.add_argument("--tickets", type=int, default=4000)
    parser.add_argument("--rate", type=float, default=13.0, help="tickets started a second")
    parser.add_argument("--pause", type=float, default=3.0, help="seconds between faults")
    parser.add_argument("--data-dir", type=Path, default=Path(".hotline-chaos"))
    parser.add_argument(
        "--broker",
        choices=["tansu", "kafka"],
        default="tansu",
        help="kafka: a three-broker Apache Kafka cluster (java 17+, mvn) instead of tansu",
    )
    parser.add_argument("--json", type=Path, default=Path("chaos-result.json"))
    args = parser.parse_args(argv)
    # A killed broker makes every client of this process log each refused connection.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    data_dir = args.data_dir.resolve()
    if data_dir.exists():
        import shutil

        shutil.rmtree(data_dir)
    report = asyncio.run(
        chaos(
            seed=args.seed,
            short=args.short,
            tickets=args.tickets,
            rate=args.rate,
            pause=args.pause,
            data_dir=data_dir,
            broker=args.broker,
        )
    )
    render(report)
    args.json.write_text(json.dumps(report, indent=1, default=str))
    print(f"(written to {args.json})")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
