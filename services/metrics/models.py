"""Metrics's tables: its own metadata, so no other service's tables mix in."""

from __future__ import annotations

from sqlalchemy.orm import registry
from sqlmodel import SQLModel


class MetricsModel(SQLModel, registry=registry()):
    """Base of metrics's tables."""
