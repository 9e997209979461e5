"""Outbox rows that can never be published are set aside instead of stalling the relay.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from shared.migrations.bus import add_outbox_set_aside_v2, remove_outbox_set_aside_v2

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    add_outbox_set_aside_v2()


def downgrade() -> None:
    remove_outbox_set_aside_v2()
