"""Tickets, the outbox and processed events.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

from shared.migrations.bus import create_bus_tables_v1

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_bus_tables_v1()
    op.create_table(
        "tickets",
        sa.Column("ticket_id", sa.String(64), primary_key=True),
        sa.Column("city", sa.String(64), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("scenario", sa.String(64), nullable=False),
        sa.Column("category", sa.String(16), nullable=False),
        sa.Column("content", sa.Text, nullable=False),
        sa.Column("citizen_phone_masked", sa.String(32)),
        sa.Column("citizen_phone_hash", sa.String(64)),
        sa.Column("evaluator", sa.String(64)),
        sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("call_answered", sa.Boolean, nullable=False),
        sa.Column("wait_seconds", sa.Float),
        sa.Column("resolved_at_first_contact", sa.Boolean, nullable=False),
        sa.Column("idempotency_key", sa.String(255), unique=True),
        sa.Column("request_fingerprint", sa.String(64)),
    )
    op.create_index("ix_tickets_city", "tickets", ["city"])
    op.create_index("ix_tickets_citizen_phone_hash", "tickets", ["citizen_phone_hash"])
    op.create_index("tickets_by_time", "tickets", ["submitted_at", "ticket_id"])


def downgrade() -> None:
    op.drop_table("tickets")
    op.drop_table("processed_events")
    op.drop_table("outbox")
