"""Domain errors and the one place every error becomes an HTTP answer: a problem-details
body (RFC 9457, `shared.problems`), whatever raised it.

| raised | status | code |
|---|---|---|
| a `DomainError` | its `status_code` | its `code` |
| malformed JSON | 400 | malformed_json |
| a request that fails validation | 422 | validation_failed (with `errors`) |
| FastAPI's or Starlette's HTTPException (404, 405, ...) | its status | see `_CODES` |
| a body over the limit | 413 | too_large |
| the database unreachable | 503 | unavailable (with Retry-After) |
| anything else | 500 | internal_error (logged with its traceback; nothing of it sent) |
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Final

import sqlalchemy as sa
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.problems import (
    FieldError,
    excerpt,
    field_errors,
    printable,
    problem_response,
    summary,
    title_of,
)
from shared.retry import is_transient

log = logging.getLogger(__name__)

Responses = dict[int | str, dict[str, Any]]
"""OpenAPI notes for a route's answers: `responses=` of a route decorator."""

RETRY_AFTER_HEADER: Final[dict[str, Any]] = {
    "description": "Seconds to wait before trying again",
    "schema": {"type": "integer", "minimum": 1},
}
"""The `Retry-After` header as OpenAPI documents it (`shared.openapi` marks it required
where every answer of the status has it)."""

MALFORMED_JSON: Final[Responses] = {
    400: {"description": "The body is not valid JSON (code `malformed_json`)"}
}
"""OpenAPI note for routes with a JSON body (`shared.openapi` adds it to every such route)."""


def not_yet_known_response(service: str, also: str | None = None) -> Responses:
    """OpenAPI note for routes about a ticket another service announces: 409 until its event
    has reached `service`; `also` names another reason for a 409 on the route."""
    description = (
        f"The ticket is not known to {service} yet (code `not_yet_known`; its event may still "
        "be on its way): retry after `Retry-After` seconds"
    )
    return {
        409: {
            "description": f"{description}; or {also}" if also else description,
            "headers": {"Retry-After": RETRY_AFTER_HEADER},
        }
    }


class DomainError(Exception):
    """A request that cannot be done as asked; subclasses say which HTTP status fits.
    `field` (a dotted location like `body.at`) names the field a 422 is about."""

    status_code = 400
    code = "bad_request"

    def __init__(
        self, message: str, *, headers: dict[str, str] | None = None, field: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}
        self.field = field


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


class BodyTooLarge(HTTPException):
    """A request body over the limit, noticed while it arrives. An HTTPException, so FastAPI
    lets it through its body parsing (which turns other errors into a 400)."""

    def __init__(self) -> None:
        super().__init__(status_code=413, detail="the request body is too large")


_CODES: Final[dict[int, str]] = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "validation_failed",
    429: "rate_limited",
    500: "internal_error",
    503: "unavailable",
}
"""The `code` of an HTTPException's problem, by status."""


def code_of(status: int) -> str:
    """The problem `code` for an HTTP status without a more specific one."""
    return _CODES.get(status, f"http_{status}")


def install_error_handlers(
    app: FastAPI, retry_after_seconds: int = 1, max_body_bytes: int | None = None
) -> None:
    """Answer every error of `app` with a problem-details body (table in the module doc);
    with `max_body_bytes`, refuse larger request bodies with 413 as they arrive, before
    anything parses them."""

    @app.exception_handler(sa.exc.DBAPIError)
    @app.exception_handler(OSError)
    async def _unavailable(request: Request, exc: Exception) -> Response:
        if not is_transient(exc):
            raise exc
        log.warning("database unreachable", extra={"path": request.url.path, "error": repr(exc)})
        return problem_response(
            503,
            "unavailable",
            "the database is unreachable; retry shortly",
            path=request.url.path,
            headers={"Retry-After": str(retry_after_seconds)},
        )

    @app.exception_handler(DomainError)
    async def _domain_error(request: Request, exc: DomainError) -> Response:
        errors = None
        if exc.field is not None:
            errors = [FieldError(field=exc.field, message=printable(exc.message, 300))]
        return problem_response(
            exc.status_code,
            exc.code,
            exc.message,
            path=request.url.path,
            headers=exc.headers,
            errors=errors,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        detail = exc.detail if isinstance(exc.detail, str) else title_of(exc.status_code)
        return problem_response(
            exc.status_code,
            code_of(exc.status_code),
            detail,
            path=request.url.path,
            headers=exc.headers,
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(request: Request, exc: RequestValidationError) -> Response:
        return invalid_request_response(exc.errors(), path=request.url.path)

    if max_body_bytes is not None:
        app.add_middleware(LimitBody, max_bytes=max_body_bytes)
    app.add_middleware(AnswerUnexpectedErrors)


def invalid_request_response(errors: Sequence[Any], *, path: str) -> Response:
    """400 for a body that is not JSON, else 422 listing the refused fields."""
    malformed = next((e for e in errors if e.get("type") == "json_invalid"), None)
    if malformed is not None:
        reason = (malformed.get("ctx") or {}).get("error", "not JSON")
        position = malformed.get("loc", ("body", 0))[-1]
        detail = f"the body is not valid JSON: {reason} (at character {position})"
        return problem_response(
            400,
            "malformed_json",
            detail,
            path=path,
            errors=[FieldError(field="body", message=printable(detail, 300), input=None)],
        )
    listed = field_errors(errors)
    return problem_response(
        422, "validation_failed", summary(listed, len(errors)), path=path, errors=listed
    )


class LimitBody:
    """ASGI middleware: a body declared (Content-Length) or found to be over `max_bytes` is
    refused with a 413 problem. FastAPI's own `max_body_size` answers a declared one in plain
    text whatever the app says, so this takes its place."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse at once if the declared length is over; else count what arrives."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            response = too_large_response(scope.get("path", ""))
            await response(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge()
            return message

        await self.app(scope, counted, send)


def too_large_response(path: str) -> Response:
    """The 413 problem for a body over the limit."""
    return problem_response(413, "too_large", "the request body is too large", path=path)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class AnswerUnexpectedErrors:
    """ASGI middleware: an exception nothing else handled is logged once, with its traceback,
    and answered with a 500 problem that says nothing of it (the log has it all)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the app; on an unexpected exception answer 500 if nothing was sent yet."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception:
            path = scope.get("path", "")
            log.exception(
                "unexpected error answering a request",
                extra={"method": scope.get("method"), "path": excerpt(path)},
            )
            if started:  # too late for an answer: the server closes the connection
                raise
            response = problem_response(
                500,
                "internal_error",
                "an unexpected error occurred; it has been logged",
                path=path,
            )
            await response(scope, receive, send)
