"""Who may do what: every route of every service against every role, department scoping,
evaluators' own tickets, revocation, limits, and the key on every event.

The route table is read from each app itself, so a new route without a policy, or with a
policy other than the one written here, fails `test_every_route_has_the_policy_of_the_role_table`.
"""

import asyncio
import json
import re
import time
from contextlib import AsyncExitStack

import httpx
import pytest
from fastapi.routing import APIRoute, iter_route_contexts

from shared.auth.http import Allow
from shared.names import ROLES, SERVICE_NAMES
from tests.e2e.test_intake import ticket
from tests.support import (
    eventually,
    headers_of,
    load_app,
    problem_fields,
    problem_of,
    read_topic,
    running_service,
)

pytestmark = pytest.mark.e2e

OPEN = {"/healthz", "/readyz", "/metrics"}
"""Operations routes anyone may call (they carry no personal data); /docs and /openapi.json
are not API routes at all."""

EVERYONE_READING_TICKETS = {"evaluator", "operator", "auditor"}
KEYS = {
    ("POST", "/keys"): {"admin"},
    ("GET", "/keys"): {"admin"},
    ("DELETE", "/keys/{key_id}"): {"admin"},
}
POLICY = {
    "intake": {
        ("POST", "/tickets"): {"evaluator"},
        ("GET", "/tickets/{ticket_id}"): EVERYONE_READING_TICKETS,
        ("GET", "/tickets"): EVERYONE_READING_TICKETS,
        **KEYS,
    },
    "dispatch": {
        ("POST", "/tickets/{ticket_id}/transfers"): {"operator"},
        ("POST", "/tickets/{ticket_id}/work-orders"): {"operator"},
        ("POST", "/work-orders/{work_order_id}/replies"): {"department"},
        ("GET", "/work-orders/{work_order_id}"): {"operator", "auditor", "department"},
        ("GET", "/work-orders"): {"operator", "auditor", "department"},
        ("GET", "/tickets/{ticket_id}"): {"operator", "auditor"},
        **KEYS,
    },
    "followup": {
        ("POST", "/tickets/{ticket_id}/callbacks"): {"callback"},
        ("GET", "/callbacks/due"): {"callback", "auditor"},
        ("GET", "/tickets/{ticket_id}"): {"callback", "auditor"},
        **KEYS,
    },
    "metrics": {
        ("GET", "/rates"): {"auditor"},
        ("GET", "/rates/by/{dimension}"): {"auditor"},
        **{("GET", f"/rates/by/{period}"): {"auditor"} for period in ("day", "week", "month")},
        ("GET", "/audit/unanswered"): {"auditor"},
        ("GET", "/tickets/{ticket_id}/timeline"): {"auditor"},
        ("GET", "/audit/overdue/by/{dimension}"): {"auditor"},
        ("GET", "/tickets"): {"operator", "auditor"},
        **KEYS,
    },
}
"""README "Security": the role table, route by route."""


def policies(app) -> dict[tuple[str, str], set[str] | None]:
    """Each API route of `app` and the roles its `Allow` admits (None: no policy)."""
    found = {}
    for context in iter_route_contexts(app.routes):  # included routers are resolved lazily
        route = context.original_route
        if not isinstance(route, APIRoute):
            continue
        allows = [dep.call for dep in _dependencies(route.dependant) if isinstance(dep.call, Allow)]
        assert len(allows) <= 1, f"{context.path}: {allows}"
        for method in route.methods:
            found[(method, context.path)] = set(allows[0].roles) if allows else None
    return found


def _dependencies(dependant):
    for dep in dependant.dependencies:
        yield dep
        yield from _dependencies(dep)


@pytest.mark.parametrize("service", SERVICE_NAMES)
def test_every_route_has_the_policy_of_the_role_table(settings, service):
    found = policies(load_app(service, settings))
    unguarded = [route for route, roles in found.items() if roles is None]
    assert sorted(path for _, path in unguarded) == sorted(OPEN)
    guarded = {route: roles for route, roles in found.items() if roles is not None}
    assert guarded == POLICY[service]


async def _request(client: httpx.AsyncClient, method: str, path: str) -> httpx.Response:
    url = re.sub(r"\{[^}]+\}", "x", path)
    if method in ("POST", "PUT", "PATCH"):
        return await client.request(method, url, json={})
    return await client.request(method, url)


@pytest.mark.parametrize("service", SERVICE_NAMES)
async def test_every_role_is_refused_where_it_is_not_allowed_and_passes_where_it_is(
    settings, service
):
    """Every route x every role, and no key, a made-up key and a malformed header."""
    async with running_service(service, settings, wait_for_broker=False) as running:
        anonymous = await running.as_role(None)
        clients = {
            role: await running.as_role(role, "医保局" if role == "department" else None)
            for role in ROLES
        }
        outcomes = {}
        for method, path in POLICY[service]:
            for role, client in clients.items():
                answer = await _request(client, method, path)
                outcomes[(method, path, role)] = (
                    answer.status_code,
                    answer.headers.get("content-type"),
                )
            nobody = await _request(anonymous, method, path)
            forged = await anonymous.request(
                method,
                re.sub(r"\{[^}]+\}", "x", path),
                headers={"Authorization": "Bearer hotline_0123456789abcdef_" + "A" * 43},
            )
            basic = await anonymous.request(
                method, re.sub(r"\{[^}]+\}", "x", path), headers={"Authorization": "Basic eA=="}
            )
            for refused in (nobody, forged, basic):
                problem_of(refused, 401, "unauthenticated")
                assert refused.headers["WWW-Authenticate"] == "Bearer"
                assert refused.json() == nobody.json()  # nothing tells these cases apart
    for (method, path, role), (status, content_type) in outcomes.items():
        if role in POLICY[service][(method, path)]:
            assert status not in (401, 403), (method, path, role, status)
        else:
            assert status == 403, (method, path, role, status)
        if status >= 400:
            assert content_type == "application/problem+json", (method, path, role, status)


async def test_a_department_sees_and_answers_its_own_work_orders_only(settings, infra):
    async with AsyncExitStack() as stack:
        intake = await stack.enter_async_context(running_service("intake", settings))
        dispatch = await stack.enter_async_context(running_service("dispatch", settings))
        ticket_id = (await intake.http.post("/tickets", json=ticket())).json()["ticket_id"]

        async def dispatch_knows() -> bool:
            return (await dispatch.http.get(f"/tickets/{ticket_id}")).status_code == 200

        await eventually(dispatch_knows, message="dispatch knows the ticket")
        path = f"/tickets/{ticket_id}/work-orders"
        ours = (await dispatch.http.post(path, json={"department": "医保局"})).json()
        theirs = (await dispatch.http.post(path, json={"department": "人社局"})).json()
        medical = await dispatch.department("医保局")
        reply = {"content": "已处理", "quality": "definite"}

        other_read = await medical.get(f"/work-orders/{theirs['work_order_id']}")
        missing_read = await medical.get("/work-orders/no-such-work-order")
        other_reply = await medical.post(
            f"/work-orders/{theirs['work_order_id']}/replies", json=reply
        )
        listed = (await medical.get("/work-orders")).json()["items"]
        asked_for_other = (
            await medical.get("/work-orders", params={"department": "人社局"})
        ).json()
        own_read = await medical.get(f"/work-orders/{ours['work_order_id']}")
        own_reply = await medical.post(f"/work-orders/{ours['work_order_id']}/replies", json=reply)
        operator_sees_all = (await dispatch.http.get("/work-orders")).json()["items"]
        records = await read_topic(infra.bootstrap_servers, settings.topic("dispatch"), at_least=3)

    assert other_read.status_code == 404
    assert other_reply.status_code == 404
    # Another department's work order looks exactly like one that does not exist.
    assert other_read.json()["code"] == missing_read.json()["code"] == "not_found"
    assert other_read.json()["detail"].replace(theirs["work_order_id"], "?") == missing_read.json()[
        "detail"
    ].replace("no-such-work-order", "?")
    assert [w["work_order_id"] for w in listed] == [ours["work_order_id"]]
    assert asked_for_other["items"] == []
    assert own_read.status_code == 200
    assert own_reply.status_code == 201
    assert {w["work_order_id"] for w in operator_sees_all} == {
        ours["work_order_id"],
        theirs["work_order_id"],
    }
    replied = [
        json.loads(r.value)
        for r in records
        if headers_of(r)["ce_type"] == b"hotline.workorder.replied.v1"
    ]
    assert len(replied) == 1
    assert replied[0]["actor"]["role"] == "department"
    assert replied[0]["actor"]["department"] == "医保局"


async def test_an_evaluator_reads_the_tickets_it_submitted_and_no_others(settings):
    async with running_service("intake", settings, wait_for_broker=False) as intake:
        one = intake.http
        token, _ = await intake.runtime.auth.store.create(
            name="second evaluator", role="evaluator", department=None
        )
        two = httpx.AsyncClient(
            transport=intake.transport,
            base_url=intake.base_url,
            headers={"Authorization": f"Bearer {token.value}"},
        )
        async with two:
            mine = (await one.post("/tickets", json=ticket())).json()["ticket_id"]
            theirs = (await two.post("/tickets", json=ticket(city="大连"))).json()["ticket_id"]
            read_mine = await one.get(f"/tickets/{mine}")
            read_theirs = await one.get(f"/tickets/{theirs}")
            listed = (await one.get("/tickets")).json()["items"]
            operator = await intake.as_role("operator")
            auditor = await intake.as_role("auditor")
            by_operator = (await operator.get("/tickets")).json()["items"]
            by_auditor = await auditor.get(f"/tickets/{theirs}")
    assert read_mine.status_code == 200
    assert read_theirs.status_code == 404
    assert [t["ticket_id"] for t in listed] == [mine]
    assert {t["ticket_id"] for t in by_operator} == {mine, theirs}
    assert by_auditor.status_code == 200
    assert by_auditor.json()["content"] == ticket()["content"]


async def test_every_event_names_the_key_that_caused_it_and_never_its_secret(settings, infra):
    async with running_service("intake", settings) as intake:
        response = await intake.http.post("/tickets", json=ticket())
        records = await read_topic(infra.bootstrap_servers, settings.topic("intake"), at_least=1)
    token = intake.http.headers["Authorization"].removeprefix("Bearer ")
    key_id = token.split("_")[1]
    data = json.loads(records[0].value)
    assert data["ticket_id"] == response.json()["ticket_id"]
    assert data["actor"] == {"key_id": key_id, "role": "evaluator", "department": None}
    for record in records:
        assert token.encode() not in record.value
        assert all(token.encode() not in value for _, value in record.headers)


async def test_a_revoked_key_stops_working_on_every_service_within_five_seconds(settings):
    reads = {
        "intake": "/tickets",
        "dispatch": "/work-orders",
        "followup": "/callbacks/due",
        "metrics": "/rates",
    }
    async with AsyncExitStack() as stack:
        services = {
            name: await stack.enter_async_context(
                running_service(name, settings, wait_for_broker=False)
            )
            for name in SERVICE_NAMES
        }
        admin = await services["intake"].as_role("admin")
        created = (
            await admin.post("/keys", json={"name": "auditor on leave", "role": "auditor"})
        ).json()
        header = {"Authorization": f"Bearer {created['token']}"}
        for name, path in reads.items():
            assert (await services[name].http.get(path, headers=header)).status_code == 200
        listed = (await admin.get("/keys")).json()
        revoked = await (await services["dispatch"].as_role("admin")).delete(
            f"/keys/{created['key_id']}"
        )
        started = time.monotonic()

        async def refused_everywhere() -> bool:
            answers = await asyncio.gather(
                *(services[name].http.get(path, headers=header) for name, path in reads.items())
            )
            return all(answer.status_code == 401 for answer in answers)

        await eventually(refused_everywhere, timeout=5, message="the key refused everywhere")
        elapsed = time.monotonic() - started
        not_admin = await services["metrics"].http.post(
            "/keys", json={"name": "x", "role": "admin"}
        )
    assert revoked.status_code == 204
    assert created["key_id"] in [k["key_id"] for k in listed]
    assert all("token" not in k and "secret_hash" not in k for k in listed)
    assert created["token"] not in json.dumps(listed)
    assert elapsed < 5
    assert not_admin.status_code == 403


async def test_a_key_over_its_rate_limit_waits_and_others_do_not(settings):
    limited = settings.model_copy(update={"rate_limit": "5/second"})
    async with running_service("metrics", limited, wait_for_broker=False) as metrics:
        answers = [await metrics.http.get("/rates") for _ in range(8)]
        second_key = await metrics.runtime.auth.store.create(
            name="another auditor", role="auditor", department=None
        )
        fresh = await metrics.http.get(
            "/rates", headers={"Authorization": f"Bearer {second_key[0].value}"}
        )
    statuses = [a.status_code for a in answers]
    assert statuses[:5] == [200] * 5
    assert 429 in statuses[5:]
    refused = next(a for a in answers if a.status_code == 429)
    assert int(refused.headers["Retry-After"]) >= 1
    problem_of(refused, 429, "rate_limited")
    assert fresh.status_code == 200


async def test_guessing_keys_from_one_address_is_slowed_down(settings):
    slow = settings.model_copy(update={"auth_failure_limit": "3/minute"})
    async with running_service("metrics", slow, wait_for_broker=False) as metrics:
        anonymous = await metrics.as_role(None)
        guesses = [
            await anonymous.get(
                "/rates", headers={"Authorization": f"Bearer hotline_{n:016x}_" + "A" * 43}
            )
            for n in range(5)
        ]
        valid = await metrics.http.get("/rates")
    assert [g.status_code for g in guesses[:3]] == [401] * 3
    assert [g.status_code for g in guesses[3:]] == [429] * 2
    assert valid.status_code == 200  # a valid key is not held back by others' guesses


async def test_a_body_over_the_limit_is_refused_before_it_is_parsed(settings):
    async with running_service("intake", settings, wait_for_broker=False) as intake:
        huge = {**ticket(), "content": "字" * 40_000}  # about 120 KB of UTF-8
        declared = await intake.http.post("/tickets", json=huge)

        async def chunks():
            body = json.dumps(huge).encode()
            for start in range(0, len(body), 8192):
                yield body[start : start + 8192]

        streamed = await intake.http.post(
            "/tickets", content=chunks(), headers={"content-type": "application/json"}
        )
        within = await intake.http.post("/tickets", json=ticket())
        count = (await intake.http.get("/tickets")).json()["items"]
    for refused in (declared, streamed):
        assert problem_of(refused, 413, "too_large")["title"] == "Content Too Large"
    assert within.status_code == 201
    assert len(count) == 1  # nothing of the refused bodies was stored


async def test_absurd_key_requests_are_refused_with_a_4xx_and_store_nothing(settings):
    async with running_service("dispatch", settings, wait_for_broker=False) as dispatch:
        admin = await dispatch.as_role("admin")
        before = (await admin.get("/keys")).json()
        bodies = [
            {"name": "nul\x00inside", "role": "auditor"},
            {"name": "x" * 10_000, "role": "auditor"},
            {"name": "root", "role": "root"},
            {"name": "evaluator with a department", "role": "evaluator", "department": "医保局"},
            {"name": "department without one", "role": "department"},
            {"name": "bell", "role": "department", "department": "医保局\x07"},
        ]
        refused = [await admin.post("/keys", json=body) for body in bodies]
        huge = await admin.post("/keys", content=b"{" + b" " * 10_000_000 + b"}")
        revoke_nul = await admin.delete("/keys/%00")
        revoke_missing = await admin.delete("/keys/0123456789abcdef")
        after = (await admin.get("/keys")).json()
    assert [r.status_code for r in refused] == [422] * len(bodies)
    assert [problem_fields(r) for r in refused] == [
        {"body.name"},
        {"body.name"},
        {"body.role"},
        {"body.department"},
        {"body.department"},
        {"body.department"},
    ]
    problem_of(huge, 413, "too_large")
    assert problem_fields(revoke_nul) == {"path.key_id"}
    problem_of(revoke_missing, 404, "not_found")
    assert after == before
