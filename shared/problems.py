"""RFC 9457 problem details: the one shape of every error answer of every service.

    HTTP/1.1 422 Unprocessable Content
    Content-Type: application/problem+json

    {"type": "https://hotline.invalid/problems/validation_failed",
     "title": "Unprocessable Content", "status": 422,
     "detail": "body.submitted_at: must not be before 2000-01-01T00:00:00+00:00",
     "instance": "/tickets", "code": "validation_failed",
     "errors": [{"field": "body.submitted_at", "message": "must not be before ...",
                 "input": "0001-01-01T00:00:00Z"}]}

`code` is the stable name a program branches on (and the last segment of `type`); `title`
is the status's reason phrase; `detail` is a sentence for people. `errors` lists the fields a
400 or 422 is about, each with an excerpt of what was sent: at most EXCERPT_CHARS
characters, control characters and unpaired surrogates escaped, a NaN or an infinity as text,
so the answer is always small, printable, valid JSON, whatever the request held.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any, Final
from urllib.parse import quote

from pydantic import BaseModel, Field
from starlette.responses import JSONResponse

PROBLEM_MEDIA_TYPE: Final = "application/problem+json"
PROBLEM_TYPE_BASE: Final = "https://hotline.invalid/problems/"
"""`type` is this followed by `code`: a stable URI naming the kind of problem (the reserved
`.invalid` domain: an identifier, not a page to fetch)."""
EXCERPT_CHARS: Final = 80
"""At most this much of a refused value is echoed back."""
MAX_FIELD_ERRORS: Final = 20
"""At most this many field errors are listed; `detail` says how many there were."""
_MAX_TEXT_CHARS: Final = 300
_MAX_SAFE_INTEGER: Final = 2**53

_REASONS: Final[dict[int, str]] = {413: "Content Too Large", 422: "Unprocessable Content"}
"""RFC 9110's reason phrases where Python 3.11's `http.HTTPStatus` still has the old ones."""

Excerpt = str | int | float | bool | None


class FieldError(BaseModel):
    """One refused field of a request."""

    field: str = Field(
        description="Where: `body.submitted_at`, `query.since`, `path.ticket_id`, "
        "`header.Idempotency-Key` (dotted, list positions as numbers)",
        examples=["body.submitted_at"],
    )
    message: str = Field(description="What is wrong with it")
    input: Excerpt = Field(
        default=None,
        description="An excerpt of what was sent (at most 80 characters; control characters "
        "and unpaired surrogates escaped; NaN and infinities as text); null when missing",
    )


class Problem(BaseModel):
    """An error answer (RFC 9457 problem details, `application/problem+json`)."""

    type: str = Field(
        description="A URI naming the kind of problem: `https://hotline.invalid/problems/<code>`",
        examples=["https://hotline.invalid/problems/not_found"],
    )
    title: str = Field(description="The HTTP status's reason phrase", examples=["Not Found"])
    status: int = Field(ge=400, le=599, description="The HTTP status code", examples=[404])
    detail: str = Field(description="What went wrong, for people")
    instance: str = Field(description="The request's path", examples=["/tickets/abc"])
    code: str = Field(
        description="The stable name of the problem, for programs: bad_request, "
        "malformed_json, validation_failed, unauthenticated, forbidden, not_found, "
        "method_not_allowed, conflict, not_yet_known, too_large, rate_limited, unavailable, "
        "internal_error, or a service's own (e.g. open_work_order_exists)",
        examples=["not_found"],
    )
    errors: list[FieldError] | None = Field(
        default=None,
        description=f"The refused fields (at most {MAX_FIELD_ERRORS}), with a 400 or 422",
    )


class ProblemResponse(JSONResponse):
    """A JSON response with the problem-details media type."""

    media_type = PROBLEM_MEDIA_TYPE


def title_of(status: int) -> str:
    """The reason phrase of `status` (RFC 9110)."""
    if status in _REASONS:
        return _REASONS[status]
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def problem_response(
    status: int,
    code: str,
    detail: str,
    *,
    path: str,
    headers: Mapping[str, str] | None = None,
    errors: Sequence[FieldError] | None = None,
) -> ProblemResponse:
    """The problem-details answer; `path` is the request's (decoded) path."""
    problem = Problem(
        type=PROBLEM_TYPE_BASE + code,
        title=title_of(status),
        status=status,
        detail=printable(detail, _MAX_TEXT_CHARS),
        instance=quote(path[:_MAX_TEXT_CHARS], safe="/", errors="backslashreplace"),
        code=code,
        errors=list(errors) if errors is not None else None,
    )
    return ProblemResponse(
        problem.model_dump(mode="json", exclude_none=errors is None),
        status_code=status,
        headers=dict(headers) if headers else None,
    )


def field_errors(errors: Sequence[Mapping[str, Any]]) -> list[FieldError]:
    """The first MAX_FIELD_ERRORS of pydantic's or FastAPI's errors, each named by its dotted
    location and with an excerpt of its input (none for a missing field, whose `input` is
    the whole enclosing object)."""
    return [
        FieldError(
            field=field_of(error.get("loc", ())),
            message=message_of(error),
            input=None if error.get("type") == "missing" else excerpt(error.get("input")),
        )
        for error in errors[:MAX_FIELD_ERRORS]
    ]


def field_of(loc: Sequence[Any]) -> str:
    """`("body", "call", "wait_seconds")` as `body.call.wait_seconds`."""
    return printable(".".join(str(part) for part in loc), _MAX_TEXT_CHARS) or "request"


def message_of(error: Mapping[str, Any]) -> str:
    """The error's message without pydantic's "Value error, " prefix."""
    message = str(error.get("msg", "invalid"))
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    return printable(message, _MAX_TEXT_CHARS)


def summary(errors: Sequence[FieldError], total: int) -> str:
    """A `detail` for a list of field errors: the one error, or how many and which fields."""
    if total == 1 and errors:
        return f"{errors[0].field}: {errors[0].message}"
    fields = ", ".join(dict.fromkeys(error.field for error in errors[:5]))
    more = ", …" if total > 5 else ""
    return f"{total} fields are invalid: {fields}{more}"


def excerpt(value: Any) -> Excerpt:
    """What may be echoed of a refused value: JSON scalars as they are (a string cut to
    EXCERPT_CHARS, escaped where unprintable), anything else as a short text."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if abs(value) <= _MAX_SAFE_INTEGER else printable(str(value)[:100])
    if isinstance(value, float):
        return value if math.isfinite(value) else json.dumps(value)  # NaN, Infinity
    if isinstance(value, bytes):
        return printable(value[: EXCERPT_CHARS * 4].decode("utf-8", "backslashreplace"))
    if isinstance(value, str):
        return printable(value)
    try:
        text = json.dumps(value, ensure_ascii=False, default=str, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError):
        text = type(value).__name__
    return printable(text)


def printable(text: str, limit: int = EXCERPT_CHARS) -> str:
    """`text` with control characters and unpaired surrogates escaped (`\\x00`, `\\ud800`),
    cut to `limit` characters (ending with "…" when cut)."""
    head = text[: limit + 1]
    escaped = "".join(
        char.encode("unicode_escape").decode("ascii") if _unprintable(char) else char
        for char in head
    )
    if len(text) > limit or len(escaped) > limit:
        return escaped[: limit - 1] + "…"
    return escaped


def _unprintable(char: str) -> bool:
    code = ord(char)
    return code < 0x20 or code == 0x7F or 0xD800 <= code <= 0xDFFF
