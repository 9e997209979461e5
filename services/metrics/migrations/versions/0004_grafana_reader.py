"""Grafana's PostgreSQL role may read this schema, and only read it.

Grafana's data source connects as a login role of its own (`hotline_grafana` unless
`HOTLINE_GRAFANA_DB_ROLE` names another) that docker compose's PostgreSQL creates on its
first start (`deploy/postgres/init/`) with no privileges: roles are cluster-wide, so no
service's migration creates one. Here it gets USAGE on this schema, SELECT on its tables
and views (`unanswered_work_orders`, `working_days`, the facts, the rate cells), and the
same SELECT on tables this migrating user creates in the schema later (default
privileges). Where the role does not exist (the embedded stack has no Grafana) this does
nothing. The schema is the connection's (`search_path` is the service's schema, whose name
may carry a prefix), never a literal "metrics".

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

import logging
import os

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

ROLE_VARIABLE = "HOTLINE_GRAFANA_DB_ROLE"
DEFAULT_ROLE = "hotline_grafana"

log = logging.getLogger("services.metrics.migrations")


def reader_role() -> str | None:
    """The role Grafana reads as, quoted for SQL; None when the cluster has no such role."""
    # Alembic's env is given only the database URL and the schema, no Settings object: the
    # role's name comes straight from the environment.
    name = os.environ.get(ROLE_VARIABLE) or DEFAULT_ROLE
    bind = op.get_bind()
    exists = bind.execute(
        sa.text("SELECT 1 FROM pg_roles WHERE rolname = :name"), {"name": name}
    ).scalar()
    if not exists:
        log.info("no role %r in this cluster: no Grafana reads this schema, nothing granted", name)
        return None
    return quoted(name)


def quoted(name: str) -> str:
    return op.get_bind().dialect.identifier_preparer.quote_identifier(name)


def this_schema() -> str:
    return quoted(op.get_bind().execute(sa.text("SELECT current_schema()")).scalar_one())


def upgrade() -> None:
    role = reader_role()
    if role is None:
        return
    schema = this_schema()
    op.execute(f"GRANT USAGE ON SCHEMA {schema} TO {role}")
    op.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {role}")  # views included
    op.execute(f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT SELECT ON TABLES TO {role}")


def downgrade() -> None:
    role = reader_role()
    if role is None:
        return
    schema = this_schema()
    op.execute(f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} REVOKE SELECT ON TABLES FROM {role}")
    op.execute(f"REVOKE SELECT ON ALL TABLES IN SCHEMA {schema} FROM {role}")
    op.execute(f"REVOKE USAGE ON SCHEMA {schema} FROM {role}")
