"""Alembic environment of followup: only followup's schema."""

from services.followup.models import METADATA
from shared.migrations import run_env

run_env(METADATA)
