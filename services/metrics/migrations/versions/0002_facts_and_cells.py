"""Fact tables (tickets, transfers, work orders, callbacks) and the aggregate rate cells.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# Frozen here as they were at this revision; `services.metrics.rates` may grow later ones.
TICKET_COUNTERS = (
    "tickets",
    "answered_tickets",
    "resolved_first",
    "phone_tickets",
    "phone_answered",
    "phone_wait_seconds",
    "phone_answered_within_15s",
    "callback_eligible",
    "callback_eligible_called",
)
CALLBACK_COUNTERS = (
    "callbacks",
    "callbacks_reached",
    "callbacks_satisfied",
    "callbacks_basically_satisfied",
    "callbacks_unsatisfied",
)
TRANSFER_COUNTERS = ("transfers", "transfers_failed", "three_way", "three_way_failed")
WORK_ORDER_COUNTERS = (
    "work_orders",
    "replied_definite",
    "replied_partial",
    "replied_none",
    "replied_on_time_definite",
    "replied_on_time_partial",
    "replied_on_time_none",
)
ALL_COUNTERS = TICKET_COUNTERS + CALLBACK_COUNTERS + TRANSFER_COUNTERS + WORK_ORDER_COUNTERS


def counters(names: tuple[str, ...], *, big: bool = False) -> list[sa.Column[object]]:
    integer: type[sa.Integer] = sa.BigInteger if big else sa.Integer
    return [
        sa.Column(
            name,
            sa.Numeric(20 if big else 14, 3) if name == "phone_wait_seconds" else integer(),
            nullable=False,
            server_default="0",
        )
        for name in names
    ]


def ticket_dimensions() -> list[sa.Column[object]]:
    return [
        sa.Column("counted", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("city", sa.String(64)),
        sa.Column("channel", sa.String(16)),
        sa.Column("scenario", sa.String(64)),
        sa.Column("submitted_at", sa.DateTime(timezone=True)),
    ]


def upgrade() -> None:
    op.create_table(
        "ticket_facts",
        sa.Column("ticket_id", sa.String(64), primary_key=True),
        *ticket_dimensions(),
        sa.Column("answered", sa.Boolean),
        sa.Column("wait_seconds", sa.Numeric(12, 3)),
        sa.Column("resolved_at_first_contact", sa.Boolean),
        sa.Column("replied_work_orders", sa.Integer, nullable=False, server_default="0"),
        sa.Column("callbacks_logged", sa.Integer, nullable=False, server_default="0"),
        *counters(TICKET_COUNTERS),
    )
    op.create_index("ticket_facts_by_time", "ticket_facts", ["submitted_at"])

    op.create_table(
        "transfer_facts",
        sa.Column("transfer_id", sa.String(64), primary_key=True),
        sa.Column("ticket_id", sa.String(64), nullable=False),
        sa.Column("department", sa.String(64), nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("connected", sa.Boolean, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        *ticket_dimensions(),
        *counters(TRANSFER_COUNTERS),
    )
    op.create_index("ix_transfer_facts_ticket_id", "transfer_facts", ["ticket_id"])
    op.create_index("transfer_facts_by_time", "transfer_facts", ["submitted_at"])

    op.create_table(
        "work_order_facts",
        sa.Column("work_order_id", sa.String(64), primary_key=True),
        sa.Column("ticket_id", sa.String(64), nullable=False),
        sa.Column("department", sa.String(64), nullable=False),
        sa.Column("created_known", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("created_at", sa.DateTime(timezone=True)),
        sa.Column("due_at", sa.DateTime(timezone=True)),
        sa.Column("first_reply_id", sa.String(64)),
        sa.Column("first_reply_at", sa.DateTime(timezone=True)),
        sa.Column("first_reply_quality", sa.String(16)),
        *ticket_dimensions(),
        *counters(WORK_ORDER_COUNTERS),
    )
    op.create_index("ix_work_order_facts_ticket_id", "work_order_facts", ["ticket_id"])
    op.create_index("work_order_facts_by_time", "work_order_facts", ["submitted_at"])
    op.create_index(
        "work_order_facts_unreplied",
        "work_order_facts",
        ["due_at", "work_order_id"],
        postgresql_include=["counted", "city", "channel", "scenario", "department", "submitted_at"],
        postgresql_where=sa.text("first_reply_at IS NULL AND created_known"),
    )

    op.create_table(
        "callback_facts",
        sa.Column("callback_id", sa.String(64), primary_key=True),
        sa.Column("ticket_id", sa.String(64), nullable=False),
        sa.Column("reached", sa.Boolean, nullable=False),
        sa.Column("satisfaction", sa.String(32)),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        *ticket_dimensions(),
        *counters(CALLBACK_COUNTERS),
    )
    op.create_index("ix_callback_facts_ticket_id", "callback_facts", ["ticket_id"])
    op.create_index("callback_facts_by_time", "callback_facts", ["submitted_at"])

    op.create_table(
        "rate_cells",
        sa.Column("city", sa.String(64), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("scenario", sa.String(64), nullable=False),
        sa.Column("department", sa.String(64), nullable=False),
        sa.Column("grain", sa.String(8), nullable=False),
        sa.Column("period", sa.Date, nullable=False),
        sa.Column(
            "grouping_set",
            sa.SmallInteger,
            sa.Computed(
                "(city <> '')::int + 2 * (channel <> '')::int"
                " + 4 * (scenario <> '')::int + 8 * (department <> '')::int",
                persisted=True,
            ),
            nullable=False,
        ),
        *counters(ALL_COUNTERS, big=True),
        sa.PrimaryKeyConstraint("city", "channel", "scenario", "department", "grain", "period"),
    )
    op.create_index("rate_cells_by_grouping_set", "rate_cells", ["grouping_set", "grain", "period"])


def downgrade() -> None:
    for table in (
        "rate_cells",
        "callback_facts",
        "work_order_facts",
        "transfer_facts",
        "ticket_facts",
    ):
        op.drop_table(table)
