"""Dispatch's app: transfers, work orders with working-day deadlines, department replies."""

from __future__ import annotations

from fastapi import FastAPI

from services.dispatch.api import router
from shared.runtime import ServiceSpec, create_service_app
from shared.settings import Settings


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build dispatch's app."""
    return create_service_app(
        ServiceSpec(
            name="dispatch",
            title="12345 hotline: dispatch",
            routers=[router],
            publishes=True,
            consumes=["intake", "followup"],
        ),
        settings or Settings(),
    )
