"""Alembic environment of intake: only intake's schema."""

from services.intake.models import METADATA
from shared.migrations import run_env

run_env(METADATA)
