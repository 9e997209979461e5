"""Metrics's app: the evaluation rates and the unanswered work-order audit."""

from __future__ import annotations

from fastapi import FastAPI

from services.metrics.api import router
from shared.runtime import ServiceSpec, create_service_app
from shared.settings import Settings


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build metrics's app."""
    return create_service_app(
        ServiceSpec(
            name="metrics",
            title="12345 hotline: metrics",
            routers=[router],
            publishes=False,
            consumes=["intake", "dispatch", "followup"],
        ),
        settings or Settings(),
    )
