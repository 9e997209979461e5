"""Alembic environment of metrics: only metrics's schema."""

from services.metrics.models import METADATA
from shared.migrations import run_env

run_env(METADATA)
