"""Intake's app: records citizen requests and publishes `hotline.ticket.submitted.v1`."""

from __future__ import annotations

from fastapi import FastAPI

from services.intake.api import router
from services.intake.privacy import PhoneHasher, load_or_create_key
from shared.runtime import ServiceSpec, create_service_app
from shared.settings import Settings


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build intake's app; the phone hash key is loaded here, never at import."""
    settings = settings or Settings()
    app = create_service_app(
        ServiceSpec(name="intake", title="12345 hotline: intake", routers=[router], publishes=True),
        settings,
    )
    key = load_or_create_key(settings.phone_hash_key, settings.data_dir / "phone-hash.key")
    app.state.phone_hasher = PhoneHasher(key)
    return app
