"""Rate cells in shards: each writer adds to a shard no other writer holds at the time, so
metrics replicas apply batches at once instead of one after another; a cell is the sum of
its rows over the shards. Existing cells become shard 0.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

KEY = ["city", "channel", "scenario", "department", "grain", "period"]


def upgrade() -> None:
    op.add_column(
        "rate_cells", sa.Column("shard", sa.SmallInteger, nullable=False, server_default="0")
    )
    op.drop_constraint("rate_cells_pkey", "rate_cells", type_="primary")
    op.create_primary_key("rate_cells_pkey", "rate_cells", [*KEY, "shard"])


def downgrade() -> None:
    # Fold the shards back into one row per cell before the key narrows again.
    counters = [
        column["name"]
        for column in sa.inspect(op.get_bind()).get_columns("rate_cells")
        if column["name"] not in {*KEY, "shard", "grouping_set"}
    ]
    sums = ", ".join(f"SUM({name}) AS {name}" for name in counters)
    key = ", ".join(KEY)
    op.execute(
        "CREATE TEMPORARY TABLE folded ON COMMIT DROP AS"
        f" SELECT {key}, {sums} FROM rate_cells GROUP BY {key}"
    )
    op.execute("DELETE FROM rate_cells")
    op.drop_constraint("rate_cells_pkey", "rate_cells", type_="primary")
    op.drop_column("rate_cells", "shard")
    op.create_primary_key("rate_cells_pkey", "rate_cells", KEY)
    columns = ", ".join([*KEY, *counters])
    op.execute(f"INSERT INTO rate_cells ({columns}) SELECT {columns} FROM folded")
