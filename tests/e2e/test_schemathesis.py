"""Schemathesis over every operation of every service: generated requests (valid and invalid,
with a key of a role the route allows) never get a 5xx, and every answer is as the OpenAPI
document says: a documented status, content type, body schema and headers.

Each service runs in-process with its lifespan (migrations, relay, consumer) started by
schemathesis on its own event loop, against the session's real PostgreSQL and broker. A
ticket (and in dispatch a work order) is made first, and every other case that names a
ticket or work order in its path names that one, so the routes get past "no such ticket"
to what they do with the body. The examples are derandomized: a run is the same every time.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import hypothesis
import pytest
import schemathesis
from aiokafka import AIOKafkaProducer
from anyio.from_thread import start_blocking_portal
from hypothesis import HealthCheck, Phase
from hypothesis.configuration import set_hypothesis_home_dir
from schemathesis.pytest.lazy import get_all_tests
from schemathesis.python.asgi import get_client, shutdown_lifespans

from shared.auth.keyfile import KeyRing
from shared.names import SERVICE_NAMES, Role
from shared.settings import Settings
from tests.e2e.test_access import POLICY
from tests.support import load_app, publish, scratch_dir, stored_keys, submitted_event

pytestmark = [
    pytest.mark.e2e,
    # Schemathesis's own strategies draw from `random`; the runs are the same every time all
    # the same (derandomized), as the counts they print show.
    pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning"),
]

EXAMPLES = 25
"""Generated cases per operation (valid and invalid ones), beside the examples and boundary
cases schemathesis derives from each schema."""
DEPARTMENT = "医保局"
PREFERRED: tuple[Role, ...] = (
    "auditor",
    "operator",
    "callback",
    "evaluator",
    "department",
    "admin",
)
"""Of the roles a route allows, the one the requests are sent with: the first listed here."""
WAIT_SECONDS = 30.0

CHECKS = [
    # What this test is for: no 5xx, and every answer as documented.
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_headers_conformance,
    schemathesis.checks.response_schema_conformance,
    # And, as cheap: 405 (with Allow) for other methods, 401 without the key, a missing
    # required header refused. Not `positive_data_acceptance` and `negative_data_rejection`:
    # rules across fields (`at` after the ticket's submission, `until` after `since`) refuse
    # schema-valid requests, and pydantic's lax mode takes `0` for `false`.
    schemathesis.checks.unsupported_method,
    schemathesis.checks.missing_required_header,
    schemathesis.checks.ignored_auth,
    schemathesis.checks.use_after_free,
    schemathesis.checks.ensure_resource_availability,
]

HYPOTHESIS = hypothesis.settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)


@dataclass
class ServiceUnderTest:
    """A running service's schema, the keys to call it with, and ids that exist in it."""

    name: str
    schema: Any
    keys: KeyRing
    started: float
    known: dict[str, str] = field(default_factory=dict)

    def headers_for(self, method: str, path: str) -> dict[str, str]:
        """An Authorization header with a key of a role `method path` allows (none for the
        open operations routes)."""
        allowed = POLICY[self.name].get((method.upper(), path))
        if allowed is None:
            return {}
        role = next(role for role in PREFERRED if role in allowed)
        department = DEPARTMENT if role == "department" else None
        return {"Authorization": f"Bearer {self.keys.token(role, department)}"}


def waited_for(check: Callable[[], Any], what: str) -> Any:
    """`check()` once it is truthy (polled; the app runs on schemathesis's event loop, not
    this thread), failing after WAIT_SECONDS."""
    deadline = time.monotonic() + WAIT_SECONDS
    while not (result := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return result


async def announce_ticket(settings: Settings, ticket_id: str) -> None:
    """Publish a ticket's `submitted` event as intake would."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all")
    await producer.start()
    try:
        event = submitted_event(ticket_id, ago=timedelta(days=1))
        await publish(producer, settings.topic("intake"), event)
    finally:
        await producer.stop()


def make_known(service: ServiceUnderTest, app: Any, settings: Settings) -> None:
    """A ticket (and in dispatch a work order of DEPARTMENT's) the cases can name."""
    client = get_client(app)
    if service.name == "intake":
        headers = service.headers_for("POST", "/tickets")
        body = {
            "city": "沈阳",
            "channel": "online",
            "scenario": "社保查询",
            "category": "consultation",
            "content": "医保卡丢了怎么补办？",
            "call": {"answered": True, "resolved_at_first_contact": False},
        }
        created = client.post("/tickets", json=body, headers=headers)
        assert created.status_code == 201, created.text
        service.known["ticket_id"] = created.json()["ticket_id"]
    elif service.name in ("dispatch", "followup"):
        ticket_id = f"schemathesis-{service.name}"
        with start_blocking_portal() as portal:
            portal.call(announce_ticket, settings, ticket_id)
        headers = service.headers_for("GET", "/tickets/{ticket_id}")
        waited_for(
            lambda: client.get(f"/tickets/{ticket_id}", headers=headers).status_code == 200,
            f"{service.name} to hear of the ticket",
        )
        service.known["ticket_id"] = ticket_id
    if service.name == "dispatch":
        created = client.post(
            f"/tickets/{service.known['ticket_id']}/work-orders",
            json={"department": DEPARTMENT},
            headers=service.headers_for("POST", "/tickets/{ticket_id}/work-orders"),
        )
        assert created.status_code == 201, created.text
        service.known["work_order_id"] = created.json()["work_order_id"]


@pytest.fixture(params=SERVICE_NAMES)
def service_under_test(request, settings) -> Iterator[ServiceUnderTest]:
    """The service's app started by schemathesis (loading its schema starts its lifespan),
    with stored keys of every role and a known ticket; its lifespan stopped afterwards."""
    # Hypothesis keeps caches (even without its example database): in the run's scratch
    # folder, removed at the end, rather than in the work tree.
    set_hypothesis_home_dir(scratch_dir("hypothesis-"))
    # Thousands of requests a second with one key: not what the rate limit is tested with.
    settings = settings.model_copy(update={"rate_limit": "1000000/second"})
    app = load_app(request.param, settings)
    started = time.monotonic()
    try:
        schema = schemathesis.openapi.from_asgi("/openapi.json", app)
        # /readyz says 503 until the broker answers: not what this test is about.
        waited_for(app.state.runtime.broker_connected.is_set, "the broker")
        with start_blocking_portal() as portal:
            keys = portal.call(stored_keys, settings, [DEPARTMENT])
        service = ServiceUnderTest(request.param, schema, keys, started)
        make_known(service, app, settings)
        yield service
    finally:
        shutdown_lifespans()


def test_every_answer_is_documented_and_none_is_a_server_error(service_under_test):
    """Every operation: schemathesis's examples, boundary (coverage) cases and fuzzed valid
    and invalid ones, as `@schema.parametrize()` would run them (its fixture-based form does
    not run on pytest 9)."""
    service = service_under_test
    answers: Counter[str] = Counter()

    def check(case):
        if answers.total() % 2:
            for name in case.path_parameters.keys() & service.known.keys():
                case.path_parameters[name] = service.known[name]
        response = case.call_and_validate(
            headers=service.headers_for(case.operation.method, case.operation.path),
            checks=CHECKS,
        )
        answers[str(response.status_code)] += 1

    failures, operations = [], []
    for result in get_all_tests(
        schema=service.schema, test_func=check, settings=HYPOTHESIS, given_kwargs=None
    ):
        operation, test = result.ok()
        operations.append(f"{operation.method.upper()} {operation.path}")
        try:
            test()
        except Exception as exc:
            failures.append(f"{operations[-1]}:\n{exc}")
    elapsed = time.monotonic() - service.started
    print(
        f"\n{service.name}: {answers.total()} cases over {len(operations)} operations in "
        f"{elapsed:.1f} s; statuses {dict(sorted(answers.items()))}"
    )
    assert len(operations) == len(POLICY[service.name]) + 2  # and /healthz, /readyz
    assert answers.total() >= 20 * len(operations)
    assert not failures, "\n\n".join(failures)
