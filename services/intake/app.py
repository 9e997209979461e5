"""Intake's app: records citizen requests and publishes `hotline.ticket.submitted.v1`."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from services.intake.api import router
from services.intake.deps import IntakeDeps
from services.intake.privacy import PhoneHasher, load_or_create_key
from services.intake.projections import projections
from shared.app import create_service_app
from shared.runtime import Runtime, ServiceSpec
from shared.settings import Settings

SPEC = ServiceSpec(
    name="intake",
    title="12345 hotline: intake",
    migrations=Path(__file__).parent / "migrations",
    routers=[router],
    publishes=True,
    projections=projections,
)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build intake's app; the phone hash key is loaded here, never at import."""
    settings = settings or Settings()
    runtime = Runtime(SPEC, settings)
    key = load_or_create_key(settings.phone_hash_key, settings.data_dir / "phone-hash.key")
    deps = IntakeDeps(database=runtime.database, settings=settings, hasher=PhoneHasher(key))
    return create_service_app(runtime, deps)
