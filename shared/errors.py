"""Domain errors and the one place they become HTTP answers."""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from shared.retry import is_transient

log = logging.getLogger(__name__)


MALFORMED_JSON: dict[int | str, dict[str, Any]] = {
    400: {"description": "The body is not valid JSON"}
}
"""OpenAPI note for routes with a JSON body: FastAPI answers malformed JSON with 400."""


def not_yet_known_response(service: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI note for routes about a ticket another service announces: 409 until its event
    has reached `service`."""
    return {
        409: {
            "description": f"The ticket is not known to {service} yet (its event may still be "
            "on its way): retry after `Retry-After` seconds",
        }
    }


class DomainError(Exception):
    """A request that cannot be done as asked; subclasses say which HTTP status fits."""

    status_code = 400
    code = "bad_request"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}


class NotFound(DomainError):
    """The named resource does not exist."""

    status_code = 404
    code = "not_found"


class Conflict(DomainError):
    """The request contradicts the current state (e.g. an idempotency key reused)."""

    status_code = 409
    code = "conflict"


class NotYetKnown(Conflict):
    """The resource's event may still be on its way: try again shortly."""

    code = "not_yet_known"

    def __init__(self, message: str, retry_after_seconds: int = 1) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after_seconds)})


def install_error_handlers(app: FastAPI, retry_after_seconds: int = 1) -> None:
    """Map every DomainError to its status with a JSON body `{"detail", "code"}`, and a
    database that cannot be reached to 503 (retry later) rather than 500."""

    @app.exception_handler(sa.exc.DBAPIError)
    @app.exception_handler(OSError)
    async def _unavailable(request: Request, exc: Exception) -> JSONResponse:
        if not is_transient(exc):
            raise exc
        log.warning("database unreachable", extra={"path": request.url.path, "error": repr(exc)})
        return JSONResponse(
            status_code=503,
            content={"detail": "the database is unreachable; retry shortly", "code": "unavailable"},
            headers={"Retry-After": str(retry_after_seconds)},
        )

    @app.exception_handler(DomainError)
    async def _domain_error(request: Request, exc: DomainError) -> JSONResponse:
        return JSONResponse(
            status_code=exc.status_code,
            content={"detail": exc.message, "code": exc.code},
            headers=exc.headers,
        )
