"""The outbox and processed events.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from alembic import op

from shared.migrations.bus import create_bus_tables_v1

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_bus_tables_v1()


def downgrade() -> None:
    op.drop_table("processed_events")
    op.drop_table("outbox")
