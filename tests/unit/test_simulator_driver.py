"""The simulator's driver against in-memory fakes of the four services (no servers): retries,
idempotency, back-dated order of events, settling, verdicts and exit statuses."""

import asyncio
import itertools
import json
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import httpx
from rich.console import Console

from hotline.embedded import free_port
from hotline.simulator.client import CONNECT_ATTEMPTS, ServiceClients, connect_backoff
from hotline.simulator.config import RunConfig
from hotline.simulator.live import simulate_live
from hotline.simulator.model import generate_story
from hotline.simulator.params import SimulatorParams, Timing
from hotline.simulator.players import Player
from hotline.simulator.run import run, simulate
from hotline.simulator.truth import (
    Selection,
    SentCallback,
    SentReply,
    SentTicket,
    SentTransfer,
    SentWorkOrder,
    expected_rates,
)
from services.dispatch.models import ReplyCreate, TransferCreate, WorkOrderCreate
from services.followup.models import CallbackCreate
from services.intake.models import TicketCreate
from shared.auth.keyfile import KeyRing, generate_entries, write_keys_file
from shared.names import RATE_NAMES
from tests.support import eventually

HEALTH = ("/healthz", "/readyz")

KEYS = KeyRing(generate_entries(SimulatorParams().departments(), label="fake"))
"""Keys for the fake services below, which do not check them (tests/e2e/test_access.py
checks the real ones)."""


class FakeServices:
    """Intake, dispatch, followup and metrics in memory, strict about what they are sent.

    Dispatch and followup answer 409 `not_yet_known` the first time they hear of a ticket,
    as the real ones do while its event is on its way, and give a POST's first answer again
    for its Idempotency-Key. Metrics answers `lag_polls` empty answers first, and can be
    told to miscount.
    """

    def __init__(
        self, *, lag_polls=0, miscount=None, lose_first_intake_answer=False, lose_answer_of=None
    ):
        self.tickets: dict[str, SentTicket] = {}
        self.by_key: dict[str, str] = {}
        self.bodies: dict[str, bytes] = {}
        self.work_orders: dict[str, tuple[SentTicket, SentWorkOrder]] = {}
        self.seen_by: dict[str, set[str]] = {"dispatch": set(), "followup": set()}
        self.not_yet_known = 0
        self.intake_posts = 0
        self.lag_polls = lag_polls
        self.miscount = miscount
        self.lose_first_intake_answer = lose_first_intake_answer
        self.order_errors: list[str] = []
        self.ids = itertools.count()
        self.submitted_at_given: list[bool] = []
        self.post_keys: dict[str, list[str | None]] = {"dispatch": [], "followup": []}
        self.answers: dict[str, dict] = {}
        self.lose_answer_of = lose_answer_of
        """A service whose first recorded POST loses its answer (the connection drops)."""
        self.lost_keys: list[str] = []

    def clients(self):
        def client(name, handler):
            return httpx.AsyncClient(
                transport=httpx.MockTransport(handler), base_url=f"http://{name}"
            )

        return ServiceClients(
            intake=client("intake", self.intake),
            dispatch=client("dispatch", self.keyed("dispatch", self.dispatch)),
            followup=client("followup", self.keyed("followup", self.followup)),
            metrics=client("metrics", self.metrics),
            keys=KEYS,
        )

    # --- intake ---------------------------------------------------------------------------

    def intake(self, request):
        if request.url.path in HEALTH:
            return httpx.Response(200, json={"status": "ok"})
        body = TicketCreate.model_validate_json(request.content)
        self.intake_posts += 1
        self.submitted_at_given.append(body.submitted_at is not None)
        key = request.headers["Idempotency-Key"]
        if key in self.by_key and self.bodies[key] != request.content:
            return httpx.Response(409, json={"detail": "key reused", "code": "conflict"})
        self.bodies[key] = request.content
        if key not in self.by_key:
            ticket_id = f"t{next(self.ids)}"
            self.by_key[key] = ticket_id
            self.tickets[ticket_id] = SentTicket(
                ticket_id=ticket_id,
                city=body.city,
                channel=body.channel,
                scenario=body.scenario,
                submitted_at=body.submitted_at or datetime.now(UTC),
                answered=body.call.answered,
                wait_seconds=body.call.wait_seconds,
                resolved_at_first_contact=body.call.resolved_at_first_contact,
            )
            if self.lose_first_intake_answer and self.intake_posts == 1:
                raise httpx.ReadError("connection dropped after the request arrived")
        return httpx.Response(201, json={"ticket_id": self.by_key[key]})

    # --- dispatch and followup ------------------------------------------------------------

    def keyed(self, service, handler):
        """`handler` behind an Idempotency-Key check: a key's first 201 is given again."""

        def handle(request):
            if request.method != "POST":
                return handler(request)
            key = request.headers.get("Idempotency-Key")
            self.post_keys[service].append(key)
            if key in self.answers:
                return httpx.Response(201, json=self.answers[key])
            response = handler(request)
            if key and response.status_code == 201:
                self.answers[key] = response.json()
                if self.lose_answer_of == service and not self.lost_keys:
                    self.lost_keys.append(key)
                    raise httpx.ReadError("connection dropped after the request was recorded")
            return response

        return handle

    def known(self, service, ticket_id):
        if ticket_id not in self.seen_by[service]:
            self.seen_by[service].add(ticket_id)
            self.not_yet_known += 1
            return httpx.Response(
                409,
                json={"detail": "not yet", "code": "not_yet_known"},
                headers={"Retry-After": "0"},
            )
        return None

    def dispatch(self, request):
        parts = request.url.path.strip("/").split("/")
        if request.url.path in HEALTH:
            return httpx.Response(200, json={"status": "ok"})
        if parts[0] == "tickets":
            ticket_id = parts[1]
            if (answer := self.known("dispatch", ticket_id)) is not None:
                return answer
            ticket = self.tickets[ticket_id]
            if parts[2] == "transfers":
                body = TransferCreate.model_validate_json(request.content)
                at = body.at or datetime.now(UTC)
                self.after(ticket.submitted_at, at, "transfer before submission")
                ticket.transfers.append(
                    SentTransfer(body.department, body.mode, body.connected, at)
                )
                return httpx.Response(201, json={"at": at.isoformat()})
            body = WorkOrderCreate.model_validate_json(request.content)
            at = body.at or datetime.now(UTC)
            self.after(ticket.submitted_at, at, "work order before submission")
            last_transfer = max((t.at for t in ticket.transfers), default=ticket.submitted_at)
            self.after(last_transfer, at, "work order before the transfer")
            work_order = SentWorkOrder(
                work_order_id=f"w{next(self.ids)}",
                department=body.department,
                created_at=at,
                due_at=at + timedelta(days=7),
            )
            ticket.work_orders.append(work_order)
            self.work_orders[work_order.work_order_id] = (ticket, work_order)
            return httpx.Response(
                201,
                json={
                    "work_order_id": work_order.work_order_id,
                    "created_at": work_order.created_at.isoformat(),
                    "due_at": work_order.due_at.isoformat(),
                },
            )
        ticket, work_order = self.work_orders[parts[1]]
        body = ReplyCreate.model_validate_json(request.content)
        at = body.at or datetime.now(UTC)
        self.after(work_order.created_at, at, "reply before its work order")
        work_order.replies.append(SentReply(body.quality, at))
        return httpx.Response(201, json={"at": at.isoformat()})

    def followup(self, request):
        parts = request.url.path.strip("/").split("/")
        if request.url.path in HEALTH:
            return httpx.Response(200, json={"status": "ok"})
        ticket_id = parts[1]
        if (answer := self.known("followup", ticket_id)) is not None:
            return answer
        ticket = self.tickets[ticket_id]
        body = CallbackCreate.model_validate_json(request.content)
        at = body.at or datetime.now(UTC)
        replies = [w.first_reply.at for w in ticket.work_orders if w.first_reply]
        self.after(max(replies, default=ticket.submitted_at), at, "callback before reply")
        ticket.callbacks.append(SentCallback(body.reached, body.satisfaction, at))
        return httpx.Response(201, json={"at": at.isoformat()})

    def after(self, earlier, later, what):
        if later < earlier:
            self.order_errors.append(f"{what}: {later} < {earlier}")

    # --- metrics --------------------------------------------------------------------------

    def metrics(self, request):
        if request.url.path in HEALTH:
            return httpx.Response(200, json={"status": "ok"})
        since = request.url.params.get("since")
        until = request.url.params.get("until")
        selection = Selection(
            since=datetime.fromisoformat(since) if since else None,
            until=datetime.fromisoformat(until) if until else None,
        )
        tickets = list(self.tickets.values())
        if self.lag_polls > 0 and tickets:
            self.lag_polls -= 1
            tickets = tickets[: len(tickets) // 2]
        rates = expected_rates(tickets, now=datetime.now().astimezone(), selection=selection)
        shown = {
            name: {
                "value": rate.value,
                "numerator": float(rate.numerator),
                "denominator": rate.denominator,
            }
            for name, rate in rates.items()
        }
        if self.miscount and tickets:
            shown[self.miscount]["denominator"] += 1
        return httpx.Response(200, json={"rates": shown})


QUICK = RunConfig(
    params=SimulatorParams(),
    tickets=80,
    rate=10_000,
    seed=11,
    run_id="unit",
    settle_timeout=5.0,
    poll_interval=0.01,
)


async def test_a_run_against_faithful_services_matches_with_every_event_in_order():
    fakes = FakeServices(lag_polls=3)
    result = await simulate(QUICK, fakes.clients(), say=lambda line: None)
    assert result.comparison.match, result.comparison.mismatched
    assert result.exit_code == 0
    assert len(result.sent) == len(fakes.tickets) == 80
    assert fakes.order_errors == []
    assert fakes.not_yet_known > 0  # the 409s were met, and retried
    assert all(result.window.since <= t.submitted_at < result.window.until for t in result.sent)
    assert all(t.submitted_at.tzinfo is not None for t in result.sent)
    sent = sorted(result.sent, key=lambda t: t.ticket_id)
    stored = sorted(fakes.tickets.values(), key=lambda t: t.ticket_id)
    assert [t.ticket_id for t in sent] == [t.ticket_id for t in stored]
    assert sum(len(t.work_orders) for t in sent) == sum(len(t.work_orders) for t in stored) > 0
    assert sum(len(t.callbacks) for t in sent) == sum(len(t.callbacks) for t in stored) > 0
    assert result.settle_seconds > 0  # it waited for the lagging metrics


async def test_a_run_is_the_same_run_again_with_the_same_seed():
    first = await simulate(QUICK, FakeServices().clients(), say=lambda line: None)
    second = await simulate(QUICK, FakeServices().clients(), say=lambda line: None)
    shape = [(t.city, t.channel, t.answered, len(t.work_orders)) for t in first.sent]
    assert shape == [(t.city, t.channel, t.answered, len(t.work_orders)) for t in second.sent]
    assert first.window == second.window


async def test_a_run_with_a_duration_stops_starting_stories_when_it_passes():
    # 20 stories a second for 0.3 s: about 6 of the 80 start, and the rest never do; what
    # was started is still counted and compared.
    config = replace(QUICK, rate=20, duration=0.3)
    fakes = FakeServices()
    result = await simulate(config, fakes.clients(), say=lambda line: None)
    assert 1 <= len(result.sent) < 80
    assert len(fakes.tickets) == len(result.sent)
    assert result.comparison.match, result.comparison.mismatched


async def test_metrics_that_miscount_are_caught_and_exit_1():
    fakes = FakeServices(miscount="transfer_failure_rate")
    config = replace(QUICK, settle_timeout=0.2)
    output = Console(record=True, width=140)
    code = await run(config, clients=fakes.clients(), console=output)
    assert code == 1
    text = output.export_text()
    assert "✗" in text
    assert "transfer_failure_rate" in text
    assert "1 rates differ" in text


async def test_the_json_output_has_both_sides_of_every_rate():
    output = Console(record=True, width=200)
    code = await run(QUICK, clients=FakeServices().clients(), console=output, json_output=True)
    assert code == 0
    answer = json.loads(output.export_text())
    assert answer["match"] is True
    assert answer["exit_code"] == 0
    assert [r["rate"] for r in answer["rates"]] == list(RATE_NAMES)
    for rate in answer["rates"]:
        assert rate["expected"]["denominator"] == rate["reported"]["denominator"]
        assert rate["match"] is True


async def test_a_lost_intake_answer_is_retried_without_making_a_second_ticket():
    fakes = FakeServices(lose_first_intake_answer=True)
    result = await simulate(replace(QUICK, tickets=5), fakes.clients(), say=lambda line: None)
    assert fakes.intake_posts == 6
    assert len(fakes.tickets) == 5
    assert result.exit_code == 0


def effects(tickets):
    """Transfers, work orders, replies and callbacks of `tickets`."""
    return sum(
        len(t.transfers) + len(t.callbacks) + sum(1 + len(w.replies) for w in t.work_orders)
        for t in tickets
    )


async def test_every_dispatch_and_followup_post_carries_a_key_of_its_own():
    fakes = FakeServices()
    result = await simulate(replace(QUICK, tickets=30), fakes.clients(), say=lambda line: None)
    keys = fakes.post_keys["dispatch"] + fakes.post_keys["followup"]
    assert result.exit_code == 0
    assert None not in keys
    assert len(set(keys)) == effects(fakes.tickets.values()) > 0  # one key per step
    assert len(keys) > len(set(keys))  # and the retries after a 409 reuse it
    assert all(key.startswith("simulator-unit-") for key in keys)


def test_a_step_key_is_the_same_on_retry_and_new_for_another_step_or_run():
    story = generate_story(SimulatorParams(), 11, 3)
    player, rerun = (Player(FakeServices().clients(), QUICK, "unit") for _ in range(2))
    assert player.step_key(story, "reply") == player.step_key(story, "reply")
    steps = [None, "transfer-0", "transfer-1", "work-order", "reply", "callback-0"]
    assert len({player.step_key(story, step) for step in steps}) == len(steps)
    assert player.step_key(story, "reply") != rerun.step_key(story, "reply")


async def test_a_lost_dispatch_answer_is_retried_with_its_key_and_recorded_once():
    fakes = FakeServices(lose_answer_of="dispatch")
    result = await simulate(replace(QUICK, tickets=10), fakes.clients(), say=lambda line: None)
    assert result.exit_code == 0, result.failures
    (lost,) = fakes.lost_keys
    assert fakes.post_keys["dispatch"].count(lost) >= 2  # sent again after the lost answer
    assert effects(result.sent) == effects(fakes.tickets.values()) > 0


def test_a_refused_connection_is_retried_for_long_enough_to_outlast_a_restart():
    waited = sum(connect_backoff(failed) for failed in range(1, CONNECT_ATTEMPTS))
    assert 30 <= waited <= 90  # a service restarted, or the whole stack after its broker died
    assert all(connect_backoff(n) <= connect_backoff(n + 1) for n in range(1, CONNECT_ATTEMPTS))


async def test_an_unreachable_service_ends_the_run_with_exit_2_naming_it():
    def refuse(request):
        raise httpx.ConnectError("connection refused")

    clients = FakeServices().clients()
    clients.dispatch = httpx.AsyncClient(
        transport=httpx.MockTransport(refuse), base_url="http://127.0.0.1:9"
    )
    output = Console(record=True, width=200, stderr=True)
    code = await run(QUICK, clients=clients, console=output)
    assert code == 2


async def test_a_window_earlier_runs_used_is_skipped():
    fakes = FakeServices()
    first = await simulate(replace(QUICK, tickets=10), fakes.clients(), say=lambda line: None)
    second = await simulate(replace(QUICK, tickets=10), fakes.clients(), say=lambda line: None)
    assert second.window != first.window
    assert second.baseline is None
    assert second.comparison.match


async def test_a_window_given_twice_adds_what_it_already_holds_to_the_expectation():
    fakes = FakeServices()
    config = replace(QUICK, tickets=10, window_start=datetime(2025, 11, 3).date())
    first = await simulate(config, fakes.clients(), say=lambda line: None)
    second = await simulate(replace(config, seed=12), fakes.clients(), say=lambda line: None)
    assert second.window == first.window
    assert second.baseline is not None
    assert second.comparison.match, second.comparison.mismatched
    denominator = second.comparison.rows[0].expected.denominator
    assert denominator == sum(t.channel == "phone" for t in first.sent + second.sent)


async def test_a_too_recent_window_is_refused():
    config = replace(QUICK, window_start=datetime.now().date() - timedelta(days=3))
    code = await run(config, clients=FakeServices().clients(), console=Console(record=True))
    assert code == 2


async def test_live_mode_submits_now_until_stopped_and_never_backdates():
    fakes = FakeServices()
    params = SimulatorParams(timing=Timing(live_step_seconds=(0.0, 0.0)))
    config = RunConfig(params=params, rate=2000, seed=5, summary_every=0.05)
    stop = asyncio.Event()
    lines = []

    async def stop_after_tickets():
        await eventually(lambda: len(fakes.tickets) >= 40, message="40 live tickets")
        stop.set()

    stopper = asyncio.create_task(stop_after_tickets())
    player = await asyncio.wait_for(
        simulate_live(config, fakes.clients(), say=lines.append, stop=stop), 20
    )
    await stopper
    assert player.counts["tickets"] >= 40
    assert set(fakes.submitted_at_given) == {False}  # the server's now, never back-dated
    assert player.counts["work_orders"] > 0
    assert any(line.startswith("live: ") and "/rates since" in line for line in lines)
    assert not player.failures, player.failures


def test_the_live_command_exits_0_on_sigterm_while_waiting_for_the_stack(tmp_path):
    keys_file = tmp_path / "api-keys.toml"
    write_keys_file(keys_file, generate_entries(SimulatorParams().departments(), label="fake"))
    port = free_port()
    urls = [
        f"--{name}-url=http://127.0.0.1:{port}"
        for name in ("intake", "dispatch", "followup", "metrics")
    ]
    process = subprocess.Popen(
        [sys.executable, "-m", "hotline.cli", "simulate", "--live", f"--keys={keys_file}", *urls],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    try:
        ready, _, _ = select.select([process.stdout], [], [], 30)
        assert ready, "no output from `hotline simulate --live` within 30 s"
        line = process.stdout.readline()
        assert "waiting for intake" in line, line
        process.send_signal(signal.SIGTERM)
        started = time.monotonic()
        assert process.wait(timeout=15) == 0
        assert time.monotonic() - started < 5
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
