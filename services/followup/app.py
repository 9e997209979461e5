"""Followup's app: callbacks (回访), satisfaction and the due-callback queue."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from services.followup.api import router
from services.followup.projections import projections
from shared.app import ServiceDeps, create_service_app
from shared.names import CONSUMES, PUBLISHERS
from shared.runtime import Runtime, ServiceSpec
from shared.settings import Settings

SPEC = ServiceSpec(
    name="followup",
    title="12345 hotline: followup",
    migrations=Path(__file__).parent / "migrations",
    routers=[router],
    publishes="followup" in PUBLISHERS,
    consumes=CONSUMES["followup"],
    projections=projections,
)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build followup's app."""
    settings = settings or Settings()
    runtime = Runtime(SPEC, settings)
    return create_service_app(
        runtime, ServiceDeps(database=runtime.database, settings=settings, auth=runtime.auth)
    )
