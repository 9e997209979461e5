"""Alembic, once per service: each service migrates only its own schema.

A service's `migrations/env.py` calls `run_env(metadata)`; `upgrade(...)` runs a service's
migrations from code (prestart, the CLI, tests). Replicas starting together serialise on
a PostgreSQL advisory lock, so a migration never runs twice at once.
"""

from __future__ import annotations

import asyncio

import sqlalchemy as sa
from alembic import command, context, op
from alembic.config import Config
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import create_async_engine

_LOCK_SQL = sa.text("SELECT pg_advisory_lock(hashtext(:name))")
_UNLOCK_SQL = sa.text("SELECT pg_advisory_unlock(hashtext(:name))")


def alembic_config(package: str, database_url: str, schema: str) -> Config:
    """Alembic settings for one service; no alembic.ini needed."""
    config = Config()
    config.set_main_option("script_location", f"{package}:migrations")
    config.attributes["database_url"] = database_url
    config.attributes["schema"] = schema
    return config


def upgrade(package: str, database_url: str, schema: str, revision: str = "head") -> None:
    """Bring one service's schema to `revision`. Blocking: call it via a thread in async code."""
    command.upgrade(alembic_config(package, database_url, schema), revision)


async def upgrade_async(package: str, database_url: str, schema: str) -> None:
    """`upgrade` for callers already inside an event loop."""
    await asyncio.to_thread(upgrade, package, database_url, schema)


def run_env(target_metadata: sa.MetaData) -> None:
    """The body of every service's env.py: online migrations over asyncpg."""
    asyncio.run(_run_online(target_metadata))


async def _run_online(target_metadata: sa.MetaData) -> None:
    config = context.config
    schema: str = config.attributes["schema"]
    engine = create_async_engine(
        config.attributes["database_url"],
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


def create_bus_tables(*, with_outbox: bool = True) -> None:
    """The processed-events table every service has, and the outbox of those that publish."""
    op.create_table(
        "processed_events",
        sa.Column("event_id", sa.String(64), primary_key=True),
        sa.Column("ce_type", sa.String(255), nullable=False),
        sa.Column(
            "processed_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.func.now(),
        ),
    )
    if not with_outbox:
        return
    op.create_table(
        "outbox",
        sa.Column("seq", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("event_id", sa.String(64), nullable=False, unique=True),
        sa.Column("topic", sa.String(255), nullable=False),
        sa.Column("ce_type", sa.String(255), nullable=False),
        sa.Column("source", sa.String(255), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("data", JSONB, nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("published_at", sa.DateTime(timezone=True)),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_error", sa.Text),
    )
    op.create_index(
        "outbox_unpublished", "outbox", ["seq"], postgresql_where=sa.text("published_at IS NULL")
    )
