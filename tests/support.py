"""Waiting on conditions (never a bare sleep) and small helpers the test levels share."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import uvicorn
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from fastapi import FastAPI

from hotline.embedded import free_port, pdeathsig_preexec, start_postgres
from services.dispatch.app import create_app as create_dispatch
from services.followup.app import create_app as create_followup
from services.intake.app import create_app as create_intake
from services.metrics.app import create_app as create_metrics
from shared.auth.keyfile import KeyRing, generate_entries, import_entries
from shared.auth.store import standalone_key_store
from shared.envelope import KafkaRecord, encode, event_data
from shared.events import CallOutcome, Event, TicketSubmitted
from shared.kafka import connection_options
from shared.names import Role, ServiceName
from shared.offsets import end_offsets, topic_partitions
from shared.settings import Settings

T = TypeVar("T")

APPS: dict[ServiceName, Callable[[Settings], FastAPI]] = {
    "intake": create_intake,
    "dispatch": create_dispatch,
    "followup": create_followup,
    "metrics": create_metrics,
}


log = logging.getLogger(__name__)


def load_app(service: ServiceName, settings: Settings) -> FastAPI:
    """A service's app, built as its `__main__` builds it."""
    return APPS[service](settings)


async def eventually(
    check: Callable[[], Any | Awaitable[Any]],
    *,
    timeout: float = 15.0,
    interval: float = 0.02,
    message: str = "condition",
) -> Any:
    """Poll `check` until it returns something truthy; fail with `message` after `timeout`."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = check()
        if inspect.isawaitable(last):
            last = await last
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}; last={last!r}")
        await asyncio.sleep(interval)


SCRATCH_ROOT = Path(tempfile.gettempdir()) / f"hotline-tests-{os.getpid()}"
"""Every folder the tests make, removed when the run ends (`conftest.pytest_sessionfinish`)."""


def scratch_dir(prefix: str) -> Path:
    """A new folder of this test run, traversable by the PostgreSQL user (we may be root)."""
    SCRATCH_ROOT.mkdir(exist_ok=True)
    SCRATCH_ROOT.chmod(0o711)
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=SCRATCH_ROOT))
    path.chmod(0o711)
    return path


def settings_for(infra: Any, database_url: str, **overrides: object) -> Settings:
    """Settings of a test stack: its own topics and data folder, quick loops."""
    prefix = f"t{uuid.uuid4().hex[:10]}."
    values: dict[str, object] = {
        "kafka_bootstrap_servers": infra.bootstrap_servers,
        "database_url": database_url,
        "topic_prefix": prefix,
        "data_dir": scratch_dir("data-"),
        "relay_idle_seconds": 0.05,
        "relay_max_backoff_seconds": 0.5,
        "consumer_poll_ms": 100,
        "consumer_max_backoff_seconds": 0.5,
        "consumer_session_timeout_ms": 6000,
        "shutdown_drain_seconds": 5.0,
        "log_json": False,
        # Tests send many requests without a valid key on purpose (the role matrix).
        "auth_failure_limit": "1000/second",
        # A test reads the rates right after a change: no answer reused from before it
        # (tests/unit/test_shared_answers.py checks the reuse).
        "rates_answer_seconds": 0.0,
    }
    # What the broker in use needs (Apache Kafka: replication factor 3, idempotent producer).
    values.update(getattr(infra, "settings", None) or {})
    values.update(overrides)
    settings = Settings.model_validate(values)
    TEST_SETTINGS.append(settings)
    return settings


TEST_SETTINGS: list[Settings] = []
"""Every test stack's settings, in order: `conftest` deletes each test's topics after it."""


async def delete_topics(settings: Settings, timeout: float = 15.0) -> None:
    """Delete the topics under `settings.topic_prefix` (not the prefix-less ones of a stack of
    its own), so that a long run does not pile up partitions on the brokers. Best effort: the
    test's broker may be gone already."""
    if not settings.topic_prefix:
        return
    admin = AIOKafkaAdminClient(**connection_options(settings), request_timeout_ms=10_000)
    try:
        async with asyncio.timeout(timeout):
            await admin.start()
            ours = [t for t in await admin.list_topics() if t.startswith(settings.topic_prefix)]
            if ours:
                await admin.delete_topics(ours)
    except Exception as exc:  # a broker stopped by its test, a frozen one, a refusal
        log.debug("topics of %s not deleted: %r", settings.topic_prefix, exc)
    finally:
        with contextlib.suppress(Exception):
            await admin.close()


DEFAULT_ROLE: dict[ServiceName, Role] = {
    "intake": "evaluator",
    "dispatch": "operator",
    "followup": "callback",
    "metrics": "auditor",
}
"""The role a test speaks to each service with unless it asks for another."""


@asynccontextmanager
async def running_service(
    name: ServiceName,
    settings: Settings,
    *,
    wait_for_broker: bool = True,
    role: Role | None = None,
) -> AsyncIterator[ServiceClient]:
    """A service app with its lifespan running (migrations, relay, consumer), and an HTTP
    client speaking to it in-process with a key of `role` (default: `DEFAULT_ROLE`)."""
    app = load_app(name, settings)
    async with app.router.lifespan_context(app), contextlib.AsyncExitStack() as clients:
        runtime = app.state.runtime
        if wait_for_broker:
            await eventually(runtime.broker_connected.is_set, message=f"{name} on the broker")
        service = ServiceClient(
            name, runtime, httpx.ASGITransport(app=app), f"http://{name}", clients
        )
        service.http = await service.as_role(role or DEFAULT_ROLE[name])
        yield service


@dataclass
class ServiceClient:
    """HTTP clients of one running service, one per key, and its runtime for white-box
    waits. `http` speaks with the default role's key."""

    name: ServiceName
    runtime: Any
    transport: httpx.AsyncBaseTransport
    base_url: str
    _clients: contextlib.AsyncExitStack
    http: httpx.AsyncClient = field(init=False)
    _by_key: dict[tuple[Role | None, str | None], httpx.AsyncClient] = field(default_factory=dict)

    async def as_role(self, role: Role | None, department: str | None = None) -> httpx.AsyncClient:
        """A client sending a new key of `role` (a department's for `department`); `None`: a
        client sending no key at all."""
        if (role, department) not in self._by_key:
            headers = {}
            if role is not None:
                token, _ = await self.runtime.auth.store.create(
                    name=f"test {role} {department or ''}".strip(),
                    role=role,
                    department=department,
                )
                headers["Authorization"] = f"Bearer {token.value}"
            client = httpx.AsyncClient(
                transport=self.transport, base_url=self.base_url, headers=headers
            )
            self._by_key[(role, department)] = await self._clients.enter_async_context(client)
        return self._by_key[(role, department)]

    async def department(self, department: str) -> httpx.AsyncClient:
        """A client with the key of `department`'s desk."""
        return await self.as_role("department", department)

    async def consumed(self) -> None:
        """Wait until this service's consumer has applied and committed everything on its
        topics (not only fetched it)."""
        await eventually(self._caught_up, message="consumer caught up")

    async def _caught_up(self) -> bool:
        consumer = self.runtime.consumer
        if consumer is None:
            return False
        lags = await consumer.source.lag(committed=True)
        return bool(lags) and sum(lags.values()) == 0


async def read_topic(
    bootstrap_servers: str, topic: str, *, at_least: int = 0, timeout: float = 15.0
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record on `topic` from the beginning; waits until there are `at_least`."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers, enable_auto_commit=False, group_id=None
    )
    await consumer.start()
    try:

        async def partitions_of_topic() -> list[TopicPartition] | None:
            return (await topic_partitions(consumer, [topic])).get(topic)

        assigned = await eventually(partitions_of_topic, message=f"topic {topic}")
        # Read at least to the ends of now: a first fetch that comes back empty (Apache Kafka
        # may take longer than one poll to answer it) does not mean an empty topic.
        ends = await end_offsets(consumer, assigned)
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)
        records: list[ConsumerRecord[bytes, bytes]] = []
        deadline = time.monotonic() + timeout
        while True:
            batch = await consumer.getmany(*assigned, timeout_ms=200)
            for part in batch.values():
                records.extend(part)
            at_ends = all([await consumer.position(tp) >= ends[tp] for tp in assigned])
            if not batch and at_ends and len(records) >= at_least:
                return records
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{topic}: {len(records)} records after {timeout}s, wanted {at_least}"
                )
    finally:
        await consumer.stop()


def submitted_event(ticket_id: str, ago: timedelta = timedelta(hours=1)) -> TicketSubmitted:
    """A ticket as intake announces it: submitted `ago` (an hour ago), answered, solved at
    first contact (so a callback is due)."""
    return TicketSubmitted(
        ticket_id=ticket_id,
        city="沈阳",
        channel="phone",
        scenario="供暖",
        category="complaint",
        submitted_at=datetime.now(UTC) - ago,
        call=CallOutcome(answered=True, wait_seconds=8, resolved_at_first_contact=True),
    )


def record_of(event: Event, event_id: str | None = None, source: str = "/test") -> KafkaRecord:
    """The record a relay would write for `event`."""
    return encode(
        event_id=event_id or str(uuid.uuid4()),
        ce_type=event.ce_type,
        source=source,
        time=event.occurred_at(),
        key=event.ticket_id,
        data=event_data(event),
    )


async def publish(
    producer: AIOKafkaProducer, topic: str, event: Event, event_id: str | None = None
) -> None:
    """Put `event` on `topic` as its owner's relay would, and wait for the broker."""
    record = record_of(event, event_id)
    await producer.send_and_wait(topic, record.value, key=record.key, headers=record.headers)


async def stored_keys(settings: Settings, departments: Iterable[str] = ()) -> KeyRing:
    """New keys for every role (and these departments' desks), stored in the settings'
    database (whose auth schema a started service has migrated), as a client's key ring."""
    entries = generate_entries(departments, label="test")
    async with standalone_key_store(settings) as store:
        await import_entries(store, entries)
    return KeyRing(entries)


class LocalPostgres:
    """A PostgreSQL of one test's own, that the test may stop and start again (an outage)."""

    def __init__(self) -> None:
        self.data_dir = scratch_dir("postgres-")
        self.server = start_postgres(self.data_dir)

    @property
    def url(self) -> str:
        """Where it listens (the same after a restart)."""
        return self.server.url

    def stop(self) -> None:
        """Stop it (idempotent)."""
        self.server.stop()

    def start_again(self) -> None:
        """Start it again on the same port and data."""
        self.server = start_postgres(self.data_dir, self.server.port)


@contextmanager
def local_postgres() -> Iterator[LocalPostgres]:
    """A PostgreSQL of the test's own, stopped and removed afterwards."""
    postgres = LocalPostgres()
    try:
        yield postgres
    finally:
        postgres.stop()
        shutil.rmtree(postgres.data_dir, ignore_errors=True)


def headers_of(record: ConsumerRecord[bytes, bytes]) -> dict[str, bytes]:
    """A record's headers as a dict."""
    return dict(record.headers)


PROBLEM_MEMBERS = {"type", "title", "status", "detail", "instance", "code"}
"""What every error answer holds (RFC 9457 problem details, plus our `code`)."""


def problem_of(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """The problem-details body of an error answer, after checking its status, media type and
    members (and `code`, if given)."""
    assert response.status_code == status, (response.status_code, response.text[:500])
    assert response.headers["content-type"] == "application/problem+json", response.headers
    problem: dict[str, Any] = response.json()
    assert problem.keys() >= PROBLEM_MEMBERS, problem
    assert problem["status"] == status
    assert isinstance(problem["detail"], str)
    assert problem["type"] == f"https://hotline.invalid/problems/{problem['code']}"
    if code is not None:
        assert problem["code"] == code, problem
    return problem


def problem_fields(response: httpx.Response) -> set[str]:
    """The dotted locations (`body.city`) of the fields an error answer names."""
    return {error["field"] for error in response.json().get("errors", [])}


# --- Service processes ----------------------------------------------------------------

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Child:
    """A process this test started, and its log."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace").strip().splitlines()
        return f"--- last lines of {self.name}'s log ---\n" + "\n".join(text[-lines:])


def start(name: str, command: list[str], log_path: Path, env: dict[str, str]) -> Child:
    """A child in its own session that gets SIGTERM if this process dies."""
    log_file = log_path.open("wb")
    try:
        process = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=pdeathsig_preexec(signal.SIGTERM),
        )
    finally:
        log_file.close()  # the child has its own copy
    return Child(name, process, log_path)


def service_environment(settings: Settings) -> dict[str, str]:
    """The settings as the environment variables a service process reads them from."""
    env = dict(os.environ)
    for name, value in settings.model_dump().items():
        if value is not None:
            env[f"HOTLINE_{name.upper()}"] = str(value)
    env["KAFKA_BOOTSTRAP_SERVERS"] = settings.kafka_bootstrap_servers
    env["DATABASE_URL"] = settings.database_url
    env["PYTHONUNBUFFERED"] = "1"
    return env


@asynccontextmanager
async def metrics_over_http(settings: Settings) -> AsyncIterator[ServiceClient]:
    """A metrics service with its lifespan running, served by uvicorn on a free port."""
    app = load_app("metrics", settings)
    async with app.router.lifespan_context(app):
        await eventually(app.state.runtime.broker_connected.is_set, message="metrics on broker")
        port = free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_config=None)
        server = uvicorn.Server(config)
        serving = asyncio.create_task(server.serve())
        await eventually(lambda: server.started, message="uvicorn started")
        try:
            async with contextlib.AsyncExitStack() as clients:
                metrics = ServiceClient(
                    "metrics",
                    app.state.runtime,
                    httpx.AsyncHTTPTransport(),
                    f"http://127.0.0.1:{port}",
                    clients,
                )
                metrics.http = await metrics.as_role("auditor")
                yield metrics
        finally:
            server.should_exit = True
            await serving


async def killed_at_crash_point(child: Child, fault_dir: Path, point: str, timeout: float) -> None:
    """Wait until `child` dies of the `kill -9` armed at `point` in `fault_dir`, and check the
    point was reached (its trigger consumed), not skipped."""
    await eventually(
        lambda: child.process.poll() is not None,
        timeout=timeout,
        message=f"{child.name} killed at {point}",
    )
    assert child.process.returncode == -signal.SIGKILL, child.tail()
    assert not any(fault_dir.iterdir())  # the armed point was reached, not skipped
