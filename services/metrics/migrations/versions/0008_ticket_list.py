"""What the ticket list filters on: category, evaluator and the citizen's phone hash (the
keyed hash intake announces, never the number), and an index for the list's order.

Tickets recorded before this revision have none of the three until `hotline metrics
rebuild` reads them again from the topics.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("ticket_facts", sa.Column("category", sa.String(16)))
    op.add_column("ticket_facts", sa.Column("evaluator", sa.String(64)))
    op.add_column("ticket_facts", sa.Column("citizen_phone_hash", sa.String(64)))
    op.create_index("ticket_facts_by_list_order", "ticket_facts", ["submitted_at", "ticket_id"])
    op.create_index(
        "ticket_facts_by_phone",
        "ticket_facts",
        ["citizen_phone_hash"],
        postgresql_where=sa.text("citizen_phone_hash IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ticket_facts_by_phone", "ticket_facts")
    op.drop_index("ticket_facts_by_list_order", "ticket_facts")
    for name in ("citizen_phone_hash", "evaluator", "category"):
        op.drop_column("ticket_facts", name)
