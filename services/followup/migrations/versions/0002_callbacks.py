"""Tickets and first replies as followup heard of them, and callbacks.

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


def when(name: str) -> sa.Column[datetime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False)


def upgrade() -> None:
    op.create_table(
        "tickets",
        sa.Column("ticket_id", sa.String(64), primary_key=True),
        sa.Column("city", sa.String(64), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("scenario", sa.String(64), nullable=False),
        when("submitted_at"),
        sa.Column("resolved_at_first_contact", sa.Boolean, nullable=False),
        when("known_at"),
    )
    op.create_index("ix_tickets_city", "tickets", ["city"])
    op.create_table(
        "replied_work_orders",
        sa.Column("work_order_id", sa.String(64), primary_key=True),
        sa.Column("ticket_id", sa.String(64), nullable=False),
        sa.Column("department", sa.String(64), nullable=False),
        when("first_reply_at"),
    )
    # The queue looks up a ticket's latest first reply, and its callbacks since then.
    op.create_index(
        "replied_work_orders_by_ticket", "replied_work_orders", ["ticket_id", "first_reply_at"]
    )
    op.create_table(
        "callbacks",
        sa.Column("callback_id", sa.String(64), primary_key=True),
        sa.Column("ticket_id", sa.String(64), nullable=False),
        sa.Column("reached", sa.Boolean, nullable=False),
        sa.Column("satisfaction", sa.String(32)),
        when("at"),
        when("recorded_at"),
    )
    op.create_index("callbacks_by_ticket", "callbacks", ["ticket_id", "at"])


def downgrade() -> None:
    for table in ("callbacks", "replied_work_orders", "tickets"):
        op.drop_table(table)
