"""Reopens (重办) heard from followup, and the redo round of the work order that takes them.

Revision ID: 0005_ticket_reopens
Revises: 0004_idempotency
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_ticket_reopens"
down_revision = "0004_idempotency"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ticket_reopens",
        sa.Column("callback_id", sa.String(64), primary_key=True),
        sa.Column("ticket_id", sa.String(64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("redo_work_order_id", sa.String(64)),
    )
    op.create_index("ix_ticket_reopens_ticket_id", "ticket_reopens", ["ticket_id"])
    # Existing work orders were all ordinary ones.
    op.add_column(
        "work_orders", sa.Column("redo_round", sa.Integer, nullable=False, server_default="0")
    )


def downgrade() -> None:
    op.drop_column("work_orders", "redo_round")
    op.drop_table("ticket_reopens")
