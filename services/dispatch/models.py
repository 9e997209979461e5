"""Dispatch's tables: its own metadata, so no other service's tables mix in."""

from __future__ import annotations

from sqlalchemy.orm import registry
from sqlmodel import SQLModel


class DispatchModel(SQLModel, registry=registry()):
    """Base of dispatch's tables."""
