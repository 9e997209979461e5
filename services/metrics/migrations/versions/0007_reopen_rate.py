"""The reopen rate (重办率): per ticket, whether it has an answered callback and whether it
was reopened, as facts and as cell counters.

Tickets recorded before this revision get both from their stored callbacks, by the rule
followup now announces reopens with (each reached callback answered `unsatisfied` reopens
its ticket), and the cells get their sums; so the rate covers every ticket at once, without
waiting for a rebuild.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

COUNTERS = ("reopen_eligible", "reopened")
TICKET_DIMENSIONS = ("city", "channel", "scenario")
GRAINS = {
    "all": "DATE '1970-01-01'",
    "month": "date_trunc('month', submitted_at AT TIME ZONE 'Asia/Shanghai')::date",
    "day": "(submitted_at AT TIME ZONE 'Asia/Shanghai')::date",
}


def upgrade() -> None:
    op.add_column(
        "ticket_facts",
        sa.Column("answered_callbacks", sa.Integer, nullable=False, server_default="0"),
    )
    op.add_column("ticket_facts", sa.Column("reopened_at", sa.DateTime(timezone=True)))
    for name in COUNTERS:
        op.add_column(
            "ticket_facts", sa.Column(name, sa.Integer, nullable=False, server_default="0")
        )
        op.add_column(
            "rate_cells", sa.Column(name, sa.BigInteger, nullable=False, server_default="0")
        )
    op.execute(
        "UPDATE ticket_facts AS t SET answered_callbacks = c.answered, reopened_at = c.first\n"
        "FROM (SELECT ticket_id,\n"
        "        count(*) FILTER (WHERE satisfaction IS NOT NULL) AS answered,\n"
        "        min(at) FILTER (WHERE satisfaction = 'unsatisfied') AS first\n"
        "      FROM callback_facts WHERE reached GROUP BY ticket_id) AS c\n"
        "WHERE c.ticket_id = t.ticket_id"
    )
    op.execute(
        "UPDATE ticket_facts SET reopen_eligible = 1,"
        " reopened = (reopened_at IS NOT NULL)::int\n"
        "WHERE counted AND answered_callbacks > 0"
    )
    _add_to_cells()


def _add_to_cells() -> None:
    """The new counters' sums into the cells, in shard 0 (a cell is the sum of its shards).
    Ticket counters sit in the department-ALL cells only."""
    keys = ", ".join(TICKET_DIMENSIONS)
    dims = ", ".join(
        f"CASE WHEN GROUPING({name}) = 1 THEN '' ELSE {name} END" for name in TICKET_DIMENSIONS
    )
    sets = ", ".join(
        "(" + ", ".join(n for bit, n in enumerate(TICKET_DIMENSIONS) if mask & (1 << bit)) + ")"
        for mask in range(2 ** len(TICKET_DIMENSIONS))
    )
    for grain, period in GRAINS.items():
        op.execute(
            f"INSERT INTO rate_cells ({keys}, department, grain, period, shard, "
            f"reopen_eligible, reopened)\n"
            f"SELECT {dims}, '', '{grain}', period, 0, SUM(reopen_eligible), SUM(reopened)\n"
            f"FROM (SELECT {keys}, {period} AS period, reopen_eligible, reopened\n"
            f"      FROM ticket_facts WHERE counted AND reopen_eligible > 0) AS facts\n"
            f"GROUP BY period, GROUPING SETS ({sets})\n"
            "ON CONFLICT (city, channel, scenario, department, grain, period, shard)\n"
            "DO UPDATE SET reopen_eligible = EXCLUDED.reopen_eligible,"
            " reopened = EXCLUDED.reopened"
        )


def downgrade() -> None:
    for name in COUNTERS:
        op.drop_column("rate_cells", name)
        op.drop_column("ticket_facts", name)
    op.drop_column("ticket_facts", "reopened_at")
    op.drop_column("ticket_facts", "answered_callbacks")
