"""Tickets as dispatch heard of them, transfers, work orders, replies and callbacks.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

UNANSWERED = sa.text("first_reply_at IS NULL")


def when(name: str, nullable: bool = False) -> sa.Column[datetime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "tickets",
        sa.Column("ticket_id", sa.String(64), primary_key=True),
        sa.Column("city", sa.String(64), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("scenario", sa.String(64), nullable=False),
        when("submitted_at"),
        when("known_at"),
    )
    op.create_table(
        "transfers",
        sa.Column("transfer_id", sa.String(64), primary_key=True),
        sa.Column("ticket_id", sa.String(64), nullable=False),
        sa.Column("department", sa.String(64), nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("connected", sa.Boolean, nullable=False),
        when("at"),
        when("recorded_at"),
    )
    op.create_index("ix_transfers_ticket_id", "transfers", ["ticket_id"])
    op.create_table(
        "work_orders",
        sa.Column("work_order_id", sa.String(64), primary_key=True),
        sa.Column("ticket_id", sa.String(64), nullable=False),
        sa.Column("city", sa.String(64), nullable=False),
        sa.Column("department", sa.String(64), nullable=False),
        when("created_at"),
        when("recorded_at"),
        when("due_at"),
        sa.Column("due_working_days", sa.Integer, nullable=False),
        sa.Column("calendar_source", sa.String(32), nullable=False),
        sa.Column("first_reply_id", sa.String(64)),
        when("first_reply_at", nullable=True),
        sa.Column("first_reply_quality", sa.String(16)),
        sa.Column("reply_count", sa.Integer, nullable=False, server_default="0"),
        when("overdue_at", nullable=True),
    )
    op.create_index("ix_work_orders_ticket_id", "work_orders", ["ticket_id"])
    op.create_index("ix_work_orders_city", "work_orders", ["city"])
    op.create_index("ix_work_orders_department", "work_orders", ["department"])
    # GET /work-orders pages through due_at order, all of them or the unanswered ones.
    op.create_index("work_orders_by_due", "work_orders", ["due_at", "work_order_id"])
    op.create_index(
        "work_orders_unanswered",
        "work_orders",
        ["due_at", "work_order_id"],
        postgresql_where=UNANSWERED,
    )
    # The sweeper's query: unanswered, not yet announced overdue, due_at passed.
    op.create_index(
        "work_orders_to_sweep",
        "work_orders",
        ["due_at"],
        postgresql_where=sa.text("first_reply_at IS NULL AND overdue_at IS NULL"),
    )
    # One unanswered work order per ticket and department, even with racing replicas.
    op.create_index(
        "work_orders_one_open_per_department",
        "work_orders",
        ["ticket_id", "department"],
        unique=True,
        postgresql_where=UNANSWERED,
    )
    op.create_table(
        "replies",
        sa.Column("reply_id", sa.String(64), primary_key=True),
        sa.Column("work_order_id", sa.String(64), nullable=False),
        sa.Column("ticket_id", sa.String(64), nullable=False),
        sa.Column("quality", sa.String(16), nullable=False),
        sa.Column("content", sa.Text, nullable=False),
        when("at"),
        when("recorded_at"),
        sa.Column("first", sa.Boolean, nullable=False),
    )
    op.create_index("ix_replies_work_order_id", "replies", ["work_order_id"])
    op.create_table(
        "callbacks",
        sa.Column("callback_id", sa.String(64), primary_key=True),
        sa.Column("ticket_id", sa.String(64), nullable=False),
        sa.Column("reached", sa.Boolean, nullable=False),
        sa.Column("satisfaction", sa.String(32)),
        when("at"),
    )
    op.create_index("ix_callbacks_ticket_id", "callbacks", ["ticket_id"])


def downgrade() -> None:
    for table in ("callbacks", "replies", "work_orders", "transfers", "tickets"):
        op.drop_table(table)
