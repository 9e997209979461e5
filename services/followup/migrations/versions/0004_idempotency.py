"""The first answer to each (API key, Idempotency-Key), so a retried POST is done once.

Revision ID: 0004_idempotency
Revises: 0003
Create Date: 2026-12-03
"""

from shared.migrations.idempotency import create_idempotency_keys_v1, drop_idempotency_keys_v1

revision = "0004_idempotency"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_idempotency_keys_v1()


def downgrade() -> None:
    drop_idempotency_keys_v1()
