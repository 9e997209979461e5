"""Issue 11's inputs, each against the real services: every one was a 500 (or an answer the
OpenAPI document did not promise) and is now a 4xx problem naming what was wrong.

One stack (all four services, their own database and topics) serves the whole module: every
request here is refused before it changes anything, except where a test says otherwise.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from shared.kafka import dlq_topic
from shared.names import SERVICE_NAMES, ServiceName
from shared.settings import Settings
from tests.conftest import new_database
from tests.e2e.test_intake import ticket as intake_ticket
from tests.support import (
    ServiceClient,
    eventually,
    headers_of,
    problem_fields,
    problem_of,
    read_topic,
    record_of,
    running_service,
    settings_for,
    submitted_event,
)

pytestmark = pytest.mark.e2e

ABSURD_TIMES = ["0001-01-01T00:00:00Z", "0001-01-01T00:01:00Z", "9999-12-31T23:59:59-23:59"]
DEPARTMENT = "医保局"
MAX_ERROR_BYTES = 2048


@dataclass
class Stack:
    """The four services, running, and the settings they share."""

    settings: Settings
    services: dict[ServiceName, ServiceClient]

    async def client(self, service: ServiceName, role: str | None = None) -> httpx.AsyncClient:
        """A client of `service` with the key of `role` (default: the service's usual)."""
        running = self.services[service]
        if role is None:
            return running.http
        return await running.as_role(role, DEPARTMENT if role == "department" else None)


@pytest.fixture(scope="module")
async def stack(infra) -> AsyncIterator[Stack]:
    async with new_database(infra) as database, AsyncExitStack() as services:
        settings = settings_for(infra, database)
        running = {}
        for name in SERVICE_NAMES:  # one after the other: migrations share Alembic's state
            running[name] = await services.enter_async_context(
                running_service(name, settings, wait_for_broker=False)
            )
        for service in running.values():
            await eventually(service.runtime.broker_connected.is_set, message="on the broker")
        yield Stack(settings, running)


def ticket(**overrides: Any) -> dict[str, Any]:
    """Intake's valid ticket, with an evaluator too, so every stored field is there."""
    return {**intake_ticket(evaluator="测评员甲"), **overrides}


CREATES: list[tuple[ServiceName, str, dict[str, Any]]] = [
    (
        "dispatch",
        "/tickets/t-1/transfers",
        {"department": DEPARTMENT, "mode": "transfer", "connected": True},
    ),
    ("dispatch", "/tickets/t-1/work-orders", {"department": DEPARTMENT}),
    ("dispatch", "/work-orders/w-1/replies", {"content": "已处理", "quality": "definite"}),
    ("followup", "/tickets/t-1/callbacks", {"reached": True, "satisfaction": "satisfied"}),
]
"""Each create route that takes an `at`, with a body valid but for what a test changes."""


def _role(path: str) -> str | None:
    return "department" if path.endswith("/replies") else None


def small(response: httpx.Response) -> httpx.Response:
    """`response`, after checking it is short and strictly valid JSON (no NaN, valid UTF-8)."""
    assert len(response.content) < MAX_ERROR_BYTES, len(response.content)
    json.loads(response.content.decode("utf-8"), parse_constant=_not_json)
    return response


def _not_json(name: str) -> None:
    raise AssertionError(f"{name} in an answer")


@pytest.mark.parametrize("submitted_at", ABSURD_TIMES)
async def test_an_absurd_submitted_at_is_a_422_naming_it_and_stores_nothing(stack, submitted_at):
    intake = await stack.client("intake")
    auditor = await stack.client("intake", "auditor")
    before = (await auditor.get("/tickets", params={"limit": 500})).json()["items"]
    response = await intake.post("/tickets", json=ticket(submitted_at=submitted_at))
    after = (await auditor.get("/tickets", params={"limit": 500})).json()["items"]
    problem_of(small(response), 422, "validation_failed")
    assert problem_fields(response) == {"body.submitted_at"}
    assert after == before


async def test_a_submitted_at_ten_minutes_ahead_is_a_422_and_four_minutes_is_fine(stack):
    intake = await stack.client("intake")
    now = datetime.now(UTC)
    ahead = await intake.post(
        "/tickets", json=ticket(submitted_at=(now + timedelta(minutes=10)).isoformat())
    )
    within = await intake.post(
        "/tickets", json=ticket(submitted_at=(now + timedelta(minutes=4)).isoformat())
    )
    [error] = problem_of(small(ahead), 422, "validation_failed")["errors"]
    assert error["field"] == "body.submitted_at"
    assert "5 minutes in the future" in error["message"]
    assert within.status_code == 201, within.text


@pytest.mark.parametrize("at", [*ABSURD_TIMES, "in ten minutes"])
@pytest.mark.parametrize(("service", "path", "body"), CREATES)
async def test_an_absurd_at_is_a_422_naming_it(stack, service, path, body, at):
    if at == "in ten minutes":
        at = (datetime.now(UTC) + timedelta(minutes=10)).isoformat()
    client = await stack.client(service, _role(path))
    response = await client.post(path, json={**body, "at": at})
    problem_of(small(response), 422, "validation_failed")
    assert problem_fields(response) == {"body.at"}


STRING_FIELDS: list[tuple[ServiceName, str, dict[str, Any], str]] = [
    *(
        ("intake", "/tickets", ticket(), field)
        for field in ("city", "scenario", "content", "citizen_phone", "evaluator")
    ),
    ("dispatch", "/tickets/t-1/transfers", CREATES[0][2], "department"),
    ("dispatch", "/tickets/t-1/work-orders", CREATES[1][2], "department"),
    ("dispatch", "/work-orders/w-1/replies", CREATES[2][2], "content"),
    ("intake", "/keys", {"name": "desk", "role": "department", "department": DEPARTMENT}, "name"),
    (
        "dispatch",
        "/keys",
        {"name": "desk", "role": "department", "department": DEPARTMENT},
        "department",
    ),
]
"""Every string a create route stores, by service and route."""


@pytest.mark.parametrize(("service", "path", "body", "field"), STRING_FIELDS)
async def test_nul_in_a_stored_string_is_a_422_naming_the_field(stack, service, path, body, field):
    role = "admin" if path == "/keys" else _role(path)
    client = await stack.client(service, role)
    response = await client.post(path, json={**body, field: "沈阳\x00市"})
    [error] = problem_of(small(response), 422, "validation_failed")["errors"]
    assert error["field"] == f"body.{field}"
    assert "NUL" in error["message"]


@pytest.mark.parametrize(
    ("service", "path", "body"),
    [
        ("intake", "/tickets", ticket()),
        *((s, p, b) for s, p, b in CREATES if s == "followup" or p.endswith("transfers")),
    ],
)
async def test_nul_in_an_idempotency_key_is_a_422_naming_the_header(stack, service, path, body):
    client = await stack.client(service)
    response = await client.post(path, json=body, headers={"Idempotency-Key": "key\x00"})
    problem_of(small(response), 422, "validation_failed")
    assert problem_fields(response) == {"header.Idempotency-Key"}


PATH_IDS: list[tuple[ServiceName, str, str, str, dict[str, Any] | None]] = [
    ("intake", "GET", "/tickets/{}", "ticket_id", None),
    ("dispatch", "GET", "/tickets/{}", "ticket_id", None),
    ("dispatch", "POST", "/tickets/{}/transfers", "ticket_id", CREATES[0][2]),
    ("dispatch", "POST", "/tickets/{}/work-orders", "ticket_id", CREATES[1][2]),
    ("dispatch", "GET", "/work-orders/{}", "work_order_id", None),
    ("dispatch", "POST", "/work-orders/{}/replies", "work_order_id", CREATES[2][2]),
    ("followup", "GET", "/tickets/{}", "ticket_id", None),
    ("followup", "POST", "/tickets/{}/callbacks", "ticket_id", CREATES[3][2]),
    ("metrics", "DELETE", "/keys/{}", "key_id", None),
]


@pytest.mark.parametrize("raw_id", ["%00", "t%001", "t%1F"])
@pytest.mark.parametrize(("service", "method", "path", "param", "body"), PATH_IDS)
async def test_a_control_character_in_a_path_id_is_a_422_naming_the_parameter(
    stack, service, method, path, param, body, raw_id
):
    role = "admin" if path.startswith("/keys") else _role(path)
    if service == "dispatch" and method == "GET" and path.startswith("/tickets"):
        role = "auditor"
    client = await stack.client(service, role)
    response = await client.request(method, path.format(raw_id), json=body)
    problem_of(small(response), 422, "validation_failed")
    assert problem_fields(response) == {f"path.{param}"}


QUERY_FILTERS: list[tuple[ServiceName, str, str]] = [
    ("intake", "/tickets", "city"),
    ("dispatch", "/work-orders", "city"),
    ("dispatch", "/work-orders", "department"),
    ("followup", "/callbacks/due", "city"),
    ("metrics", "/rates", "city"),
    ("metrics", "/rates", "scenario"),
    ("metrics", "/rates", "department"),
    ("metrics", "/rates/by/city", "city"),
    ("metrics", "/audit/unanswered", "city"),
    ("metrics", "/audit/unanswered", "department"),
]


@pytest.mark.parametrize(("service", "path", "name"), QUERY_FILTERS)
async def test_nul_in_a_query_filter_is_a_422_naming_it(stack, service, path, name):
    client = await stack.client(service, "auditor" if service != "dispatch" else None)
    response = await client.get(path, params={name: "沈\x00阳"})
    problem_of(small(response), 422, "validation_failed")
    assert problem_fields(response) == {f"query.{name}"}


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
async def test_a_nan_or_infinite_wait_is_a_422_whose_answer_is_valid_json(stack, token):
    body = json.dumps(ticket()).replace('"wait_seconds": 12.5', f'"wait_seconds": {token}')
    assert token in body
    intake = await stack.client("intake")
    response = await intake.post(
        "/tickets", content=body.encode(), headers={"content-type": "application/json"}
    )
    [error] = problem_of(small(response), 422, "validation_failed")["errors"]
    assert error["field"] == "body.call.wait_seconds"
    assert error["input"] == token


TIME_FILTERS: list[tuple[ServiceName, str]] = [
    ("intake", "/tickets"),
    ("metrics", "/rates"),
    ("metrics", "/rates/by/city"),
]


@pytest.mark.parametrize(
    "value", ["0001-01-01T00:00:00Z", "9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59"]
)
@pytest.mark.parametrize("name", ["since", "until"])
@pytest.mark.parametrize(("service", "path"), TIME_FILTERS)
async def test_a_year_1_or_9999_filter_is_a_422_naming_it(stack, service, path, name, value):
    client = await stack.client(service, "auditor")
    response = await client.get(path, params={name: value})
    problem_of(small(response), 422, "validation_failed")
    assert problem_fields(response) == {f"query.{name}"}


def _cursor(at: str, key: str = "t-1") -> str:
    return base64.urlsafe_b64encode(json.dumps({"at": at, "id": key}).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        _cursor("0001-01-01T00:00:00+23:59"),
        _cursor("9999-12-31T23:59:59-23:59"),
        _cursor("2026-01-01T00:00:00Z", "t\x00"),
    ],
)
@pytest.mark.parametrize(
    ("service", "path"),
    [
        ("intake", "/tickets"),
        ("dispatch", "/work-orders"),
        ("followup", "/callbacks/due"),
        ("metrics", "/audit/unanswered"),
    ],
)
async def test_an_absurd_cursor_is_a_422_naming_it(stack, service, path, cursor):
    client = await stack.client(service, "auditor")
    response = await client.get(path, params={"cursor": cursor})
    problem_of(small(response), 422, "invalid_cursor")
    assert problem_fields(response) == {"query.cursor"}


SURROGATE_FIELDS: list[tuple[ServiceName, str, dict[str, Any], str]] = [
    ("intake", "/tickets", ticket(), "content"),
    ("dispatch", "/work-orders/w-1/replies", CREATES[2][2], "content"),
    ("followup", "/keys", {"name": "desk", "role": "auditor"}, "name"),
]


@pytest.mark.parametrize(("service", "path", "body", "field"), SURROGATE_FIELDS)
async def test_a_lone_surrogate_is_a_422_naming_the_field(stack, service, path, body, field):
    raw = json.dumps({**body, field: "PLACEHOLDER"}).replace("PLACEHOLDER", "a\\ud800b").encode()
    assert b'"a\\ud800b"' in raw
    role = "admin" if path == "/keys" else _role(path)
    client = await stack.client(service, role)
    response = await client.post(path, content=raw, headers={"content-type": "application/json"})
    [error] = problem_of(small(response), 422, "validation_failed")["errors"]
    assert error["field"] == f"body.{field}"
    assert "surrogate" in error["message"]
    assert error["input"] == "a\\ud800b"


async def test_a_10_mb_field_is_a_small_413_and_one_just_under_the_limit_a_short_422(stack):
    intake = await stack.client("intake")
    huge = await intake.post("/tickets", json=ticket(content="字" * 10_000_000))
    near = "x" * (stack.settings.max_body_bytes - 1024)
    large = await intake.post("/tickets", json=ticket(content=near))
    problem_of(small(huge), 413, "too_large")
    [error] = problem_of(small(large), 422, "validation_failed")["errors"]
    assert error["field"] == "body.content"
    assert len(large.content) < 1024
    assert error["input"] == "x" * 79 + "…"


async def test_an_event_with_an_absurd_time_is_dead_lettered_and_the_next_is_processed(
    stack, infra
):
    settings = stack.settings
    good = submitted_event("t-after-poison")
    poison = record_of(good.model_copy(update={"ticket_id": "t-year-1"}))
    value = json.loads(poison.value)
    value["submitted_at"] = "0001-01-01T00:01:00Z"
    producer = AIOKafkaProducer(bootstrap_servers=infra.bootstrap_servers, acks="all")
    await producer.start()
    try:
        topic = settings.topic("intake")
        await producer.send_and_wait(
            topic, json.dumps(value).encode(), key=poison.key, headers=poison.headers
        )
        good_record = record_of(good)
        await producer.send_and_wait(
            topic, good_record.value, key=good_record.key, headers=good_record.headers
        )
    finally:
        await producer.stop()
    dispatch = await stack.client("dispatch")

    async def knows(ticket_id: str) -> bool:
        return (await dispatch.get(f"/tickets/{ticket_id}")).status_code == 200

    await eventually(lambda: knows(good.ticket_id), message="dispatch hears of the next ticket")
    letters = await read_topic(
        infra.bootstrap_servers, dlq_topic(settings.topic("intake")), at_least=3
    )
    transfer = await dispatch.post("/tickets/t-year-1/transfers", json=CREATES[0][2])
    assert {headers_of(r)["dlq_service"] for r in letters if r.key == b"t-year-1"} >= {
        b"dispatch",
        b"followup",
        b"metrics",
    }
    problem_of(transfer, 409, "not_yet_known")


async def test_every_kind_of_refusal_is_a_problem_with_its_headers(stack):
    dispatch = stack.services["dispatch"]
    anonymous = await dispatch.as_role(None)
    evaluator = await dispatch.as_role("evaluator")
    operator = dispatch.http
    no_key = await anonymous.get("/work-orders")
    wrong_role = await evaluator.get("/work-orders")
    no_route = await operator.get("/no-such-route")
    wrong_method = await operator.put("/work-orders")
    not_yet = await operator.post("/tickets/t-unknown/transfers", json=CREATES[0][2])
    missing = await operator.get("/work-orders/w-unknown")
    problem_of(no_key, 401, "unauthenticated")
    assert no_key.headers["WWW-Authenticate"] == "Bearer"
    problem_of(wrong_role, 403, "forbidden")
    assert problem_of(no_route, 404, "not_found")["instance"] == "/no-such-route"
    problem_of(wrong_method, 405, "method_not_allowed")
    assert wrong_method.headers["Allow"] == "GET"
    problem_of(not_yet, 409, "not_yet_known")
    assert int(not_yet.headers["Retry-After"]) >= 1
    problem_of(missing, 404, "not_found")
