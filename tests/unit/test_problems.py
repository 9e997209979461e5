"""One error format: every error an app with `install_error_handlers` can answer is an RFC 9457
problem (`application/problem+json`) with a string `detail`, small and valid JSON whatever
the request held; headers such as Allow and Retry-After are kept."""

import json
import logging
import math

import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field

from shared.errors import NotFound, NotYetKnown, install_error_handlers
from shared.inputs import SafeText
from shared.problems import EXCERPT_CHARS, MAX_FIELD_ERRORS, excerpt, printable

MEMBERS = {"type", "title", "status", "detail", "instance", "code"}


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: SafeText = Field(max_length=10)
    wait_seconds: float = Field(ge=0, le=100)


def app_with_errors() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app, retry_after_seconds=3, max_body_bytes=4096)

    @app.post("/things")
    async def create(body: Body) -> dict[str, str]:
        return {"name": body.name}

    @app.get("/things/{thing_id}")
    async def read(thing_id: str) -> dict[str, str]:
        if thing_id == "late":
            raise NotYetKnown("thing late is not known yet", retry_after_seconds=3)
        raise NotFound(f"thing {thing_id} not found")

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret connection string postgres://user:pw@db")

    @app.get("/database-down")
    async def database_down() -> None:
        raise ConnectionRefusedError("connect to 10.0.0.5:5432 refused")

    return app


async def call(method: str, path: str, **kwargs) -> httpx.Response:
    transport = httpx.ASGITransport(app=app_with_errors(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.request(method, path, **kwargs)


def problem(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    body = json.loads(response.text, parse_constant=_no_constants)
    assert body.keys() >= MEMBERS
    assert body["status"] == status
    assert body["code"] == code
    assert body["type"] == f"https://hotline.invalid/problems/{code}"
    assert isinstance(body["detail"], str)
    return body


def _no_constants(name: str) -> None:
    raise AssertionError(f"{name} is not JSON")


async def test_a_domain_error_is_a_problem_with_its_code_and_headers():
    missing = await call("GET", "/things/abc")
    late = await call("GET", "/things/late")
    assert problem(missing, 404, "not_found") == {
        "type": "https://hotline.invalid/problems/not_found",
        "title": "Not Found",
        "status": 404,
        "detail": "thing abc not found",
        "instance": "/things/abc",
        "code": "not_found",
    }
    problem(late, 409, "not_yet_known")
    assert late.headers["Retry-After"] == "3"


async def test_fastapis_own_errors_are_problems_keeping_their_headers():
    unknown_path = await call("GET", "/nowhere")
    wrong_method = await call("DELETE", "/things")
    problem(unknown_path, 404, "not_found")
    problem(wrong_method, 405, "method_not_allowed")
    assert wrong_method.headers["Allow"] == "POST"


async def test_a_validation_error_names_each_field_with_a_short_excerpt():
    response = await call("POST", "/things", json={"name": "x" * 500, "wait_seconds": -1})
    body = problem(response, 422, "validation_failed")
    assert {error["field"] for error in body["errors"]} == {"body.name", "body.wait_seconds"}
    by_field = {error["field"]: error for error in body["errors"]}
    assert len(by_field["body.name"]["input"]) == EXCERPT_CHARS
    assert by_field["body.wait_seconds"]["input"] == -1
    assert body["detail"] == "2 fields are invalid: body.name, body.wait_seconds"


@pytest.mark.parametrize("token", [b"NaN", b"Infinity", b"-Infinity"])
async def test_nan_and_infinity_are_a_422_whose_body_is_valid_json(token):
    raw = b'{"name": "x", "wait_seconds": ' + token + b"}"
    response = await call(
        "POST", "/things", content=raw, headers={"content-type": "application/json"}
    )
    [error] = problem(response, 422, "validation_failed")["errors"]
    assert error["field"] == "body.wait_seconds"
    assert error["input"] == token.decode()


async def test_a_lone_surrogate_is_a_422_and_the_answer_is_valid_utf8():
    raw = b'{"name": "a\\ud800", "wait_seconds": 1}'
    response = await call(
        "POST", "/things", content=raw, headers={"content-type": "application/json"}
    )
    [error] = problem(response, 422, "validation_failed")["errors"]
    assert error["field"] == "body.name"
    assert "surrogate" in error["message"]
    assert error["input"] == "a\\ud800"
    response.content.decode("utf-8")  # strict


async def test_malformed_json_is_a_400_problem():
    response = await call(
        "POST", "/things", content=b"{nope", headers={"content-type": "application/json"}
    )
    body = problem(response, 400, "malformed_json")
    assert body["errors"][0]["field"] == "body"


async def test_a_body_over_the_limit_is_a_413_problem_declared_or_streamed():
    declared = await call("POST", "/things", content=b"{" + b" " * 5000 + b"}")

    async def chunks():
        for _ in range(30):
            yield b" " * 200

    streamed = await call(
        "POST", "/things", content=chunks(), headers={"content-type": "application/json"}
    )
    for response in (declared, streamed):
        assert problem(response, 413, "too_large")["title"] == "Content Too Large"


async def test_an_unexpected_error_is_a_500_problem_that_leaks_nothing_and_is_logged(caplog):
    with caplog.at_level(logging.ERROR, logger="shared.errors"):
        response = await call("GET", "/boom")
    body = problem(response, 500, "internal_error")
    assert "secret" not in response.text
    assert "RuntimeError" not in response.text
    [record] = [r for r in caplog.records if r.name == "shared.errors"]
    assert record.exc_info is not None
    assert "secret connection string" in str(record.exc_info[1])
    assert body["instance"] == "/boom"


async def test_a_database_out_of_reach_is_a_503_problem_with_retry_after():
    response = await call("GET", "/database-down")
    problem(response, 503, "unavailable")
    assert response.headers["Retry-After"] == "3"
    assert "10.0.0.5" not in response.text


async def test_many_invalid_fields_are_listed_up_to_the_limit():
    raw = json.dumps({f"extra{n}": n for n in range(100)} | {"name": "x", "wait_seconds": 1})
    response = await call(
        "POST", "/things", content=raw, headers={"content-type": "application/json"}
    )
    body = problem(response, 422, "validation_failed")
    assert len(body["errors"]) == MAX_FIELD_ERRORS
    assert body["detail"].startswith("100 fields are invalid: ")
    assert len(response.content) < 4096


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        (True, True),
        (12, 12),
        (1.5, 1.5),
        (math.nan, "NaN"),
        (math.inf, "Infinity"),
        (2**80, str(2**80)),
        ("a\x00b", "a\\x00b"),
        ("\ud800", "\\ud800"),
        (b"\xff\x00", "\\xff\\x00"),
        ({"a": [1, 2]}, '{"a":[1,2]}'),
    ],
)
def test_an_excerpt_is_a_json_scalar_and_printable(value, expected):
    assert excerpt(value) == expected


def test_a_long_value_is_cut_to_the_excerpt_length():
    cut = excerpt("字" * 10_000_000)
    assert len(cut) == EXCERPT_CHARS
    assert cut.endswith("…")
    assert len(printable("\x00" * 100)) == EXCERPT_CHARS
