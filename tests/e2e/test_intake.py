"""Intake end to end: HTTP in, CloudEvent out on `intake.events`."""

import json
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy

from tests.support import headers_of, problem_fields, problem_of, read_topic, running_service

pytestmark = pytest.mark.e2e


def ticket(**overrides):
    body = {
        "city": "沈阳",
        "channel": "phone",
        "scenario": "社保查询",
        "category": "consultation",
        "content": "医保卡丢了怎么补办？",
        "citizen_phone": "+86 138-1234-5678",
        "call": {"answered": True, "wait_seconds": 12.5, "resolved_at_first_contact": False},
    }
    body.update(overrides)
    return body


async def test_a_posted_ticket_is_published_as_a_cloudevent_keyed_by_its_id(settings, infra):
    async with running_service("intake", settings) as intake:
        response = await intake.http.post("/tickets", json=ticket())
        assert response.status_code == 201
        ticket_id = response.json()["ticket_id"]
        records = await read_topic(infra.bootstrap_servers, settings.topic("intake"), at_least=1)
    assert len(records) == 1
    record = records[0]
    headers = headers_of(record)
    assert record.key == ticket_id.encode()
    assert headers["ce_type"] == b"hotline.ticket.submitted.v1"
    assert headers["ce_source"] == b"/hotline/intake"
    assert headers["ce_specversion"] == b"1.0"
    assert headers["ce_subject"] == ticket_id.encode()
    assert headers["content-type"] == b"application/json"
    assert headers["ce_id"]
    data = json.loads(record.value)
    assert data["ticket_id"] == ticket_id
    assert data["city"] == "沈阳"
    assert data["call"] == {
        "answered": True,
        "wait_seconds": 12.5,
        "resolved_at_first_contact": False,
    }
    # Neither the phone number (in any form) nor the citizen's words leave intake.
    assert b"5678" not in record.value
    assert "医保卡".encode() not in record.value


async def test_the_phone_number_is_stored_masked_and_never_shown_in_full(settings):
    async with running_service("intake", settings, wait_for_broker=False) as intake:
        ticket_id = (await intake.http.post("/tickets", json=ticket())).json()["ticket_id"]
        shown = (await intake.http.get(f"/tickets/{ticket_id}")).json()
    assert shown["citizen_phone_masked"] == "138****5678"
    assert "13812345678" not in json.dumps(shown)
    assert "citizen_phone_hash" not in shown


async def test_the_same_idempotency_key_and_body_give_the_same_ticket_once(settings, infra):
    async with running_service("intake", settings) as intake:
        headers = {"Idempotency-Key": "evaluator-7/case-42"}
        first = await intake.http.post("/tickets", json=ticket(), headers=headers)
        again = await intake.http.post("/tickets", json=ticket(), headers=headers)
        other = await intake.http.post("/tickets", json=ticket(city="大连"), headers=headers)
        records = await read_topic(infra.bootstrap_servers, settings.topic("intake"), at_least=1)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotency-Key" in problem_of(other, 409, "idempotency_key_reused")["detail"]
    assert len(records) == 1


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"channel": "fax"}, "channel"),
        ({"city": ""}, "city"),
        ({"category": "praise"}, "category"),
        ({"citizen_phone": "call me"}, "citizen_phone"),
        ({"submitted_at": "2026-01-01T08:00:00"}, "submitted_at"),
        ({"submitted_at": (datetime.now(UTC) + timedelta(days=2)).isoformat()}, "submitted_at"),
        ({"call": {"answered": True, "resolved_at_first_contact": False}}, "call"),
        (
            {"call": {"answered": False, "wait_seconds": 30, "resolved_at_first_contact": True}},
            "call",
        ),
        ({"unexpected": 1}, "unexpected"),
    ],
)
async def test_bad_input_is_a_422_naming_the_field_and_stores_nothing(settings, change, field):
    async with running_service("intake", settings, wait_for_broker=False) as intake:
        response = await intake.http.post("/tickets", json=ticket(**change))
        listed = (await intake.http.get("/tickets")).json()
    problem_of(response, 422, "validation_failed")
    assert f"body.{field}" in problem_fields(response)
    assert listed["items"] == []


async def test_malformed_json_is_a_4xx_not_a_500(settings):
    async with running_service("intake", settings, wait_for_broker=False) as intake:
        response = await intake.http.post(
            "/tickets", content=b"{nope", headers={"content-type": "application/json"}
        )
    problem_of(response, 400, "malformed_json")
    assert problem_fields(response) == {"body"}


async def test_tickets_are_listed_newest_first_with_filters_and_cursor_pages(settings):
    base = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
    async with running_service("intake", settings, wait_for_broker=False) as intake:
        for hour in range(5):
            for city in ("沈阳", "大连"):
                at = (base + timedelta(hours=hour)).isoformat()
                response = await intake.http.post(
                    "/tickets", json=ticket(city=city, submitted_at=at)
                )
                assert response.status_code == 201
        seen, cursor = [], None
        while True:
            params = {"city": "沈阳", "limit": 2, "since": (base + timedelta(hours=1)).isoformat()}
            if cursor:
                params["cursor"] = cursor
            page = (await intake.http.get("/tickets", params=params)).json()
            seen.extend(page["items"])
            cursor = page["next_cursor"]
            if not cursor:
                break
        bad = await intake.http.get("/tickets", params={"cursor": "garbage"})
        missing = await intake.http.get("/tickets/does-not-exist")
    times = [item["submitted_at"] for item in seen]
    assert len(seen) == 4
    assert {item["city"] for item in seen} == {"沈阳"}
    assert times == sorted(times, reverse=True)
    assert "cursor" in problem_of(bad, 422, "invalid_cursor")["detail"]
    assert problem_fields(bad) == {"query.cursor"}
    assert problem_of(missing, 404, "not_found")["instance"] == "/tickets/does-not-exist"


async def test_a_city_given_by_its_official_name_is_stored_and_announced_by_its_canonical_one(
    settings, infra
):
    async with running_service("intake", settings) as intake:
        response = await intake.http.post("/tickets", json=ticket(city=" 沈阳市 "))
        assert response.status_code == 201, response.text
        ticket_id = response.json()["ticket_id"]
        shown = (await intake.http.get(f"/tickets/{ticket_id}")).json()
        listed = (await intake.http.get("/tickets", params={"city": "沈阳"})).json()
        records = await read_topic(infra.bootstrap_servers, settings.topic("intake"), at_least=1)
    assert shown["city"] == "沈阳"
    assert [item["ticket_id"] for item in listed["items"]] == [ticket_id]
    assert [json.loads(record.value)["city"] for record in records] == ["沈阳"]


@pytest.mark.parametrize("city", ["Gotham", "沈阳县", "阿克苏", "长" * 64])
async def test_an_unknown_city_is_a_422_on_city_that_stores_nothing(settings, city):
    async with running_service("intake", settings, wait_for_broker=False) as intake:
        response = await intake.http.post("/tickets", json=ticket(city=city))
        listed = (await intake.http.get("/tickets")).json()
    [error] = problem_of(response, 422, "validation_failed")["errors"]
    assert error["field"] == "body.city"
    assert "unknown city" in error["message"]
    assert error["input"] == city
    assert len(error["input"]) <= 64
    assert listed["items"] == []


@pytest.mark.parametrize(
    ("phone", "digits"),
    [("138123456789", "138123456789"), ("+86 999 1234 5678 9", "999123456789")],
)
async def test_an_invalid_phone_is_a_422_on_citizen_phone_that_does_not_echo_it(
    settings, phone, digits
):
    async with running_service("intake", settings, wait_for_broker=False) as intake:
        response = await intake.http.post("/tickets", json=ticket(citizen_phone=phone))
        listed = (await intake.http.get("/tickets")).json()
    [error] = problem_of(response, 422, "validation_failed")["errors"]
    assert error["field"] == "body.citizen_phone"
    assert phone not in response.text
    assert digits[-5:] not in "".join(c for c in response.text if c.isdigit())
    assert error["input"].endswith(phone[-4:])
    assert listed["items"] == []


async def test_a_422_about_another_field_does_not_echo_the_phone_number_either(settings):
    body = {"citizen_phone": "+86 138-1234-5678", **ticket()}  # first: in any excerpt
    del body["call"]
    async with running_service("intake", settings, wait_for_broker=False) as intake:
        missing = await intake.http.post("/tickets", json=body)
        not_an_object = await intake.http.post("/tickets", json=[body])
    [error] = problem_of(missing, 422, "validation_failed")["errors"]
    assert error == {"field": "body.call", "message": "Field required", "input": None}
    [error] = problem_of(not_an_object, 422, "validation_failed")["errors"]
    assert error["field"] == "body"
    assert error["input"].startswith('[{"citizen_phone":"+** ***-****-5678"')
    for answer in (missing, not_an_object):
        assert "1234" not in answer.text


async def test_one_number_written_two_ways_is_one_stored_hash(settings):
    async with running_service("intake", settings, wait_for_broker=False) as intake:
        ids = []
        for phone in ("010-12345678", "+86 10 12345678", "13812345678"):
            response = await intake.http.post("/tickets", json=ticket(citizen_phone=phone))
            assert response.status_code == 201, response.text
            ids.append(response.json()["ticket_id"])
        masked = [(await intake.http.get(f"/tickets/{i}")).json() for i in ids]
        async with intake.runtime.database.read() as db:
            rows = await db.execute(
                sqlalchemy.text(
                    "SELECT ticket_id, citizen_phone_hash FROM tickets WHERE ticket_id = ANY(:ids)"
                ).bindparams(ids=ids)
            )
            hashes = dict(rows.all())
    assert hashes[ids[0]] == hashes[ids[1]]
    assert hashes[ids[2]] != hashes[ids[0]]
    assert [m["citizen_phone_masked"] for m in masked] == [
        "******5678",
        "******5678",
        "138****5678",
    ]
