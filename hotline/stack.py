"""`hotline up`: the whole stack on one machine, started and stopped in order.

Unless `KAFKA_BOOTSTRAP_SERVERS` / `DATABASE_URL` point at existing servers, it starts a
local broker (tansu) and a local PostgreSQL under the data folder, creates the topics,
migrates every service's schema, starts the four services as child processes and waits.
On Ctrl-C or SIGTERM it stops the services one by one in the order events flow (each
drains its consumer and outbox), then the broker, then the database.

It supervises what it started (`hotline.supervisor`): a service that exits on its own is
started again after a growing delay, said on the console and in the service's log; the
rest of the stack runs on. An embedded broker or database that dies is started again too.
`<data dir>/status.json` says what runs, its restarts and its last exit (`hotline status`).

The embedded broker keeps records in memory only. Every time the stack starts one (at
start, after it died, after a recycle) it first refills the outboxes with what the old one
may still have owed a consumer (`hotline.refill`); the consumers skip what they applied.

The embedded broker ignores retention, so when its resident size passes
`HOTLINE_EMBEDDED_BROKER_MEMORY_MB` the stack recycles it: services drained and stopped,
broker restarted empty and refilled, topics recreated, services started again.
`kill -USR1 <pid of hotline up>` (the pid is in `<data dir>/stack.pid`) recycles it on
demand.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

from hotline.embedded import (
    EmbeddedStartError,
    RunningBroker,
    RunningPostgres,
    free_port,
    open_log,
    pdeathsig_preexec,
    start_broker,
    start_postgres,
    terminate,
)
from hotline.refill import advance_checkpoint, checkpoint_path, refill
from hotline.service_processes import MigrationFailed, migrate, service_command
from hotline.simulator.params import SimulatorParams
from hotline.stack_env import STACK_ENV_FILE
from hotline.supervisor import ProcessRecord, RestartPolicy, StackStatus
from shared.auth.keyfile import (
    KEYS_FILE_NAME,
    KeyEntry,
    KeysFileError,
    generate_entries,
    import_entries,
    read_keys_file,
    write_keys_file,
)
from shared.auth.store import standalone_key_store
from shared.kafka import ensure_topics
from shared.names import SERVICE_NAMES, ServiceName
from shared.serve import RESTARTS_ENV
from shared.settings import Settings

log = logging.getLogger(__name__)

EMBEDDED_DEPARTMENTS: tuple[str, ...] = tuple(sorted(SimulatorParams().departments() | {"医保局"}))
"""Departments the embedded stack makes a desk key for: those the simulator plays, and the
one README's curl walk-through replies as."""

# The order events flow in: a service stops only after those upstream of it have drained.
STOP_ORDER: tuple[ServiceName, ...] = SERVICE_NAMES

CHECKPOINT_EVERY_SECONDS = 10.0
"""How often the running stack notes how far every consumer has read (see hotline.refill)."""
CHECKPOINT_TIMEOUT_SECONDS = 5.0


class StackError(RuntimeError):
    """The stack cannot start as configured; the message says what to change."""


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _preferred_port(port: int) -> int:
    """The configured port if it is free, else any free one."""
    return port if _port_free("127.0.0.1", port) else free_port()


def rss_mb(pid: int) -> float:
    """Resident memory of a process, from /proc (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def over_budget(rss_mb: float, *, budget_mb: float, fresh_mb: float) -> bool:
    """Recycle when the broker passed its budget and has at least doubled since it started."""
    return rss_mb > budget_mb and rss_mb > 2 * fresh_mb


@dataclass
class ServiceProcess:
    """One child process (a service, or the simulator) and its log."""

    name: str
    process: subprocess.Popen[bytes]
    log_file: IO[bytes]


@dataclass
class Stack:
    """The running parts of the stack, and how to stop them."""

    settings: Settings
    data_dir: Path
    broker: RunningBroker | None = None
    postgres: RunningPostgres | None = None
    services: dict[ServiceName, ServiceProcess] = field(default_factory=dict)
    bootstrap_servers: str = ""
    database_url: str = ""
    broker_fresh_mb: float = 0.0
    """The embedded broker's resident size once the stack was up: its floor."""
    with_simulator: bool = True
    simulator: ServiceProcess | None = None
    keys: list[KeyEntry] = field(default_factory=list)
    """The stack's API keys (its keys file), printed at start."""
    policy: RestartPolicy = field(default_factory=RestartPolicy)
    records: dict[str, ProcessRecord] = field(default_factory=dict)
    """Every supervised process by name: the services, the broker, the database."""
    last_checkpoint: float = 0.0

    # -- start --------------------------------------------------------------------------

    def start(self, echo: Callable[[str], None]) -> None:
        """Bring every part up, or raise StackError with what to change."""
        self._check_service_ports()
        if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
            self.bootstrap_servers = self.settings.kafka_bootstrap_servers
            echo(f"broker: using {self.bootstrap_servers} (KAFKA_BOOTSTRAP_SERVERS)")
        else:
            self._start_broker()
            echo(f"broker: embedded tansu on {self.bootstrap_servers} (memory only)")
        if os.environ.get("DATABASE_URL"):
            self.database_url = self.settings.database_url
            echo("database: using DATABASE_URL")
        else:
            self._start_postgres()
            assert self.postgres is not None
            echo(f"database: embedded PostgreSQL in {self.postgres.data_path}")
        self._write_stack_env()
        self._prepare_bus()
        try:
            migrate(SERVICE_NAMES, self._service_env())
        except MigrationFailed as exc:
            raise StackError(str(exc)) from exc
        echo("migrations: every schema is at its newest revision")
        self.keys = self._ensure_keys()
        if self.broker is not None:
            self._refill(echo)
        self._start_services()
        if self.broker is not None:
            self.broker_fresh_mb = rss_mb(self.broker.process.pid)
        self._start_simulator()
        self.save_status()

    def _ensure_keys(self) -> list[KeyEntry]:
        """The stack's keys file, made on the first start (a key per role and a desk key per
        department the simulator plays), and every key of it stored."""
        path = self.data_dir / KEYS_FILE_NAME
        if path.exists():
            entries = read_keys_file(path)
        else:
            entries = generate_entries(EMBEDDED_DEPARTMENTS, label="embedded")
            write_keys_file(path, entries)

        async def store_them() -> None:
            async with standalone_key_store(self._bus_settings()) as store:
                await import_entries(store, entries)

        try:
            asyncio.run(store_them())
        except KeysFileError as exc:
            raise StackError(str(exc)) from exc
        return entries

    def _check_service_ports(self) -> None:
        for name in SERVICE_NAMES:
            port = self.settings.port_of(name)
            if not _port_free(self.settings.host, port):
                raise StackError(
                    f"port {port} for {name} is in use: stop what uses it or set "
                    f"HOTLINE_{name.upper()}_PORT"
                )

    def _start_broker(self, port: int | None = None) -> None:
        self.broker = start_broker(
            self.data_dir, port or _preferred_port(self.settings.embedded_broker_port)
        )
        self.bootstrap_servers = self.broker.bootstrap_servers
        self._record("broker").started(self.broker.process.pid)

    def _start_postgres(self, port: int | None = None) -> None:
        self.postgres = start_postgres(
            self.data_dir, port or _preferred_port(self.settings.embedded_postgres_port)
        )
        self.database_url = self.postgres.url
        self._record("postgres").started(self.postgres.process.pid)

    def _record(self, name: str) -> ProcessRecord:
        return self.records.setdefault(name, ProcessRecord(name))

    def _refill(self, echo: Callable[[str], None]) -> None:
        """Put back into the outboxes what a lost broker may have owed a consumer."""
        counts = asyncio.run(refill(self._bus_settings(), checkpoint_path(self.data_dir)))
        if any(counts.values()):
            listed = ", ".join(f"{name} {count}" for name, count in counts.items() if count)
            echo(f"broker: re-sending events a consumer may not have read yet ({listed})")

    def take_checkpoint(self) -> None:
        """Note how far every consumer has read, so a lost broker costs little to refill."""
        self.last_checkpoint = time.monotonic()
        try:
            # Bounded: a frozen broker must not hold up the supervision of the rest.
            asyncio.run(
                asyncio.wait_for(
                    advance_checkpoint(self._bus_settings(), checkpoint_path(self.data_dir)),
                    CHECKPOINT_TIMEOUT_SECONDS,
                )
            )
        except Exception as exc:  # the broker or the database is away: try again later
            log.warning("could not take a broker checkpoint: %r", exc)

    def _bus_settings(self) -> Settings:
        return self.settings.model_copy(
            update={
                "kafka_bootstrap_servers": self.bootstrap_servers,
                "database_url": self.database_url,
            }
        )

    def _prepare_bus(self) -> None:
        asyncio.run(ensure_topics(self._bus_settings()))

    def _write_stack_env(self) -> None:
        """Let other tools (and a second terminal) find the servers."""
        env_file = self.data_dir / STACK_ENV_FILE
        env_file.write_text(
            f"KAFKA_BOOTSTRAP_SERVERS={self.bootstrap_servers}\nDATABASE_URL={self.database_url}\n"
        )

    def _service_env(self, restarts: int = 0) -> dict[str, str]:
        env = dict(os.environ)
        env[RESTARTS_ENV] = str(restarts)
        env.update(
            {
                "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap_servers,
                "DATABASE_URL": self.database_url,
                "HOTLINE_DATA_DIR": str(self.data_dir),
                "HOTLINE_MIGRATE_ON_START": "false",
                "PYTHONUNBUFFERED": "1",
            }
        )
        if self.broker is not None:  # tansu refuses the idempotent producer
            env["HOTLINE_KAFKA_IDEMPOTENT_PRODUCER"] = "false"
        return env

    def _start_services(self) -> None:
        for name in SERVICE_NAMES:
            self._start_service(name)
        self._wait_healthy()

    def _start_service(self, name: ServiceName) -> None:
        record = self._record(name)
        log_file, _ = open_log(self.data_dir / "logs" / f"{name}.log", name)
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            service_command(name),
            env=self._service_env(record.restarts),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches only us; we stop them in order
            preexec_fn=pdeathsig_preexec(signal.SIGTERM),
        )
        self.services[name] = ServiceProcess(name, process, log_file)
        record.started(process.pid)

    def _start_simulator(self) -> None:
        """A gentle live stream of simulated tickets, so /rates and the dashboards move."""
        if not self.with_simulator:
            return
        log_file, _ = open_log(self.data_dir / "logs" / "simulator.log", "simulator")
        rate = str(self.settings.simulator_rate)
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "hotline.cli", "simulate", "--live", "--rate", rate],
            env=self._service_env(),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=pdeathsig_preexec(signal.SIGTERM),
        )
        self.simulator = ServiceProcess("simulator", process, log_file)

    def _stop_simulator(self) -> None:
        if self.simulator is not None:
            terminate(self.simulator.process, signal.SIGTERM, 10, "simulator")
            self.simulator.log_file.close()
            self.simulator = None

    def _wait_healthy(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=1.0) as client:
            for name, service in self.services.items():
                url = f"{self.url_of(name)}/healthz"
                while True:
                    if service.process.poll() is not None:
                        raise StackError(
                            f"{name} exited with {service.process.returncode}; see "
                            f"{self.data_dir / 'logs' / f'{name}.log'}"
                        )
                    with contextlib.suppress(httpx.HTTPError):
                        if client.get(url).status_code == 200:
                            break
                    if time.monotonic() > deadline:
                        raise StackError(f"{name} did not answer {url} within {timeout:.0f}s")
                    time.sleep(0.1)

    def url_of(self, name: ServiceName) -> str:
        """Base URL of a service."""
        return f"http://{self.settings.host}:{self.settings.port_of(name)}"

    # -- watch --------------------------------------------------------------------------

    def supervise(self, echo: Callable[[str], None]) -> None:
        """Start again what exited on its own: the database, the broker, any service."""
        if self.postgres is not None and self.postgres.process.poll() is not None:
            code = self.postgres.process.returncode
            echo(f"the database exited with code {code}; starting it again")
            self._record("postgres").exited(code, self.policy)
            self._record("postgres").restarts += 1
            self._start_postgres(self.postgres.port)
        if self.broker is not None and self.broker.process.poll() is not None:
            self.recover_broker(echo)
        for name in SERVICE_NAMES:
            record = self._record(name)
            service = self.services.get(name)
            if service is not None and service.process.poll() is not None:
                code = service.process.returncode
                delay = record.exited(code, self.policy)
                message = (
                    f"{name} exited with code {code}; starting it again in {delay:.0f}s "
                    f"(restart {record.restarts + 1})"
                )
                service.log_file.write(f"----- hotline: {message} -----\n".encode())
                service.log_file.close()
                del self.services[name]
                echo(f"{message}; see {self.data_dir / 'logs' / f'{name}.log'}")
            elif service is None and record.due():
                record.restarts += 1
                self._start_service(name)
        if self.broker is not None and (
            time.monotonic() - self.last_checkpoint >= CHECKPOINT_EVERY_SECONDS
        ):
            self.take_checkpoint()
        self.save_status()

    def save_status(self) -> None:
        """Write `<data dir>/status.json` for `hotline status`."""
        urls: dict[str, str] = {name: self.url_of(name) for name in SERVICE_NAMES}
        StackStatus.now(urls, list(self.records.values())).save(self.data_dir)

    def recover_broker(self, echo: Callable[[str], None]) -> None:
        """The embedded broker died, and every record with it: stop the services, start a
        new broker on the same port, refill it from the outboxes, start the services."""
        assert self.broker is not None
        code = self.broker.process.returncode
        echo(f"the broker exited with code {code}; starting a new one and refilling it")
        record = self._record("broker")
        record.exited(code, self.policy)
        self._stop_simulator()
        # Nothing can drain into a dead broker: a short grace, then they are killed (their
        # state is safe at any instant; that is what the outboxes and event ids are for).
        self.stop_services(grace=5.0)
        restarts = record.restarts + 1
        self._start_broker(self.broker.port)
        record.restarts = restarts
        self._prepare_bus()
        self._refill(echo)
        self._start_services()
        self._start_simulator()
        echo("broker: running again; the services were restarted and read from the refill")

    def broker_over_budget(self) -> bool:
        """True when the embedded broker holds more memory than allowed, and more than twice
        what it held fresh (so a budget set too low cannot make it recycle without end)."""
        if self.broker is None:
            return False
        return over_budget(
            rss_mb(self.broker.process.pid),
            budget_mb=self.settings.embedded_broker_memory_mb,
            fresh_mb=self.broker_fresh_mb,
        )

    def recycle_broker(self, echo: Callable[[str], None]) -> None:
        """Drain and stop the services, restart the broker empty, start everything again."""
        assert self.broker is not None
        before = rss_mb(self.broker.process.pid)
        self._stop_simulator()
        self.stop_services()
        self.take_checkpoint()
        self.broker.stop()
        self._start_broker(self.broker.port)
        self._prepare_bus()
        self._refill(echo)
        self._start_services()
        self.broker_fresh_mb = rss_mb(self.broker.process.pid)
        self._start_simulator()
        echo(
            f"broker recycled: it held {before:.0f} MB (limit "
            f"{self.settings.embedded_broker_memory_mb} MB); every event was applied first"
        )

    # -- stop ---------------------------------------------------------------------------

    def stop_services(self, grace: float | None = None) -> None:
        """SIGTERM each service in event-flow order; each drains before the next stops
        (SIGKILL after `grace` seconds)."""
        if grace is None:
            grace = self.settings.shutdown_drain_seconds * 2 + 10
        for name in STOP_ORDER:
            service = self.services.pop(name, None)
            if service is None:
                continue
            terminate(service.process, signal.SIGTERM, grace, name)
            service.log_file.close()
            record = self._record(name)
            record.state, record.pid = "stopped", None

    def stop(self) -> None:
        """Stop everything we started: the simulator, the services, the broker, the database."""
        self._stop_simulator()
        self.stop_services()
        if self.broker is not None:
            if self.broker.process.poll() is None and self.database_url:
                self.take_checkpoint()
            self.broker.stop()
            self.broker = None
        if self.postgres is not None:
            self.postgres.stop()
            self.postgres = None


def _acquire_pid_file(data_dir: Path) -> Path:
    """One stack per data folder."""
    pid_file = data_dir / "stack.pid"
    if pid_file.exists():
        with contextlib.suppress(ValueError, OSError):
            pid = int(pid_file.read_text().strip())
            if pid != os.getpid() and Path(f"/proc/{pid}").exists():
                raise StackError(f"a stack already runs from {data_dir} (pid {pid})")
    pid_file.write_text(str(os.getpid()))
    return pid_file


def run_stack(
    settings: Settings, echo: Callable[[str], None], *, with_simulator: bool = True
) -> int:
    """Start the stack, wait for Ctrl-C/SIGTERM, stop it. Returns the exit status."""
    data_dir = settings.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    settings = settings.model_copy(update={"data_dir": data_dir})
    pid_file = _acquire_pid_file(data_dir)
    stop_requested = False
    recycle_requested = False

    def request_stop(signum: int, frame: object) -> None:
        nonlocal stop_requested
        stop_requested = True

    def request_recycle(signum: int, frame: object) -> None:
        nonlocal recycle_requested
        recycle_requested = True

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    previous[signal.SIGUSR1] = signal.signal(signal.SIGUSR1, request_recycle)
    stack = Stack(settings, data_dir, with_simulator=with_simulator)
    status = 0
    try:
        stack.start(echo)
        echo("")
        for name in SERVICE_NAMES:
            echo(f"  {name:<9} {stack.url_of(name)}   (docs: {stack.url_of(name)}/docs)")
        echo(f"  KAFKA_BOOTSTRAP_SERVERS={stack.bootstrap_servers}")
        echo(f"  DATABASE_URL={stack.database_url}")
        echo(f"  (also in {data_dir / 'stack.env'}; logs in {data_dir / 'logs'})")
        echo(f"  API keys (also in {data_dir / KEYS_FILE_NAME}, readable by you only):")
        for entry in stack.keys:
            who = f"{entry.role} {entry.department}" if entry.department else entry.role
            echo(f"    {who:<16} {entry.token}")
        if with_simulator:
            echo(
                f"  simulator: {settings.simulator_rate:g} tickets/s "
                "(hotline up --no-simulator to turn it off)"
            )
        echo("Ready. Press Ctrl-C to stop.")
        while not stop_requested:
            time.sleep(0.5)
            if stack.simulator is not None and stack.simulator.process.poll() is not None:
                echo(f"the simulator stopped; see {data_dir / 'logs' / 'simulator.log'}")
                stack.simulator = None
            stack.supervise(echo)
            if stack.broker is not None and (recycle_requested or stack.broker_over_budget()):
                recycle_requested = False
                stack.recycle_broker(echo)
    except (StackError, EmbeddedStartError) as exc:
        echo(f"error: {exc}")
        status = 2
    finally:
        # A second Ctrl-C during shutdown must not leave half the stack running.
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)
        echo("stopping: services (draining), then the broker, then the database ...")
        stack.stop()
        pid_file.unlink(missing_ok=True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        echo("stopped; nothing left running")
    return status
