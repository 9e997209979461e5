"""Each ticket's event history (`ticket_events`), for timelines and as-of audits.

Events applied before this revision are not in it: `hotline metrics rebuild` fills it from
the topics, with everything else.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ticket_events",
        sa.Column("event_id", sa.String(64), primary_key=True),
        sa.Column("ticket_id", sa.String(64), nullable=False),
        sa.Column("ce_type", sa.String(255), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor_key_id", sa.String(64)),
        sa.Column("actor_role", sa.String(16)),
        sa.Column("actor_department", sa.String(64)),
        sa.Column("work_order_id", sa.String(64)),
        sa.Column("changes", postgresql.JSONB, nullable=False),
        sa.Column(
            "recorded_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.func.now(),
        ),
    )
    op.create_index("ticket_events_by_ticket", "ticket_events", ["ticket_id", "at"])


def downgrade() -> None:
    op.drop_table("ticket_events")
