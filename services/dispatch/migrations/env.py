"""Alembic environment of dispatch: only dispatch's schema."""

from services.dispatch.models import DispatchModel
from shared.migrations import run_env

run_env(DispatchModel.metadata)
