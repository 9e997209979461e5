"""Revisions of the idempotency-key table (`shared.idempotency`), as the migrations of the
services that take an Idempotency-Key on their commands create it.

A migration is history: these functions stay as they were when first released; a change to
`shared.idempotency.idempotency_keys` comes with a new function here and a new migration in
every service that has the table. The drift tests check the two agree.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB


def create_idempotency_keys_v1() -> None:
    """Revision 1: the first answer to each (API key, Idempotency-Key), and an index by age
    for pruning."""
    op.create_table(
        "idempotency_keys",
        sa.Column("key_id", sa.String(64), primary_key=True),
        sa.Column("idempotency_key", sa.String(255), primary_key=True),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("status_code", sa.SmallInteger),
        sa.Column("response", JSONB),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
    )
    op.create_index("idempotency_keys_by_age", "idempotency_keys", ["created_at"])


def drop_idempotency_keys_v1() -> None:
    """Undo revision 1: stored answers are lost, so retries of earlier requests are done anew."""
    op.drop_table("idempotency_keys")
