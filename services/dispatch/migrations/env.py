"""Alembic environment of dispatch: only dispatch's schema."""

from services.dispatch.models import METADATA
from shared.migrations import run_env

run_env(METADATA)
