"""The dashboards against a real Prometheus: no panel queries a series that does not exist.

The four services run as processes on free ports, as in a deployment; Prometheus (the
Debian package's binary) scrapes them every second and loads the alert rules. The simulator
plays 60 tickets through the public APIs (transfers, three-way calls, work orders, replies
late and never, callbacks), a work order is left awaiting a reply (not due yet), and one
record no consumer can read is put on intake's topic.
Then every PromQL query of the committed dashboards, with the variables at "All", must
return at least one sample (and the dead letters and overdue work orders a value above 0),
every SQL query must return a row from metrics's schema (and each rate per department the
figure of GET /rates/by/department), and every alert rule must be loaded and evaluated
without error.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaProducer
from sqlalchemy.engine import make_url

from hotline.embedded import free_port, terminate
from hotline.simulator.client import Endpoints, open_clients
from hotline.simulator.config import RunConfig
from hotline.simulator.params import SimulatorParams
from hotline.simulator.run import simulate
from shared.auth.keyfile import KeyRing
from shared.kafka import connection_options
from shared.names import RATE_NAMES, SERVICE_NAMES, Role
from shared.settings import Settings
from shared.workdays import SHANGHAI
from tests.e2e.test_intake import ticket as intake_ticket
from tests.grafana import (
    POSTGRES_UID,
    PROMETHEUS_UID,
    RULES_FILE,
    Query,
    all_queries,
    need,
    promql_for_test,
    sql_for_test,
)
from tests.support import (
    Child,
    eventually,
    record_of,
    service_environment,
    start,
    stored_keys,
    submitted_event,
)

pytestmark = pytest.mark.e2e

LABEL_VALUES = re.compile(r"^label_values\((\w+), (\w+)\)$")
NONZERO_SERIES = ("hotline_events_dead_lettered_total", "hotline_overdue_work_orders")
"""Panels of these series must show a value above 0, not only a sample: the test makes dead
letters, and the simulated stories leave work orders unanswered past their deadlines."""
WINDOW_DAYS_AGO = 60
"""The simulated tickets are submitted in the week starting this many days ago (their
stories, deadlines included, are over by now); the rate gauges' window reaches back past it."""


@dataclass
class Stack:
    """Where the services and Prometheus answer."""

    settings: Settings
    endpoints: Endpoints
    prometheus: str
    children: list[Child]

    def logs(self) -> str:
        return "\n".join(child.tail() for child in self.children)


def prometheus_config(stack_dir: Path, settings: Settings) -> Path:
    """Scrape the four services every second, evaluate the alert rules every second."""
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES_FILE)],
        "scrape_configs": [
            {
                "job_name": "hotline",
                "metrics_path": "/metrics",
                "static_configs": [
                    {
                        "targets": [
                            f"{settings.host}:{settings.port_of(name)}" for name in SERVICE_NAMES
                        ]
                    }
                ],
            }
        ],
    }
    path = stack_dir / "prometheus.yml"
    path.write_text(json.dumps(config, indent=2))  # JSON is YAML
    return path


def wait_until_answering(child: Child, url: str, timeout: float) -> None:
    """Poll `url` until it answers 200; fail with the child's log if it exits or times out."""
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=1.0) as client:
        while True:
            if child.process.poll() is not None:
                pytest.fail(f"{child.name} exited with {child.process.returncode}\n{child.tail()}")
            try:
                if client.get(url).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"{child.name} did not answer {url} in {timeout:g} s\n{child.tail()}")
            time.sleep(0.1)


def stop_all(children: list[Child], settings: Settings) -> None:
    """SIGTERM each child in turn (a service drains first), SIGKILL if it hangs."""
    grace = settings.shutdown_drain_seconds * 2 + 10
    for child in children:
        terminate(child.process, signal.SIGTERM, grace, child.name)


@contextmanager
def running_stack(settings: Settings, tmp_path: Path) -> Iterator[Stack]:
    """The four services and Prometheus, stopped (all of them) on exit. Not a fixture: with
    no Prometheus installed the test fails (a fixture would only error)."""
    prometheus_binary = need("prometheus")
    ports = {f"{name}_port": free_port() for name in SERVICE_NAMES}
    settings = settings.model_copy(
        update={
            **ports,
            "host": "127.0.0.1",
            "rates_refresh_seconds": 1.0,
            "rates_window_days": WINDOW_DAYS_AGO + 30,
        }
    )
    env = service_environment(settings)
    endpoints = Endpoints.from_settings(settings)
    prometheus_port = free_port()
    prometheus_command = [
        prometheus_binary,
        f"--config.file={prometheus_config(tmp_path, settings)}",
        f"--storage.tsdb.path={tmp_path / 'prometheus-data'}",
        f"--web.listen-address=127.0.0.1:{prometheus_port}",
        "--log.level=warn",
    ]
    services: list[Child] = []
    prometheus: list[Child] = []
    try:
        for name in SERVICE_NAMES:
            command = [sys.executable, "-m", f"services.{name}"]
            services.append(start(name, command, tmp_path / f"{name}.log", env))
        prometheus.append(
            start("prometheus", prometheus_command, tmp_path / "prometheus.log", dict(os.environ))
        )
        for child in services:
            wait_until_answering(child, f"{getattr(endpoints, child.name)}/readyz", 60)
        prometheus_url = f"http://127.0.0.1:{prometheus_port}"
        wait_until_answering(prometheus[0], f"{prometheus_url}/-/ready", 30)
        yield Stack(settings, endpoints, prometheus_url, services + prometheus)
    finally:
        # Prometheus first; then the services in the order events flow, each draining.
        stop_all(prometheus + services, settings)
    assert all(child.process.poll() is not None for child in services + prometheus)


async def drive_tickets(stack: Stack, settings: Settings) -> KeyRing:
    """60 simulated tickets through the public APIs; /rates agrees with what was sent. The
    keys it used (an auditor's among them)."""
    today = datetime.now(SHANGHAI).date()
    params = SimulatorParams().model_copy(update={"callback_rate": 0.6})
    config = RunConfig(
        params=params,
        tickets=60,
        rate=200,
        seed=20251139,  # its 60 stories hold every outcome (see tests/e2e/test_simulator.py)
        concurrency=16,
        days=7,
        window_start=today - timedelta(days=WINDOW_DAYS_AGO),
        settle_timeout=45,
        poll_interval=0.2,
    )
    keys = await stored_keys(settings, params.departments())
    async with open_clients(stack.endpoints, timeout=10, keys=keys) as clients:
        result = await simulate(config, clients, say=lambda line: None)
    assert result.failures == [], f"{result.failures}\n{stack.logs()}"
    mismatched = [row.name for row in result.comparison.mismatched]
    assert result.comparison.match, f"/rates differs in {mismatched}\n{stack.logs()}"
    return keys


async def leave_a_work_order_awaiting_reply(stack: Stack, keys: KeyRing) -> None:
    """Today's ticket with a work order not due yet and not replied: the rates count it as
    awaiting a reply (neither on time nor late), so the department SQL must too."""
    department = sorted(keys.departments)[0]

    def client(url: str, role: Role) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {keys.token(role)}"}
        return httpx.AsyncClient(base_url=url, headers=headers, timeout=10)

    async with (
        client(stack.endpoints.intake, "evaluator") as intake,
        client(stack.endpoints.dispatch, "operator") as dispatch,
        client(stack.endpoints.metrics, "auditor") as metrics,
    ):
        ticket_id = (await intake.post("/tickets", json=intake_ticket())).json()["ticket_id"]

        async def dispatched() -> bool:  # 409 until dispatch hears of the ticket
            path = f"/tickets/{ticket_id}/work-orders"
            return (await dispatch.post(path, json={"department": department})).status_code == 201

        async def counted() -> bool:
            params = {"department": department}
            items = (await metrics.get("/audit/unanswered", params=params)).json()["items"]
            return any(i["ticket_id"] == ticket_id and i["city"] is not None for i in items)

        await eventually(dispatched, interval=0.2, message="the work order created")
        await eventually(counted, interval=0.2, message="metrics counting the work order")


async def publish_poison(settings: Settings) -> None:
    """A record on intake's topic that is not JSON: each consumer of the topic (dispatch,
    followup, metrics) dead-letters it."""
    record = record_of(submitted_event("t-poison"))
    producer = AIOKafkaProducer(**connection_options(settings))
    await producer.start()
    try:
        topic = settings.topic("intake")
        await producer.send_and_wait(topic, b"{not json", key=record.key, headers=record.headers)
    finally:
        await producer.stop()


async def promql_is_empty(http: httpx.AsyncClient, query: Query) -> bool:
    """True when the query (variables at "All") returns no sample, or for a query of
    NONZERO_SERIES no sample above 0; an error fails the test."""
    label_values = LABEL_VALUES.match(query.text)
    if label_values:
        metric, label = label_values.groups()
        response = await http.get(f"/api/v1/label/{label}/values", params={"match[]": metric})
    else:
        response = await http.get("/api/v1/query", params={"query": promql_for_test(query)})
    body = response.json()
    assert body["status"] == "success", f"{query}: {body}"
    data = body["data"]
    if label_values:
        return not data
    if any(series in query.text for series in NONZERO_SERIES):
        return not any(float(sample["value"][1]) > 0 for sample in data["result"])
    return not data["result"]


async def empty_promql(http: httpx.AsyncClient, queries: list[Query]) -> list[Query]:
    found = await asyncio.gather(*(promql_is_empty(http, query) for query in queries))
    return [query for query, empty in zip(queries, found, strict=True) if empty]


async def sql_rows(database_url: str, queries: list[Query]) -> list[list[asyncpg.Record]]:
    """The rows of each SQL query over the last year (an error fails the test)."""
    dsn = make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
    until = datetime.now(UTC)
    since = until - timedelta(days=365)
    connection = await asyncpg.connect(dsn)
    try:
        found = []
        for query in queries:
            try:
                found.append(await connection.fetch(sql_for_test(query, since, until)))
            except asyncpg.PostgresError as exc:
                raise AssertionError(f"{query}\nfails: {exc!r}") from exc
        return found
    finally:
        await connection.close()


def rule_groups() -> set[str]:
    return set(re.findall(r"^\s*- name: (\S+)$", RULES_FILE.read_text(), re.M))


async def rules_evaluated(http: httpx.AsyncClient) -> list[dict]:
    """The loaded rule groups once each of their rules has been evaluated without error."""
    groups = (await http.get("/api/v1/rules")).json()["data"]["groups"]
    if any(rule["health"] != "ok" for group in groups for rule in group["rules"]):
        return []
    return groups


async def test_every_dashboard_query_finds_data_in_prometheus_and_postgresql(settings, tmp_path):
    queries = all_queries()
    promql = [query for query in queries if query.datasource_uid == PROMETHEUS_UID]
    sql = [query for query in queries if query.datasource_uid == POSTGRES_UID]
    assert promql
    assert sql
    with running_stack(settings, tmp_path) as stack:
        keys = await drive_tickets(stack, settings)
        await leave_a_work_order_awaiting_reply(stack, keys)
        await publish_poison(stack.settings)
        await check_prometheus(stack, promql)
        await check_postgresql(stack, sql, keys)


async def check_prometheus(stack: Stack, promql: list[Query]) -> None:
    """All four services scraped; every PromQL query finds samples; every rule evaluated."""
    async with httpx.AsyncClient(base_url=stack.prometheus, timeout=10) as http:
        targets = (await http.get("/api/v1/targets")).json()["data"]["activeTargets"]
        assert sorted(target["health"] for target in targets) == ["up"] * 4, targets

        async def all_found() -> bool:
            return not await empty_promql(http, promql)

        try:
            # The series appear with the next refresh of the rate gauges and the next
            # scrape; increase() needs two samples.
            await eventually(all_found, timeout=30, interval=0.5, message="every series")
        except AssertionError:
            empty = await empty_promql(http, promql)
            pytest.fail(
                "panels find no data (or, for NONZERO_SERIES, no value above 0):\n"
                + "\n".join(f"  {query}" for query in empty)
            )

        groups = await eventually(
            lambda: rules_evaluated(http), timeout=15, interval=0.5, message="rules evaluated"
        )
        assert {group["name"] for group in groups} == rule_groups()
        assert all(group["file"] == str(RULES_FILE) for group in groups)


async def check_postgresql(stack: Stack, sql: list[Query], keys: KeyRing) -> None:
    """Every SQL query runs and finds rows in metrics's schema; a query per department that
    names a rate column gives that rate of GET /rates/by/department (all the simulated
    tickets are in the last year)."""
    found = await sql_rows(stack.settings.database_url, sql)
    empty = [query for query, rows in zip(sql, found, strict=True) if not rows]
    assert empty == [], "SQL panels find no rows:\n" + "\n".join(f"  {q}" for q in empty)
    headers = {"Authorization": f"Bearer {keys.token('auditor')}"}
    async with httpx.AsyncClient(base_url=stack.endpoints.metrics, headers=headers) as http:
        groups = (await http.get("/rates/by/department")).json()["groups"]
    by_department = {group["key"]: group["rates"] for group in groups}
    compared = 0
    for query, rows in zip(sql, found, strict=True):
        for record in rows:
            row = dict(record)
            rates = [name for name in row if name in RATE_NAMES]
            if "department" not in row or not rates:
                continue
            [rate] = rates
            want = by_department[row["department"]][rate]["value"]
            assert row[rate] == pytest.approx(want), (str(query), row["department"], rate)
            compared += 1
    assert compared >= 3
