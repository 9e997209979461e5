"""The error answers in each service's OpenAPI document, declared once for every route.

Each operation behind an API key lists every error status it can answer, each a `Problem`
(`shared.problems`) in `application/problem+json`: 401, 403 and 429 (the key), 503 (the
database), 500; with a JSON body also 400 (malformed JSON), 413 and 422; with parameters
422; with a path parameter 404. A route's own notes (a 404's or 409's description, its
headers) are kept and get the same content. `Retry-After` is documented on 429 and 503
(and on 409s that may say "not yet known"), `Location` on every 201.

The notes are added to the generated document rather than to each route: the routers are
shared module objects, and one rule for every route is what keeps them alike.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Final
from urllib.parse import quote

from fastapi import FastAPI, Response

from shared.auth.http import AUTH_RESPONSES
from shared.errors import MALFORMED_JSON, RETRY_AFTER_HEADER, Responses
from shared.problems import PROBLEM_MEDIA_TYPE, Problem

_REF_TEMPLATE: Final = "#/components/schemas/{model}"
_PROBLEM_CONTENT: Final = {
    PROBLEM_MEDIA_TYPE: {"schema": {"$ref": _REF_TEMPLATE.format(model=Problem.__name__)}}
}
_METHODS: Final = frozenset({"get", "put", "post", "delete", "patch", "head", "options"})
_REPLACED_SCHEMAS: Final = ("HTTPValidationError", "ValidationError")
"""FastAPI's default 422 body, which these services never send."""

ERROR_RESPONSES: Final[Responses] = {
    404: {"description": "No such resource"},
    413: {"description": "The request body is larger than the limit (`max_body_bytes`)"},
    422: {
        "description": "The request is not valid (code `validation_failed`): `errors` names "
        "each refused field, like `body.submitted_at`, `query.since`, `path.ticket_id`"
    },
    500: {"description": "An unexpected error (code `internal_error`); the log has the rest"},
    503: {
        "description": "The database is unreachable (code `unavailable`): retry after "
        "`Retry-After` seconds",
        "headers": {"Retry-After": {**RETRY_AFTER_HEADER, "required": True}},
    },
}
"""Notes for the statuses every route of their kind can answer (with AUTH_RESPONSES and
MALFORMED_JSON)."""

LOCATION_HEADER: Final[dict[str, Any]] = {
    "description": "Where what was made can be read: its own URL, or (for a transfer, a reply, "
    "a callback) that of the ticket or work order that lists it",
    "schema": {"type": "string", "format": "uri-reference"},
    "required": True,
}

_FASTAPI_422 = "Validation Error"


def document_errors(app: FastAPI) -> None:
    """Make `app.openapi()` declare the error answers and headers above for every route
    behind an API key (operations routes such as /readyz keep their own)."""
    generate: Callable[[], dict[str, Any]] = app.openapi
    documented: dict[str, Any] | None = None

    def openapi() -> dict[str, Any]:
        nonlocal documented
        if documented is None:
            documented = with_problems(generate())
        return documented

    app.openapi = openapi  # type: ignore[method-assign]


def with_problems(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` (an OpenAPI document) with the error answers declared, changed in place."""
    for item in schema.get("paths", {}).values():
        for method, operation in item.items():
            if method in _METHODS and operation.get("security"):
                _declare_errors(operation)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    problem = Problem.model_json_schema(ref_template=_REF_TEMPLATE, mode="serialization")
    components.update(problem.pop("$defs", {}))
    components[Problem.__name__] = problem
    text = json.dumps(schema.get("paths", {}))
    for name in _REPLACED_SCHEMAS:
        if _REF_TEMPLATE.format(model=name) not in text:
            components.pop(name, None)
    return schema


def _declare_errors(operation: dict[str, Any]) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    parameters = operation.get("parameters", [])
    has_body = "requestBody" in operation
    statuses: Responses = {**AUTH_RESPONSES, 500: ERROR_RESPONSES[500], 503: ERROR_RESPONSES[503]}
    if has_body:
        statuses.update({**MALFORMED_JSON, 413: ERROR_RESPONSES[413]})
    if has_body or parameters:
        statuses[422] = ERROR_RESPONSES[422]
    if any(parameter.get("in") == "path" for parameter in parameters):
        statuses[404] = ERROR_RESPONSES[404]
    for status, note in statuses.items():
        answer = responses.setdefault(str(status), {})
        if not answer.get("description") or answer["description"] == _FASTAPI_422:
            answer["description"] = note["description"]
        if "headers" in note:
            answer["headers"] = {**note["headers"], **answer.get("headers", {})}
    for status, answer in responses.items():
        if status.isdigit() and int(status) >= 400:
            answer["content"] = dict(_PROBLEM_CONTENT)
        elif status == "201":
            answer["headers"] = {"Location": LOCATION_HEADER, **answer.get("headers", {})}


def set_location(response: Response, *segments: str) -> None:
    """`Location: /<segment>/...` of what a 201 created (or where it is listed), each
    segment percent-encoded: ids come from clients and events."""
    response.headers["Location"] = "/" + "/".join(quote(segment, safe="") for segment in segments)
