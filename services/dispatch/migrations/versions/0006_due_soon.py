"""When the sweeper warned that a work order is due soon (督办), so it warns once.

Revision ID: 0006_due_soon
Revises: 0005_ticket_reopens
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_due_soon"
down_revision = "0005_ticket_reopens"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("work_orders", sa.Column("due_soon_at", sa.DateTime(timezone=True)))
    # The due-soon sweep's query: unanswered, not yet warned, by deadline.
    op.create_index(
        "work_orders_to_warn",
        "work_orders",
        ["due_at"],
        postgresql_where=sa.text("first_reply_at IS NULL AND due_soon_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("work_orders_to_warn", table_name="work_orders")
    op.drop_column("work_orders", "due_soon_at")
