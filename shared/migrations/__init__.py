"""Alembic, once per service: each service migrates only its own schema.

A service's `migrations/env.py` calls `run_env(metadata)`; `upgrade(...)` runs a service's
migrations from code (at start, `python -m services.<name> migrate`, tests), given the
folder of its migrations: this library never names a service. Replicas starting together
serialise on a PostgreSQL advisory lock, so a migration never runs twice at once.
`shared.migrations.bus` holds the revisions of the bus tables the services' migrations
create.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import sqlalchemy as sa
from alembic import command, context
from alembic.config import Config
from sqlalchemy.ext.asyncio import create_async_engine

_LOCK_SQL = sa.text("SELECT pg_advisory_lock(hashtext(:name))")
_UNLOCK_SQL = sa.text("SELECT pg_advisory_unlock(hashtext(:name))")


def alembic_config(migrations: Path, database_url: str, schema: str) -> Config:
    """Alembic settings for one service's `migrations` folder; no alembic.ini needed."""
    config = Config()
    config.set_main_option("script_location", str(migrations))
    config.attributes["database_url"] = database_url
    config.attributes["schema"] = schema
    return config


def upgrade(migrations: Path, database_url: str, schema: str, revision: str = "head") -> None:
    """Bring one service's schema to `revision`. Blocking: call it via a thread in async code."""
    command.upgrade(alembic_config(migrations, database_url, schema), revision)


def run_env(target_metadata: sa.MetaData) -> None:
    """The body of every service's env.py: online migrations over asyncpg."""
    asyncio.run(_run_online(target_metadata))


async def _run_online(target_metadata: sa.MetaData) -> None:
    config = context.config
    schema: str = config.attributes["schema"]
    engine = create_async_engine(
        config.attributes["database_url"],
        hide_parameters=True,
        connect_args={"server_settings": {"search_path": schema}},
    )
    try:
        async with engine.connect() as connection:
            await connection.execute(_LOCK_SQL, {"name": f"hotline-migrate-{schema}"})
            # Alembic does not create the schema; it must exist before the version table.
            await connection.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
            await connection.commit()
            try:
                await connection.run_sync(_migrate, target_metadata, schema)
            finally:
                await connection.execute(_UNLOCK_SQL, {"name": f"hotline-migrate-{schema}"})
                await connection.commit()
    finally:
        await engine.dispose()


def _migrate(connection: sa.Connection, target_metadata: sa.MetaData, schema: str) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        version_table_schema=schema,
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        context.run_migrations()
