"""Session fixtures: one real Kafka-protocol broker and one real PostgreSQL for all tests.

Where they come from, in order: `KAFKA_BOOTSTRAP_SERVERS` / `DATABASE_URL` if set; else
testcontainers when a Docker engine answers; else local processes (tansu, and PostgreSQL's
own programs) started by `hotline.embedded`. `HOTLINE_TEST_BROKER=kafka` selects a real
Apache Kafka cluster of three brokers (`hotline.embedded.kafka_cluster`) instead of tansu.
Each test that needs them gets its own database and its own topic prefix, so tests never
depend on each other's data or order.
"""

from __future__ import annotations

import contextlib
import getpass
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from hotline.embedded import RunningBroker, start_broker, start_postgres
from hotline.embedded.kafka_cluster import RunningKafkaCluster, start_kafka_cluster
from shared.settings import Settings
from tests.support import SCRATCH_ROOT, TEST_SETTINGS, delete_topics, settings_for

log = logging.getLogger(__name__)


KAFKA_SETTINGS: dict[str, object] = {
    "topic_replication_factor": 3,
    "kafka_idempotent_producer": True,
}
"""What the services need against the three-broker Apache Kafka cluster (tansu has neither)."""

TANSU_SETTINGS: dict[str, object] = {
    "kafka_idempotent_producer": False,
    "consumer_session_timeout_ms": 3000,
}
"""tansu refuses the idempotent producer: say so rather than have each client try it. It
completes a group join after about half the session timeout (Apache Kafka at once, with
`group.initial.rebalance.delay.ms=0`): a short session halves each service's start."""


def selected_broker() -> str:
    """`tansu` (the default) or `kafka`, from HOTLINE_TEST_BROKER."""
    chosen = os.environ.get("HOTLINE_TEST_BROKER", "tansu").strip().lower() or "tansu"
    if chosen not in ("tansu", "kafka"):
        raise pytest.UsageError(f"HOTLINE_TEST_BROKER={chosen!r}: use tansu or kafka")
    return chosen


@dataclass
class Infra:
    """Where the shared broker and database are; `broker` is set when we started tansu,
    `kafka` when we started the Apache Kafka cluster (then `settings` holds what the
    services need against it)."""

    bootstrap_servers: str
    database_url: str
    broker: RunningBroker | None = None
    kafka: RunningKafkaCluster | None = None
    settings: dict[str, object] = field(default_factory=dict)


def _from_containers(stack: contextlib.ExitStack) -> Infra | None:
    """Kafka and PostgreSQL in Docker, when an engine is reachable (a developer's laptop)."""
    try:
        from docker.errors import DockerException
        from testcontainers.community.kafka import KafkaContainer
        from testcontainers.community.postgres import PostgresContainer
    except ImportError:
        return None
    try:
        postgres = PostgresContainer("postgres:16.4-alpine", driver="asyncpg")
        kafka = KafkaContainer("confluentinc/cp-kafka:7.6.1").with_kraft()
    except DockerException:
        return None
    stack.enter_context(postgres)
    stack.enter_context(kafka)
    return Infra(kafka.get_bootstrap_server(), postgres.get_connection_url())


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Leave nothing behind: every folder a test made lives under the run's scratch root, and
    pytest's own tmp_path folders are kept only for failed tests (pyproject.toml)."""
    shutil.rmtree(SCRATCH_ROOT, ignore_errors=True)
    pytest_root = Path(tempfile.gettempdir()) / f"pytest-of-{getpass.getuser()}"
    with contextlib.suppress(OSError):  # not empty: a failed test's files are kept
        pytest_root.rmdir()


@pytest.fixture(scope="session")
def infra() -> Iterator[Infra]:
    """The broker and database every integration and end-to-end test uses."""
    env_kafka = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    env_db = os.environ.get("DATABASE_URL")
    if selected_broker() == "kafka":
        yield from _with_kafka_cluster(env_db)
        return
    with contextlib.ExitStack() as stack:
        found = None
        if not (env_kafka and env_db):
            found = _from_containers(stack)
        if found is None:
            data_dir = _local_data_dir(stack)
            broker = None
            if not env_kafka:
                broker = start_broker(data_dir)
                stack.callback(broker.stop)
            database_url = _local_postgres(stack, data_dir, env_db)
            found = Infra(
                env_kafka or broker.bootstrap_servers,  # type: ignore[union-attr]
                database_url,
                broker,
                settings=dict(TANSU_SETTINGS) if broker is not None else {},
            )
        yield found


def _local_data_dir(stack: contextlib.ExitStack) -> Path:
    """A temporary folder for local servers, removed with `stack`."""
    data_dir = Path(tempfile.mkdtemp(prefix="hotline-test-"))
    data_dir.chmod(0o711)  # PostgreSQL runs as an unprivileged user when we are root
    stack.callback(shutil.rmtree, data_dir, True)
    return data_dir


def _local_postgres(stack: contextlib.ExitStack, data_dir: Path, env_db: str | None) -> str:
    """DATABASE_URL if given, else a PostgreSQL started in `data_dir` (stopped with `stack`)."""
    if env_db:
        return env_db
    postgres = start_postgres(data_dir)
    stack.callback(postgres.stop)
    return postgres.url


def _with_kafka_cluster(env_db: str | None) -> Iterator[Infra]:
    """The three-broker Apache Kafka cluster, and PostgreSQL from DATABASE_URL or local."""
    with contextlib.ExitStack() as stack:
        data_dir = _local_data_dir(stack)
        cluster = start_kafka_cluster(data_dir / "kafka")
        stack.callback(cluster.stop)
        database_url = _local_postgres(stack, data_dir, env_db)
        yield Infra(
            cluster.bootstrap_servers, database_url, kafka=cluster, settings=dict(KAFKA_SETTINGS)
        )


@pytest.fixture(autouse=True)
async def _delete_test_topics() -> AsyncIterator[None]:
    """After each test, delete the topics of the test stacks it made (`settings_for`): a run
    of hundreds of tests would otherwise leave thousands of partitions on the brokers, and
    Apache Kafka's nodes slow down under them (most of all while one restarts)."""
    made_before = len(TEST_SETTINGS)
    yield
    for settings in TEST_SETTINGS[made_before:]:
        await delete_topics(settings)


@pytest.fixture
async def database(infra: Infra) -> AsyncIterator[str]:
    """A new, empty database on the shared cluster, dropped afterwards."""
    async with new_database(infra) as url:
        yield url


@contextlib.asynccontextmanager
async def new_database(infra: Infra) -> AsyncIterator[str]:
    """A new, empty database on the shared cluster (its URL), dropped on exit."""
    url = make_url(infra.database_url)
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin_dsn = url.set(drivername="postgresql", database="postgres").render_as_string(
        hide_password=False
    )
    connection = await asyncpg.connect(admin_dsn)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        connection = await asyncpg.connect(admin_dsn)
        try:
            await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await connection.close()


@pytest.fixture
def settings(infra: Infra, database: str) -> Settings:
    """Settings for one test: own database, own topics."""
    return settings_for(infra, database)
