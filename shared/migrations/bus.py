"""Revisions of the bus tables (processed events, outbox), as the services' migrations
create them.

A migration is history: these functions stay as they were when first released, and a
change to the bus tables (`shared.bus_tables`) comes with a new function here and a new
migration in every service that calls it. The drift tests check that a freshly migrated
schema equals the live definitions.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB


def create_bus_tables_v1(*, with_outbox: bool = True) -> None:
    """Revision 1: the processed-events table every service has, and the outbox of those that
    publish."""
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


def add_outbox_set_aside_v2() -> None:
    """Revision 2: outbox rows that can never be published are set aside (`set_aside_at`)
    instead of stalling the relay; the pending-row index leaves them out, and an index of
    the set-aside rows by key lets the relay skip the later rows of their tickets."""
    op.add_column("outbox", sa.Column("set_aside_at", sa.DateTime(timezone=True)))
    op.drop_index("outbox_unpublished", "outbox")
    op.create_index(
        "outbox_pending",
        "outbox",
        ["seq"],
        postgresql_where=sa.text("published_at IS NULL AND set_aside_at IS NULL"),
    )
    op.create_index(
        "outbox_set_aside",
        "outbox",
        ["key", "seq"],
        postgresql_where=sa.text("set_aside_at IS NOT NULL"),
    )


def remove_outbox_set_aside_v2() -> None:
    """Undo revision 2. Rows set aside become pending again (and stall an older relay)."""
    op.drop_index("outbox_set_aside", "outbox")
    op.drop_index("outbox_pending", "outbox")
    op.create_index(
        "outbox_unpublished", "outbox", ["seq"], postgresql_where=sa.text("published_at IS NULL")
    )
    op.drop_column("outbox", "set_aside_at")
