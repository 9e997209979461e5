"""Alembic environment of the `auth` schema (API keys), which every service reads."""

from shared.auth.store import schemaless_metadata
from shared.migrations import run_env

run_env(schemaless_metadata())
