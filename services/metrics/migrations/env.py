"""Alembic environment of metrics: only metrics's schema."""

from services.metrics.models import MetricsModel
from shared.migrations import run_env

run_env(MetricsModel.metadata)
