"""Outages: the broker stalls or the database goes away, and nothing accepted is lost."""

import shutil

import pytest

from hotline.embedded import start_broker
from hotline.simulator.params import DEFAULT_CITIES
from tests.e2e.test_intake import ticket
from tests.support import (
    eventually,
    headers_of,
    local_postgres,
    read_topic,
    running_service,
    scratch_dir,
    settings_for,
)

pytestmark = pytest.mark.e2e


@pytest.fixture
def own_broker():
    """A broker of this test's own, so pausing it disturbs no other test."""
    data_dir = scratch_dir("outage-")
    broker = start_broker(data_dir)
    yield broker
    broker.stop()
    shutil.rmtree(data_dir, ignore_errors=True)


@pytest.mark.embedded  # it freezes a tansu of its own; on Kafka: test_kafka_chaos.py
async def test_tickets_taken_while_the_broker_is_paused_are_published_once_it_resumes(
    infra, database, own_broker
):
    settings = settings_for(infra, database, kafka_bootstrap_servers=own_broker.bootstrap_servers)
    async with running_service("intake", settings) as intake:
        before = (await intake.http.post("/tickets", json=ticket(city="大连"))).json()
        await read_topic(own_broker.bootstrap_servers, settings.topic("intake"), at_least=1)
        own_broker.pause()
        try:
            during = []
            for n in range(20):
                response = await intake.http.post(
                    "/tickets", json=ticket(city=DEFAULT_CITIES[n % len(DEFAULT_CITIES)])
                )
                assert response.status_code == 201
                during.append(response.json()["ticket_id"])
            ready = await intake.http.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["checks"]["broker"].startswith("unreachable")
        finally:
            own_broker.resume()

        async def backlog_empty() -> bool:
            return await intake.runtime.relay.backlog() == 0

        await eventually(backlog_empty, timeout=30, message="outbox drained after the outage")
        records = await read_topic(
            own_broker.bootstrap_servers, settings.topic("intake"), at_least=21
        )
    keys = [record.key.decode() for record in records]
    assert sorted(keys) == sorted([before["ticket_id"], *during])
    assert len({headers_of(record)["ce_id"] for record in records}) == 21


async def test_with_the_database_down_intake_answers_503_and_recovers_when_it_is_back(infra):
    with local_postgres() as postgres:
        settings = settings_for(infra, postgres.url)
        async with running_service("intake", settings) as intake:
            postgres.stop()
            down = await intake.http.post("/tickets", json=ticket())
            ready = await intake.http.get("/readyz")
            postgres.start_again()
            up = await intake.http.post("/tickets", json=ticket())
            listed = (await intake.http.get("/tickets")).json()["items"]
    assert down.status_code == 503
    assert down.headers["Retry-After"] == "1"
    assert ready.status_code == 503
    assert ready.json()["checks"]["database"].startswith("unreachable")
    assert up.status_code == 201
    assert [item["ticket_id"] for item in listed] == [up.json()["ticket_id"]]


async def test_a_service_whose_loop_died_says_it_is_not_ready(settings):
    """A dead background loop must not hide behind a green /readyz."""

    class Crashing:
        name = "crashing"
        max_backoff = 60.0

        async def step(self):
            raise RuntimeError("a bug")

    async with running_service("intake", settings) as intake:
        assert (await intake.http.get("/readyz")).status_code == 200
        intake.runtime.run_in_background(Crashing())
        await eventually(
            lambda: "crashing" in intake.runtime.runner.problems(), message="loop failed"
        )
        ready = await intake.http.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"]["loops"] == "crashing: failed: RuntimeError('a bug')"
