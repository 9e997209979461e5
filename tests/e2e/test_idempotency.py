"""Idempotency-Key on every POST of dispatch and followup, end to end on the real broker and
PostgreSQL: a retried request is answered as the first was and changes nothing, a key
reused for another request is refused, keys of different API keys never meet, and twins
sent at once are done once."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from aiokafka import AIOKafkaProducer

from shared.bus_tables import outbox
from shared.db import new_id
from shared.idempotency import idempotency_keys
from shared.names import Role, ServiceName
from tests.support import (
    ServiceClient,
    eventually,
    headers_of,
    publish,
    read_topic,
    running_service,
    submitted_event,
)

pytestmark = pytest.mark.e2e


@dataclass
class Desk:
    """One running service, a ticket it knows, and (for dispatch) an open work order."""

    service: ServiceClient
    ticket_id: str
    work_order_id: str | None = None
    extra_clients: list[httpx.AsyncClient] = field(default_factory=list)


@dataclass(frozen=True)
class Route:
    """One POST route, its caller's role and what one request to it adds."""

    name: str
    service: ServiceName
    role: Role
    event: str
    body: dict[str, Any]
    other_body: dict[str, Any]
    """A different request (for a reused key)."""
    second_caller_body: dict[str, Any] | None = None
    """What another API key sends with the same Idempotency-Key (default: `body`)."""
    department: str | None = None

    def path(self, desk: Desk, target: str | None = None) -> str:
        """The route's path for the desk's ticket (or work order), or for `target`."""
        if self.name == "replies":
            return f"/work-orders/{target or desk.work_order_id}/replies"
        return f"/tickets/{target or desk.ticket_id}/{self.name}"

    async def effects(self, desk: Desk) -> int:
        """How many of this route's things the service holds for the desk's ticket."""
        http = desk.service.http
        if self.name == "replies":
            shown = (await http.get(f"/work-orders/{desk.work_order_id}")).json()
            return len(shown["replies"])
        shown = (await http.get(f"/tickets/{desk.ticket_id}")).json()
        return len(shown[self.name.replace("-", "_")])


ROUTES = [
    Route(
        "transfers",
        "dispatch",
        "operator",
        "hotline.transfer.attempted.v1",
        body={"department": "供热办", "mode": "transfer", "connected": False},
        other_body={"department": "供热办", "mode": "transfer", "connected": True},
    ),
    Route(
        "work-orders",
        "dispatch",
        "operator",
        "hotline.workorder.created.v1",
        body={"department": "住建局", "due_working_days": 5},
        other_body={"department": "住建局", "due_working_days": 6},
        # Same body would meet the one-open-work-order-per-department rule, not the key.
        second_caller_body={"department": "水务局", "due_working_days": 5},
    ),
    Route(
        "replies",
        "dispatch",
        "department",
        "hotline.workorder.replied.v1",
        body={"content": "已派人检修管道", "quality": "definite"},
        other_body={"content": "已派人检修管道", "quality": "partial"},
        department="供热办",
    ),
    Route(
        "callbacks",
        "followup",
        "callback",
        "hotline.callback.logged.v1",
        body={"reached": True, "satisfaction": "satisfied"},
        other_body={"reached": True, "satisfaction": "unsatisfied"},
    ),
]
BY_NAME = {route.name: route for route in ROUTES}


@pytest.fixture(params=[route.name for route in ROUTES])
def route(request: pytest.FixtureRequest) -> Route:
    return BY_NAME[request.param]


@asynccontextmanager
async def desk_for(route: Route, settings: Any, infra: Any) -> AsyncIterator[Desk]:
    """The route's service running, with a ticket it knows (resolved at first contact, so a
    callback is due) and, for dispatch, an open work order of 供热办 to reply to."""
    ticket = submitted_event(new_id())
    async with AsyncExitStack() as stack:
        service = await stack.enter_async_context(running_service(route.service, settings))
        producer = AIOKafkaProducer(bootstrap_servers=infra.bootstrap_servers, acks="all")
        await producer.start()
        stack.push_async_callback(producer.stop)
        await publish(producer, settings.topic("intake"), ticket)

        async def known() -> bool:
            response = await service.http.get(f"/tickets/{ticket.ticket_id}")
            return response.status_code == 200

        await eventually(known, message=f"{route.service} knows the ticket")
        desk = Desk(service, ticket.ticket_id)
        if route.service == "dispatch":
            order = await service.http.post(
                f"/tickets/{ticket.ticket_id}/work-orders", json={"department": "供热办"}
            )
            assert order.status_code == 201, order.text
            desk.work_order_id = order.json()["work_order_id"]
        try:
            yield desk
        finally:
            for client in desk.extra_clients:
                await client.aclose()


async def caller(desk: Desk, route: Route) -> httpx.AsyncClient:
    """The client with the route's role (the test's first key of it)."""
    return await desk.service.as_role(route.role, route.department)


async def another_caller(desk: Desk, route: Route) -> httpx.AsyncClient:
    """A client with a second, different API key of the same role (and department)."""
    service = desk.service
    token, _ = await service.runtime.auth.store.create(
        name=f"second {route.role}", role=route.role, department=route.department
    )
    client = httpx.AsyncClient(
        transport=service.transport,
        base_url=service.base_url,
        headers={"Authorization": f"Bearer {token.value}"},
    )
    desk.extra_clients.append(client)
    return client


async def published(desk: Desk, route: Route, settings: Any, infra: Any) -> list[dict[str, Any]]:
    """The route's events about the desk's ticket on the service's topic, once its outbox
    has nothing left to publish."""

    async def outbox_empty() -> bool:
        async with desk.service.runtime.database.read() as db:
            pending = await db.execute(
                sa.select(sa.func.count())
                .select_from(outbox)
                .where(outbox.c.published_at.is_(None))
            )
            return pending.scalar_one() == 0

    await eventually(outbox_empty, message="outbox published")
    records = await read_topic(infra.bootstrap_servers, settings.topic(route.service))
    return [
        json.loads(r.value)
        for r in records
        if r.key == desk.ticket_id.encode() and headers_of(r)["ce_type"].decode() == route.event
    ]


def replayed(response: httpx.Response) -> bool:
    return response.headers.get("Idempotent-Replayed") == "true"


async def test_the_same_key_and_body_again_get_the_first_answer_and_change_nothing(
    route, settings, infra
):
    async with desk_for(route, settings, infra) as desk:
        before = await route.effects(desk)
        events_before = len(await published(desk, route, settings, infra))
        http = await caller(desk, route)
        headers = {"Idempotency-Key": f"retry-of-{route.name}"}
        first = await http.post(route.path(desk), json=route.body, headers=headers)
        again = await http.post(route.path(desk), json=route.body, headers=headers)
        after = await route.effects(desk)
        events = await published(desk, route, settings, infra)
    assert first.status_code == again.status_code == 201, first.text
    assert not replayed(first)
    assert replayed(again)
    assert again.content == first.content  # byte for byte, not only the same JSON
    assert again.headers.get("Location") == first.headers.get("Location")
    assert after == before + 1
    assert len(events) == events_before + 1


async def test_the_same_key_with_another_request_is_refused_and_changes_nothing(
    route, settings, infra
):
    async with desk_for(route, settings, infra) as desk:
        http = await caller(desk, route)
        headers = {"Idempotency-Key": f"reused-{route.name}"}
        first = await http.post(route.path(desk), json=route.body, headers=headers)
        after_first = await route.effects(desk)
        other = await http.post(route.path(desk), json=route.other_body, headers=headers)
        # The same body about another ticket (or work order) is another request too.
        elsewhere = await http.post(
            route.path(desk, target=new_id()), json=route.body, headers=headers
        )
        after = await route.effects(desk)
    assert first.status_code == 201, first.text
    assert other.status_code == 409
    assert other.json()["code"] == "idempotency_key_reused"
    assert "Idempotency-Key" in other.json()["detail"]
    assert not replayed(other)
    assert elsewhere.status_code == 409
    assert elsewhere.json()["code"] == "idempotency_key_reused"
    assert after == after_first


async def test_the_same_key_sent_by_two_api_keys_is_two_requests(route, settings, infra):
    async with desk_for(route, settings, infra) as desk:
        before = await route.effects(desk)
        events_before = len(await published(desk, route, settings, infra))
        headers = {"Idempotency-Key": "case-1"}
        first = await (await caller(desk, route)).post(
            route.path(desk), json=route.body, headers=headers
        )
        second = await (await another_caller(desk, route)).post(
            route.path(desk), json=route.second_caller_body or route.body, headers=headers
        )
        after = await route.effects(desk)
        events = await published(desk, route, settings, infra)
    assert first.status_code == second.status_code == 201, second.text
    assert not replayed(first)
    assert not replayed(second)
    assert first.json() != second.json()
    assert after == before + 2
    assert len(events) == events_before + 2
    actors = [event["actor"]["key_id"] for event in events[events_before:]]
    assert len(set(actors)) == 2


async def test_twins_sent_at_once_are_done_once(route, settings, infra):
    async with desk_for(route, settings, infra) as desk:
        before = await route.effects(desk)
        events_before = len(await published(desk, route, settings, infra))
        http = await caller(desk, route)
        headers = {"Idempotency-Key": f"twins-{route.name}"}
        answers = await asyncio.gather(
            *(http.post(route.path(desk), json=route.body, headers=headers) for _ in range(5))
        )
        after = await route.effects(desk)
        events = await published(desk, route, settings, infra)
        async with desk.service.runtime.database.read() as db:
            stored = (await db.execute(sa.select(idempotency_keys))).all()
    assert [a.status_code for a in answers] == [201] * 5, [a.text for a in answers]
    assert len({a.content for a in answers}) == 1
    assert sorted(replayed(a) for a in answers) == [False] + [True] * 4
    assert after == before + 1
    assert len(events) == events_before + 1
    assert len(stored) == 1
    assert stored[0].response == answers[0].json()
    assert stored[0].status_code == 201


async def test_without_a_key_every_request_is_done(settings, infra):
    route = BY_NAME["transfers"]
    async with desk_for(route, settings, infra) as desk:
        http = await caller(desk, route)
        answers = [await http.post(route.path(desk), json=route.body) for _ in range(2)]
        after = await route.effects(desk)
        async with desk.service.runtime.database.read() as db:
            stored = await db.execute(sa.select(sa.func.count()).select_from(idempotency_keys))
            rows = stored.scalar_one()
    assert [a.status_code for a in answers] == [201, 201]
    assert not any(replayed(a) for a in answers)
    assert answers[0].json()["transfer_id"] != answers[1].json()["transfer_id"]
    assert after == 2
    assert rows == 0


async def test_answers_older_than_a_week_are_pruned_as_new_ones_are_stored(settings, infra):
    route = BY_NAME["transfers"]
    now = datetime.now(UTC)
    async with desk_for(route, settings, infra) as desk:
        async with desk.service.runtime.database.unit_of_work() as uow:
            await uow.execute(
                idempotency_keys.insert().values(
                    [
                        {
                            "key_id": "k1",
                            "idempotency_key": f"{age}-days-old",
                            "fingerprint": "f",
                            "status_code": 201,
                            "response": {},
                            "created_at": now - timedelta(days=age),
                        }
                        for age in (8, 30, 6)
                    ]
                )
            )
            await uow.commit()
        http = await caller(desk, route)
        answer = await http.post(
            route.path(desk), json=route.body, headers={"Idempotency-Key": "new"}
        )
        async with desk.service.runtime.database.read() as db:
            kept = (await db.execute(sa.select(idempotency_keys.c.idempotency_key))).scalars()
            left = sorted(kept)
    assert answer.status_code == 201, answer.text
    assert left == ["6-days-old", "new"]


@pytest.mark.parametrize("key", ["", "k" * 256])
async def test_an_empty_or_too_long_key_is_refused(settings, infra, key):
    route = BY_NAME["transfers"]
    async with desk_for(route, settings, infra) as desk:
        http = await caller(desk, route)
        answer = await http.post(
            route.path(desk), json=route.body, headers={"Idempotency-Key": key}
        )
        after = await route.effects(desk)
    assert answer.status_code == 422
    assert after == 0
