"""Which API key submitted each ticket; idempotency keys are per API key.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("tickets", sa.Column("submitted_by", sa.String(16)))
    # One caller's Idempotency-Key must not replay (or reveal) another caller's ticket.
    op.drop_constraint("tickets_idempotency_key_key", "tickets", type_="unique")
    op.create_unique_constraint(
        "tickets_idempotency_per_key", "tickets", ["submitted_by", "idempotency_key"]
    )
    op.create_index(
        "tickets_by_submitter", "tickets", ["submitted_by", "submitted_at", "ticket_id"]
    )


def downgrade() -> None:
    op.drop_index("tickets_by_submitter", "tickets")
    op.drop_constraint("tickets_idempotency_per_key", "tickets", type_="unique")
    op.create_unique_constraint("tickets_idempotency_key_key", "tickets", ["idempotency_key"])
    op.drop_column("tickets", "submitted_by")
