"""Domain errors and the one place they become HTTP answers."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse


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


def install_error_handlers(app: FastAPI) -> None:
    """Map every DomainError to its status with a JSON body `{"detail", "code"}`."""

    @app.exception_handler(DomainError)
    async def _domain_error(request: Request, exc: DomainError) -> JSONResponse:
        return JSONResponse(
            status_code=exc.status_code,
            content={"detail": exc.message, "code": exc.code},
            headers=exc.headers,
        )
