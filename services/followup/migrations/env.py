"""Alembic environment of followup: only followup's schema."""

from services.followup.models import FollowupModel
from shared.migrations import run_env

run_env(FollowupModel.metadata)
