"""The bus tables every service has in its own schema: the outbox (of services that publish)
and the ids of the events it processed. Defined here once; each service adds them to its
own metadata (`add_bus_tables`), so its Alembic autogenerate and the migration drift tests
see them, and the live statements use these same objects.

Migrations never derive tables from here: `shared.migrations.bus` keeps each revision of
the bus tables as it was, and the drift tests check the two agree.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

BUS_METADATA = sa.MetaData()

outbox = sa.Table(
    "outbox",
    BUS_METADATA,
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
    sa.Column("set_aside_at", sa.DateTime(timezone=True)),
    # The relay's scan: pending rows in order, without reading published or set-aside ones.
    sa.Index(
        "outbox_pending",
        "seq",
        postgresql_where=sa.text("published_at IS NULL AND set_aside_at IS NULL"),
    ),
    # The few rows set aside, by ticket: the relay's scan skips the later rows of their keys.
    sa.Index(
        "outbox_set_aside", "key", "seq", postgresql_where=sa.text("set_aside_at IS NOT NULL")
    ),
)
"""Events written with the state change they announce; the relay publishes them. A row is
pending (`published_at` and `set_aside_at` null), published, or set aside: it can never be
published as it is (`last_error` says why), and the later rows of its key wait behind it."""

processed_events = sa.Table(
    "processed_events",
    BUS_METADATA,
    sa.Column("event_id", sa.String(64), primary_key=True),
    sa.Column("ce_type", sa.String(255), nullable=False),
    sa.Column(
        "processed_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
)
"""Ids of the events a consumer applied, written in the transaction of their effects."""


def add_bus_tables(metadata: sa.MetaData, *, with_outbox: bool) -> sa.MetaData:
    """Add the bus tables to a service's metadata (the outbox only if it publishes)."""
    processed_events.to_metadata(metadata)
    if with_outbox:
        outbox.to_metadata(metadata)
    return metadata
