"""The working-day calendar as a table, and the view of unanswered work orders with their
age in working days (what GET /audit/unanswered lists, for Grafana).

The service fills `working_days` at start (`services.metrics.calendar_days`). A work
order's age is the number of working days after the day it was created (Asia/Shanghai)
whose 24:00 has passed, as `shared.workdays.working_days_between` counts them: the working
days d with creation day < d < today, which `working_days_before` (working days before a
date) gives by one subtraction, two primary-key lookups per row. For a work order created
today the difference is -1 or 0 (today may be a working day), hence the clamp to 0; it is
null when either date lies outside the table (never 0 for an unknown calendar).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

UNANSWERED_VIEW = """
CREATE VIEW unanswered_work_orders AS
SELECT w.work_order_id,
       w.ticket_id,
       w.city,
       w.department,
       w.created_at,
       w.due_at,
       w.due_at < now() AS overdue,
       CASE
           WHEN today.working_days_before < after_creation.working_days_before THEN 0
           ELSE today.working_days_before - after_creation.working_days_before
       END AS age_working_days
FROM work_order_facts AS w
LEFT JOIN working_days AS today
       ON today.day = (now() AT TIME ZONE 'Asia/Shanghai')::date
LEFT JOIN working_days AS after_creation
       ON after_creation.day = (w.created_at AT TIME ZONE 'Asia/Shanghai')::date + 1
WHERE w.first_reply_at IS NULL
  AND w.created_known
"""


def upgrade() -> None:
    op.create_table(
        "working_days",
        sa.Column("day", sa.Date, primary_key=True),
        sa.Column("is_working_day", sa.Boolean, nullable=False),
        sa.Column("working_days_before", sa.Integer, nullable=False),
    )
    op.execute(UNANSWERED_VIEW)


def downgrade() -> None:
    op.execute("DROP VIEW unanswered_work_orders")
    op.drop_table("working_days")
