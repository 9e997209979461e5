"""Grafana's PostgreSQL role reads metrics's schema, and nothing else, and changes nothing.

The role is made as docker compose makes it: by running `deploy/postgres/init/
10-grafana-reader.sh` (psql) against the test's database, under a name of the test's own
(roles are cluster-wide; each test drops its role). Then intake's and metrics's
migrations run with `HOTLINE_GRAFANA_DB_ROLE` naming it, and the test connects as that
role with the password the script gave it (the embedded test cluster trusts loopback
connections, a container's checks the password): every SQL query of the dashboards runs,
intake's tickets and every other schema stay out of reach, and no write gets through.
"""

from __future__ import annotations

import asyncio
import glob
import importlib.util
import logging
import os
import secrets
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy.engine import make_url

import services.metrics
from shared.migrations import alembic_config
from tests.grafana import POSTGRES_UID, REPO_ROOT, all_queries, sql_for_test
from tests.support import load_app

pytestmark = pytest.mark.integration

INIT_SCRIPT = REPO_ROOT / "deploy" / "postgres" / "init" / "10-grafana-reader.sh"
UNANSWERED_DASHBOARD = "Unanswered work orders"
# Relations the role may SELECT outside metrics's schema: the catalogs every role reads.
CATALOGS = ("pg_catalog", "information_schema")


def psql_folder() -> Path:
    """The folder of a psql: on PATH, Debian's, beside initdb, or the pgserver wheel's."""
    candidates = [shutil.which("psql"), *sorted(glob.glob("/usr/lib/postgresql/*/bin/psql"))]
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(str(Path(initdb).with_name("psql")))
    pgserver = importlib.util.find_spec("pgserver")
    if pgserver is not None and pgserver.origin:
        candidates.append(str(Path(pgserver.origin).parent / "pginstall" / "bin" / "psql"))
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate).parent
    raise AssertionError(
        "psql is not installed: install the Debian package `postgresql-client`; the test "
        "runs the init script docker compose's PostgreSQL runs"
    )


@dataclass(frozen=True)
class Reader:
    """The Grafana role of one test, in the test's database."""

    name: str
    password: str
    database_url: str

    async def connect(self) -> asyncpg.Connection:
        url = make_url(self.database_url)
        return await asyncpg.connect(
            host=url.host,
            port=url.port,
            user=self.name,
            password=self.password,
            database=url.database,
        )


def owner_dsn(database_url: str) -> str:
    """The test database as the user that migrates it (the services' user)."""
    url = make_url(database_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


def run_init_script(reader: Reader) -> None:
    """`deploy/postgres/init/10-grafana-reader.sh` with the variables the postgres image and
    compose give it, over TCP to the test's cluster."""
    url = make_url(reader.database_url)
    env = {
        **os.environ,
        "PATH": f"{psql_folder()}{os.pathsep}{os.environ.get('PATH', '')}",
        "PGHOST": str(url.host),
        "PGPORT": str(url.port),
        "POSTGRES_USER": str(url.username),
        "POSTGRES_DB": str(url.database),
        "HOTLINE_GRAFANA_DB_ROLE": reader.name,
        "HOTLINE_GRAFANA_DB_PASSWORD": reader.password,
    }
    if url.password:
        env["PGPASSWORD"] = url.password
    result = subprocess.run(
        ["sh", str(INIT_SCRIPT)], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


async def drop_role(database_url: str, name: str) -> None:
    """Drop the role and what it was granted in the test's database (the only one it was)."""
    connection = await asyncpg.connect(owner_dsn(database_url))
    try:
        if await connection.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", name):
            await connection.execute(f'DROP OWNED BY "{name}"')
            await connection.execute(f'DROP ROLE "{name}"')
    finally:
        await connection.close()


@pytest.fixture
async def reader(settings, monkeypatch) -> AsyncIterator[Reader]:
    """A Grafana role made by the init script; the migrations grant to it."""
    made = Reader(
        f"hotline_grafana_{uuid.uuid4().hex[:12]}", secrets.token_hex(16), settings.database_url
    )
    monkeypatch.setenv("HOTLINE_GRAFANA_DB_ROLE", made.name)
    try:
        await asyncio.to_thread(run_init_script, made)
        yield made
    finally:
        await drop_role(settings.database_url, made.name)


async def migrate(settings, *services) -> None:
    for service in services:
        runtime = load_app(service, settings).state.runtime
        try:
            await asyncio.to_thread(runtime.migrate)
        finally:
            await runtime.database.dispose()


async def as_owner(settings, sql: str, *args) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(owner_dsn(settings.database_url))
    try:
        return await connection.fetch(sql, *args)
    finally:
        await connection.close()


async def add_unanswered_work_order(settings) -> str:
    now = datetime.now(UTC)
    await as_owner(
        settings,
        f"""
        INSERT INTO "{settings.schema_of("metrics")}".work_order_facts
            (work_order_id, ticket_id, department, created_known, created_at, due_at,
             counted, city, channel, scenario, submitted_at, work_orders)
        VALUES ('wo-1', 't-1', '人社局', true, $1, $2, true, '沈阳', 'phone', '社保查询', $1, 1)
        """,
        now - timedelta(days=9),
        now - timedelta(days=2),
    )
    return "wo-1"


async def refused(connection: asyncpg.Connection, sql: str) -> type[Exception]:
    """The kind of error PostgreSQL refuses `sql` with; fails if it is accepted."""
    try:
        await connection.execute(sql)
    except (asyncpg.InsufficientPrivilegeError, asyncpg.ReadOnlySQLTransactionError) as exc:
        return type(exc)
    raise AssertionError(f"the reader was allowed: {sql}")


async def test_the_reader_runs_every_dashboard_query_and_gets_its_columns(settings, reader):
    assert settings.schema_of("metrics") == "metrics"  # what the dashboards' SQL names
    await migrate(settings, "intake", "metrics")
    work_order = await add_unanswered_work_order(settings)
    queries = [query for query in all_queries() if query.datasource_uid == POSTGRES_UID]
    assert any(query.dashboard["title"] == UNANSWERED_DASHBOARD for query in queries)
    until = datetime.now(UTC)
    since = until - timedelta(days=365)

    connection = await reader.connect()
    try:
        assert await connection.fetchval("SELECT current_user") == reader.name
        for query in queries:
            try:
                statement = await connection.prepare(sql_for_test(query, since, until))
                rows = await statement.fetch()
            except asyncpg.PostgresError as exc:
                raise AssertionError(f"{query}\nfails as {reader.name}: {exc!r}") from exc
            assert [column.name for column in statement.get_attributes()], query
            if query.dashboard["title"] == UNANSWERED_DASHBOARD:
                assert rows, f"{query}: no row"
                if "work_order_id" in rows[0]:
                    assert [row["work_order_id"] for row in rows] == [work_order]
    finally:
        await connection.close()


async def test_the_reader_cannot_read_intakes_tickets_or_any_schema_but_metrics(settings, reader):
    await migrate(settings, "intake", "metrics")
    intake = settings.schema_of("intake")
    connection = await reader.connect()
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
            await connection.fetch(f'SELECT content, citizen_phone_hash FROM "{intake}".tickets')
    finally:
        await connection.close()

    readable = await as_owner(
        settings,
        """
        SELECT n.nspname AS schema, c.relname AS relation
        FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'v', 'm', 'p', 'f')
          AND n.nspname <> ALL($2::text[])
          AND has_table_privilege($1, c.oid, 'SELECT')
        """,
        reader.name,
        list(CATALOGS),
    )
    assert {row["schema"] for row in readable} == {settings.schema_of("metrics")}
    assert await as_owner(  # there, with citizens' text: the reader just cannot see it
        settings,
        "SELECT 1 FROM pg_tables WHERE schemaname = $1 AND tablename = 'tickets'",
        intake,
    )
    usable = await as_owner(
        settings,
        """
        SELECT nspname FROM pg_namespace
        WHERE nspname <> ALL($2::text[]) AND nspname NOT LIKE 'pg\\_%'
          AND has_schema_privilege($1, oid, 'USAGE')
        """,
        reader.name,
        list(CATALOGS),
    )
    # public: every role's by default, and empty; intake's, dispatch's... not.
    assert {row["nspname"] for row in usable} == {settings.schema_of("metrics"), "public"}


async def test_the_reader_can_change_nothing(settings, reader):
    await migrate(settings, "metrics")
    metrics = settings.schema_of("metrics")
    writes = [
        f"INSERT INTO \"{metrics}\".working_days VALUES ('2030-01-01', true, 0)",
        f'UPDATE "{metrics}".work_order_facts SET first_reply_at = now()',
        f'DELETE FROM "{metrics}".rate_cells',
        f'CREATE TABLE "{metrics}".grafana_made (id int)',
    ]
    connection = await reader.connect()
    try:
        # Every transaction of the role starts read-only...
        for sql in writes:
            assert await refused(connection, sql) is asyncpg.ReadOnlySQLTransactionError, sql
        # ...and once it asks for read-write, its privileges still refuse every write.
        await connection.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE")
        for sql in [
            *writes,
            "CREATE TABLE public.grafana_made (id int)",
            "CREATE TEMPORARY TABLE grafana_made (id int)",
        ]:
            assert await refused(connection, sql) is asyncpg.InsufficientPrivilegeError, sql
    finally:
        await connection.close()
    role = await as_owner(
        settings,
        "SELECT rolcanlogin, rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls"
        " FROM pg_roles WHERE rolname = $1",
        reader.name,
    )
    assert [tuple(row.values()) for row in role] == [(True, False, False, False, False, False)]


async def test_tables_made_in_the_schema_later_are_readable_by_the_reader(settings, reader):
    await migrate(settings, "metrics")
    metrics = settings.schema_of("metrics")
    # As a later migration would, as the user that migrates.
    await as_owner(settings, f'CREATE TABLE "{metrics}".made_later (id int)')
    await as_owner(settings, f'INSERT INTO "{metrics}".made_later VALUES (7)')
    connection = await reader.connect()
    try:
        assert await connection.fetchval(f'SELECT id FROM "{metrics}".made_later') == 7
    finally:
        await connection.close()


async def test_downgrading_revokes_what_the_upgrade_granted(settings, reader):
    runtime = load_app("metrics", settings).state.runtime
    config = alembic_config(runtime.spec.migrations, settings.database_url, runtime.database.schema)
    await runtime.database.dispose()
    await migrate(settings, "metrics")
    view = f'SELECT count(*) FROM "{settings.schema_of("metrics")}".unanswered_work_orders'
    default_grants = """
        SELECT count(*) FROM pg_default_acl, aclexplode(defaclacl) AS acl
        WHERE acl.grantee = (SELECT oid FROM pg_roles WHERE rolname = $1)
    """

    async def can_read_the_view() -> bool:
        connection = await reader.connect()
        try:
            await connection.fetchval(view)
        except asyncpg.InsufficientPrivilegeError:
            return False
        finally:
            await connection.close()
        return True

    assert await can_read_the_view()
    assert (await as_owner(settings, default_grants, reader.name))[0][0] == 1

    await asyncio.to_thread(command.downgrade, config, "0003")
    assert not await can_read_the_view()
    assert (await as_owner(settings, default_grants, reader.name))[0][0] == 0

    await migrate(settings, "metrics")
    assert await can_read_the_view()


async def test_without_the_role_the_migration_succeeds_quietly_and_grants_nothing(
    settings, monkeypatch, caplog
):
    absent = f"hotline_grafana_{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("HOTLINE_GRAFANA_DB_ROLE", absent)
    caplog.set_level(logging.INFO)
    await migrate(settings, "metrics")

    version = await as_owner(
        settings, f'SELECT version_num FROM "{settings.schema_of("metrics")}".alembic_version'
    )
    migrations = Path(services.metrics.__file__).parent / "migrations"
    head = ScriptDirectory(str(migrations)).get_current_head()
    assert [row["version_num"] for row in version] == [head]
    assert not await as_owner(settings, "SELECT 1 FROM pg_roles WHERE rolname = $1", absent)
    assert [record for record in caplog.records if record.levelno >= logging.WARNING] == []
    assert any(absent in record.getMessage() for record in caplog.records)
