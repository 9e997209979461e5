"""The stories played against the public HTTP APIs of intake, dispatch and followup.

Two ways to run:

- a comparison run (`simulate`): N tickets back-dated into a window of their own in the
  past (a few days, 60 to 400 days ago, chosen from the run id), so every deadline has
  passed and no other traffic shares the window; then `/rates` for that window is polled
  until it equals what the run expects (`truth`), or the settle timeout passes;
- a live run (`simulate_live`): tickets submitted now, their steps a few real seconds
  apart, until stopped; a one-line summary now and then.

Requests: at most `concurrency` tickets in flight, launched at `rate` tickets a second.
`POST /tickets` carries an Idempotency-Key, so a retried request never makes a second
ticket. Dispatch and followup answer 409 `not_yet_known` (with Retry-After) for a ticket
whose event has not reached them yet, and 503 while their database is away: both are
retried after Retry-After. Their POSTs have no idempotency key, so a request that may have
arrived (a read timeout, a dropped connection) is not retried: it is reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import secrets
import signal
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock_time
from typing import Any, Final, Literal

import httpx
from rich.console import Console

from hotline.simulator.model import (
    CallbackPlan,
    ReplyPlan,
    Story,
    TransferPlan,
    WorkOrderPlan,
    generate_story,
    iter_stories,
    rng_for,
)
from hotline.simulator.params import SimulatorParams
from hotline.simulator.report import (
    Comparison,
    as_json,
    compare,
    render_table,
    reported_as_expected,
)
from hotline.simulator.truth import (
    Expected,
    Selection,
    SentCallback,
    SentReply,
    SentTicket,
    SentTransfer,
    SentWorkOrder,
    combined,
    expected_rates,
)
from shared.settings import Settings
from shared.workdays import SHANGHAI

Service = Literal["intake", "dispatch", "followup", "metrics"]
SERVICES: Final[tuple[Service, ...]] = ("intake", "dispatch", "followup", "metrics")

EARLIEST_WINDOW_DAYS_AGO: Final = 60
LATEST_WINDOW_DAYS_AGO: Final = 400
HOLIDAY_SLACK_DAYS: Final = 12
"""Calendar days a deadline may stretch beyond its working days (the October holidays)."""
MIN_RETRY_SECONDS: Final = 0.05
CONNECT_ATTEMPTS: Final = 5
WINDOW_PROBES: Final = 50


class SimulatorError(Exception):
    """The run could not be played as planned; the message says what to do."""


class ServiceUnreachable(SimulatorError):
    """A service did not accept a connection, or a request's fate is unknown."""


class RequestRefused(SimulatorError):
    """A service refused a request the simulator thought valid (a bug on one side)."""


@dataclass(frozen=True)
class Endpoints:
    """Where each service answers."""

    intake: str
    dispatch: str
    followup: str
    metrics: str

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: str | None) -> Endpoints:
        """`http://<host>:<port>` from the settings, any of them overridden."""
        urls = {
            name: overrides.get(name) or f"http://{settings.host}:{settings.port_of(name)}"
            for name in SERVICES
        }
        return cls(**urls)


@dataclass
class ServiceClients:
    """One HTTP client per service; tests pass in-process (ASGI) clients."""

    intake: httpx.AsyncClient
    dispatch: httpx.AsyncClient
    followup: httpx.AsyncClient
    metrics: httpx.AsyncClient

    def of(self, service: Service) -> httpx.AsyncClient:
        """The client of `service`."""
        client: httpx.AsyncClient = getattr(self, service)
        return client


@contextlib.asynccontextmanager
async def open_clients(endpoints: Endpoints, timeout: float) -> AsyncIterator[ServiceClients]:
    """Clients for the services at `endpoints`, closed on exit."""
    async with contextlib.AsyncExitStack() as stack:
        clients = {
            name: await stack.enter_async_context(
                httpx.AsyncClient(base_url=getattr(endpoints, name), timeout=timeout)
            )
            for name in SERVICES
        }
        yield ServiceClients(**clients)


@dataclass(frozen=True)
class RunConfig:
    """What to simulate and how fast; see `hotline simulate --help` for each option."""

    params: SimulatorParams = field(default_factory=SimulatorParams)
    tickets: int = 100
    rate: float = 50.0
    seed: int = 0
    concurrency: int = 16
    run_id: str | None = None
    days: int = 7
    window_start: date | None = None
    settle_timeout: float = 60.0
    poll_interval: float = 0.5
    not_known_timeout: float = 60.0
    """How long to keep retrying a 409 `not_yet_known` (or a 503) before giving up."""
    summary_every: float = 10.0


@dataclass(frozen=True)
class Window:
    """The span of `submitted_at` a comparison run fills: since inclusive, until exclusive."""

    since: datetime
    until: datetime

    def query(self) -> dict[str, str]:
        """`since` and `until` as `/rates` query parameters."""
        return {"since": self.since.isoformat(), "until": self.until.isoformat()}


@dataclass
class RunResult:
    """What a comparison run sent, expected and read back."""

    run_id: str
    seed: int
    window: Window
    sent: list[SentTicket]
    baseline: dict[str, Expected] | None
    comparison: Comparison
    failures: list[str]
    settle_seconds: float

    @property
    def exit_code(self) -> int:
        """0: everything matched; 1: a rate differs; 2: requests failed."""
        if self.failures:
            return 2
        return 0 if self.comparison.match else 1


Say = Callable[[str], None]


def new_run_id() -> str:
    """A short random run id."""
    return secrets.token_hex(5)


def story_span(params: SimulatorParams) -> timedelta:
    """An upper bound on how long after its submission a story's last event comes."""
    t = params.timing
    deadline = timedelta(days=params.due_working_days * 7 / 5 + HOLIDAY_SLACK_DAYS)
    return (
        timedelta(seconds=600 + t.transfer_after_answer_seconds[1])
        + timedelta(minutes=t.work_order_after_submission_minutes[1])
        + deadline
        + timedelta(days=t.late_reply_days[1])
        + timedelta(hours=t.callback_after_hours[1] + t.callback_retry_after_hours[1])
    )


def window_candidates(run_id: str, config: RunConfig, today: date) -> list[Window]:
    """Windows to try, the run id's own first; each ends long enough ago for every story
    that starts in it to be over (so every deadline in it has passed)."""
    span_days = story_span(config.params).days + 1
    if config.window_start is not None:
        starts = [config.window_start]
        newest = today - timedelta(days=config.days + span_days)
        if config.window_start > newest:
            raise SimulatorError(
                f"--window-start {config.window_start} is too recent: a {config.days}-day "
                f"window must start by {newest} for its stories to be over by today"
            )
    else:
        earliest = max(EARLIEST_WINDOW_DAYS_AGO, config.days + span_days)
        choices = max(1, LATEST_WINDOW_DAYS_AGO - earliest)
        offset = int(hashlib.sha256(run_id.encode()).hexdigest()[:8], 16)
        starts = [
            today - timedelta(days=earliest + (offset + probe * (config.days + 1)) % choices)
            for probe in range(WINDOW_PROBES)
        ]
    return [
        Window(
            since=datetime.combine(start, clock_time(0), tzinfo=SHANGHAI),
            until=datetime.combine(start + timedelta(days=config.days), clock_time(0), SHANGHAI),
        )
        for start in starts
    ]


class Player:
    """Plays stories over HTTP and records what the services acknowledged."""

    def __init__(self, clients: ServiceClients, config: RunConfig, run_id: str) -> None:
        self.clients = clients
        self.config = config
        self.run_id = run_id
        # Keys unique to this invocation: a rerun with the same run id and seed must make
        # new tickets, not replay the old ones (intake would refuse their other times).
        self.key_prefix = f"simulator-{run_id}-{secrets.token_hex(4)}"
        self.sent: list[SentTicket] = []
        self.failures: list[str] = []
        self.counts: dict[str, int] = dict.fromkeys(
            ("tickets", "transfers", "work_orders", "replies", "callbacks"), 0
        )

    # --- HTTP -----------------------------------------------------------------------------

    async def post(
        self,
        service: Service,
        path: str,
        body: dict[str, Any],
        *,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """POST and return the 2xx JSON answer, retrying what is safe to retry."""
        client = self.clients.of(service)
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        deadline = time.monotonic() + self.config.not_known_timeout
        failed_connects = 0
        while True:
            try:
                response = await client.post(path, json=body, headers=headers)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                # Never sent: retrying cannot duplicate anything.
                failed_connects += 1
                if failed_connects >= CONNECT_ATTEMPTS:
                    raise unreachable(service, client, exc) from exc
                await asyncio.sleep(0.2 * 2**failed_connects)
                continue
            except httpx.TransportError as exc:
                if idempotency_key is None:
                    raise ServiceUnreachable(
                        f"{service}: POST {path} may or may not have been recorded "
                        f"({type(exc).__name__}: {exc}); not retried, it has no idempotency key"
                    ) from exc
                failed_connects += 1
                if failed_connects >= CONNECT_ATTEMPTS:
                    raise unreachable(service, client, exc) from exc
                continue
            if response.is_success:
                answer: dict[str, Any] = response.json()
                return answer
            wait = retry_delay(response)
            if wait is None:
                raise RequestRefused(
                    f"{service}: POST {path} answered {response.status_code}: {response.text[:400]}"
                )
            if time.monotonic() + wait > deadline:
                raise RequestRefused(
                    f"{service}: POST {path} still answers {response.status_code} after "
                    f"{self.config.not_known_timeout:g} s: {response.text[:200]}"
                )
            await asyncio.sleep(wait)

    # --- A back-dated story ----------------------------------------------------------------

    async def play_backdated(self, story: Story, submitted_at: datetime) -> None:
        """Play `story` with every event dated: submission at `submitted_at`, the rest after
        in the story's order (a reply relative to the `due_at` dispatch answers)."""
        sent = await self.submit(story, submitted_at)
        call_end = submitted_at + timedelta(seconds=story.call.wait_seconds or 0.0)
        for plan in story.transfers:
            transfer = await self.transfer(
                sent, story, plan, whole_seconds(submitted_at + plan.after)
            )
            call_end = max(call_end, transfer.at)
        eligible_at = submitted_at if story.call.resolved_at_first_contact else None
        order = story.work_order
        if order is not None:
            work_order = await self.create_work_order(
                sent, order, whole_seconds(call_end + order.after)
            )
            if order.reply is not None:
                at = reply_time(order.reply, work_order.created_at, work_order.due_at)
                reply = await self.reply(work_order, order.reply, at)
                eligible_at = eligible_at or reply.at
        if eligible_at is None:
            return
        moment = eligible_at
        for callback in story.callbacks:
            moment = whole_seconds(moment + callback.after)
            await self.call_back(sent, callback, moment)

    async def play_live(self, story: Story) -> None:
        """Play `story` now, its steps a few real seconds apart. A reply drawn late cannot
        be sent after a deadline days ahead, so it is left out: the work order stays
        unanswered (and turns overdue if nobody replies by its deadline)."""
        pause = rng_for(self.config.seed, story.index, "live")
        low, high = self.config.params.timing.live_step_seconds

        async def step() -> None:
            await asyncio.sleep(pause.uniform(low, high))

        sent = await self.submit(story, None)
        for plan in story.transfers:
            await step()
            await self.transfer(sent, story, plan, None)
        eligible = story.call.resolved_at_first_contact
        order = story.work_order
        if order is not None:
            await step()
            work_order = await self.create_work_order(sent, order, None)
            if order.reply is not None and order.reply.timeliness == "on_time":
                await step()
                await self.reply(work_order, order.reply, None)
                eligible = True
        if not eligible:
            return
        for callback in story.callbacks:
            await step()
            await self.call_back(sent, callback, None)

    # --- One request each; `None` for a time means now ------------------------------------

    async def submit(self, story: Story, submitted_at: datetime | None) -> SentTicket:
        """POST the ticket and record it."""
        answer = await self.post(
            "intake",
            "/tickets",
            ticket_body(story, evaluator=f"simulator {self.run_id}", submitted_at=submitted_at),
            idempotency_key=f"{self.key_prefix}-{story.index}",
        )
        sent = SentTicket(
            ticket_id=answer["ticket_id"],
            city=story.city,
            channel=story.channel,
            scenario=story.scenario,
            submitted_at=submitted_at or datetime.now(UTC),
            answered=story.call.answered,
            wait_seconds=story.call.wait_seconds,
            resolved_at_first_contact=story.call.resolved_at_first_contact,
        )
        self.sent.append(sent)
        self.counts["tickets"] += 1
        return sent

    async def transfer(
        self, sent: SentTicket, story: Story, plan: TransferPlan, at: datetime | None
    ) -> SentTransfer:
        """POST a transfer or three-way call and record it."""
        answer = await self.post(
            "dispatch", f"/tickets/{sent.ticket_id}/transfers", transfer_body(story, plan, at)
        )
        transfer = SentTransfer(
            story.department, plan.mode, plan.connected, datetime.fromisoformat(answer["at"])
        )
        sent.transfers.append(transfer)
        self.counts["transfers"] += 1
        return transfer

    async def create_work_order(
        self, sent: SentTicket, plan: WorkOrderPlan, created: datetime | None
    ) -> SentWorkOrder:
        """POST a work order and record it with the `due_at` dispatch gave it."""
        answer = await self.post(
            "dispatch", f"/tickets/{sent.ticket_id}/work-orders", work_order_body(plan, created)
        )
        work_order = SentWorkOrder(
            work_order_id=answer["work_order_id"],
            department=plan.department,
            created_at=datetime.fromisoformat(answer["created_at"]),
            due_at=datetime.fromisoformat(answer["due_at"]),
        )
        sent.work_orders.append(work_order)
        self.counts["work_orders"] += 1
        return work_order

    async def reply(
        self, work_order: SentWorkOrder, plan: ReplyPlan, at: datetime | None
    ) -> SentReply:
        """POST the department's reply and record it."""
        answer = await self.post(
            "dispatch", f"/work-orders/{work_order.work_order_id}/replies", reply_body(plan, at)
        )
        reply = SentReply(plan.quality, datetime.fromisoformat(answer["at"]))
        work_order.replies.append(reply)
        self.counts["replies"] += 1
        return reply

    async def call_back(self, sent: SentTicket, plan: CallbackPlan, at: datetime | None) -> None:
        """POST a callback and record it."""
        answer = await self.post(
            "followup", f"/tickets/{sent.ticket_id}/callbacks", callback_body(plan, at)
        )
        sent.callbacks.append(
            SentCallback(plan.reached, plan.satisfaction, datetime.fromisoformat(answer["at"]))
        )
        self.counts["callbacks"] += 1


# --- Request bodies: what each public API is sent ------------------------------------------


def dated(body: dict[str, Any], field_name: str, at: datetime | None) -> dict[str, Any]:
    """`body` with `field_name` set to `at` (RFC 3339); left out (the server's now) for None."""
    return body if at is None else {**body, field_name: at.isoformat()}


def ticket_body(story: Story, *, evaluator: str, submitted_at: datetime | None) -> dict[str, Any]:
    """`POST /tickets` (intake)."""
    body = {
        "city": story.city,
        "channel": story.channel,
        "scenario": story.scenario,
        "category": story.category,
        "content": story.content,
        "evaluator": evaluator,
        "call": {
            "answered": story.call.answered,
            "wait_seconds": story.call.wait_seconds,
            "resolved_at_first_contact": story.call.resolved_at_first_contact,
        },
    }
    return dated(body, "submitted_at", submitted_at)


def transfer_body(story: Story, plan: TransferPlan, at: datetime | None) -> dict[str, Any]:
    """`POST /tickets/{id}/transfers` (dispatch)."""
    body = {"department": story.department, "mode": plan.mode, "connected": plan.connected}
    return dated(body, "at", at)


def work_order_body(plan: WorkOrderPlan, at: datetime | None) -> dict[str, Any]:
    """`POST /tickets/{id}/work-orders` (dispatch)."""
    body = {"department": plan.department, "due_working_days": plan.due_working_days}
    return dated(body, "at", at)


def reply_body(plan: ReplyPlan, at: datetime | None) -> dict[str, Any]:
    """`POST /work-orders/{id}/replies` (dispatch)."""
    return dated({"content": REPLY_TEXT[plan.quality], "quality": plan.quality}, "at", at)


def callback_body(plan: CallbackPlan, at: datetime | None) -> dict[str, Any]:
    """`POST /tickets/{id}/callbacks` (followup)."""
    return dated({"reached": plan.reached, "satisfaction": plan.satisfaction}, "at", at)


REPLY_TEXT: Final = {
    "definite": "已核实：符合条件，请携带身份证到政务服务中心窗口办理，当场受理。",
    "partial": "已转相关科室研究，具体办理条件请关注后续通知。",
    "none": "已收悉。",
}
"""What a department's reply says, by quality (simulated text)."""


def whole_seconds(moment: datetime) -> datetime:
    """`moment` without its fraction of a second (tidier times, same order)."""
    return moment.replace(microsecond=0)


def reply_time(plan: ReplyPlan, created: datetime, due: datetime) -> datetime:
    """When the planned reply comes: a fraction of the way to `due` (never after it), or
    `delay` after it."""
    if plan.timeliness == "on_time":
        return max(created, whole_seconds(created + (due - created) * plan.fraction))
    return whole_seconds(due + plan.delay) + timedelta(seconds=1)


def retry_delay(response: httpx.Response) -> float | None:
    """Seconds to wait before retrying, or None when retrying cannot help."""
    code = None
    with contextlib.suppress(ValueError, AttributeError):
        code = response.json().get("code")
    retryable = (response.status_code == 409 and code == "not_yet_known") or (
        response.status_code == 503
    )
    if not retryable:
        return None
    try:
        seconds = float(response.headers.get("Retry-After", "1"))
    except ValueError:
        seconds = 1.0
    return max(MIN_RETRY_SECONDS, seconds)


def unreachable(service: Service, client: httpx.AsyncClient, exc: Exception) -> ServiceUnreachable:
    """The error for a service that does not answer, with what to check."""
    return ServiceUnreachable(
        f"{service} is unreachable at {client.base_url} ({type(exc).__name__}: {exc}); "
        f"is the stack running (`hotline up`)? Other addresses: --{service}-url"
    )


async def check_reachable(clients: ServiceClients, services: tuple[Service, ...]) -> None:
    """ServiceUnreachable naming the first of `services` whose /healthz does not answer."""
    for service in services:
        client = clients.of(service)
        try:
            response = await client.get("/healthz")
        except httpx.TransportError as exc:
            raise unreachable(service, client, exc) from exc
        if not response.is_success:
            raise ServiceUnreachable(
                f"{service} at {client.base_url} answers /healthz with {response.status_code}"
            )


async def read_rates(clients: ServiceClients, params: dict[str, str]) -> dict[str, Any]:
    """`GET /rates` with `params`: the `rates` object."""
    client = clients.metrics
    try:
        response = await client.get("/rates", params=params)
    except httpx.TransportError as exc:
        raise unreachable("metrics", client, exc) from exc
    if not response.is_success:
        raise RequestRefused(
            f"metrics: GET /rates answered {response.status_code}: {response.text}"
        )
    rates: dict[str, Any] = response.json()["rates"]
    return rates


async def choose_window(
    clients: ServiceClients, config: RunConfig, run_id: str
) -> tuple[Window, dict[str, Expected] | None]:
    """The first candidate window no earlier run has used (every denominator 0); a window
    given by the user is used anyway, and what is already in it (the baseline) is added to
    the expectation."""
    today = datetime.now(SHANGHAI).date()
    candidates = window_candidates(run_id, config, today)
    first: dict[str, Any] | None = None
    for window in candidates:
        rates = await read_rates(clients, window.query())
        if all(not rate.get("denominator") for rate in rates.values()):
            return window, None
        first = rates if first is None else first
    return candidates[0], reported_as_expected(first or {})


async def launch_at_rate(
    player: Player,
    jobs: AsyncIterator[tuple[Story, datetime | None]],
    *,
    rate: float,
    concurrency: int,
    tolerated: tuple[type[SimulatorError], ...],
    on_failure: Callable[[Story, SimulatorError], None],
    stop: asyncio.Event | None = None,
    tick: Callable[[], None] | None = None,
) -> None:
    """Start one story every 1/rate seconds, at most `concurrency` in flight, and wait for
    them. A `tolerated` error ends its story only (`on_failure` hears of it); any other
    ends the run and is raised. When `stop` is set, no story starts and those in flight
    are abandoned."""
    slots = asyncio.Semaphore(concurrency)
    loop = asyncio.get_running_loop()
    started = loop.time()
    in_flight: set[asyncio.Task[None]] = set()

    async def play(story: Story, submitted_at: datetime | None) -> None:
        try:
            if submitted_at is None:
                await player.play_live(story)
            else:
                await player.play_backdated(story, submitted_at)
        except tolerated as exc:
            on_failure(story, exc)
        finally:
            slots.release()

    async def next_slot(count: int) -> bool:
        """Wait for story `count`'s turn and a free slot; False if stopped meanwhile."""
        delay = started + count / rate - loop.time()
        if stop is None:
            if delay > 0:
                await asyncio.sleep(delay)
            await slots.acquire()
            return True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=max(0.0, delay))
        if stop.is_set():
            return False
        acquire = asyncio.ensure_future(slots.acquire())
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait({acquire, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if not acquire.done():
            acquire.cancel()
            return False
        if stop.is_set():
            slots.release()
            return False
        return True

    async with asyncio.TaskGroup() as group:
        count = 0
        async for story, submitted_at in jobs:
            if not await next_slot(count):
                break
            task = group.create_task(play(story, submitted_at))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
            count += 1
            if tick is not None:
                tick()
        if stop is not None and stop.is_set():
            for task in in_flight:
                task.cancel()


async def simulate(config: RunConfig, clients: ServiceClients, *, say: Say = print) -> RunResult:
    """The comparison run: play `config.tickets` back-dated stories, then poll `/rates`
    for their window until it equals the expectation or the settle timeout passes."""
    run_id = config.run_id or new_run_id()
    await check_reachable(clients, SERVICES)
    window, baseline = await choose_window(clients, config, run_id)
    say(
        f"run {run_id}: {config.tickets} tickets (seed {config.seed}) at {config.rate:g}/s, "
        f"submitted {window.since:%Y-%m-%d} .. {window.until - timedelta(days=1):%Y-%m-%d} "
        "(Asia/Shanghai)"
        + (
            " — the window already holds tickets; they are added to the expectation"
            if baseline
            else ""
        )
    )
    player = Player(clients, config, run_id)
    length = (window.until - window.since).total_seconds()

    async def jobs() -> AsyncIterator[tuple[Story, datetime | None]]:
        for index in range(config.tickets):
            when = rng_for(config.seed, index, "when").uniform(1.0, length - 1.0)
            yield (
                generate_story(config.params, config.seed, index),
                whole_seconds(window.since + timedelta(seconds=when)),
            )

    def failed(story: Story, exc: SimulatorError) -> None:
        player.failures.append(f"ticket {story.index}: {exc}")

    last_said = [time.monotonic()]

    def progress() -> None:
        if time.monotonic() - last_said[0] >= 5:
            last_said[0] = time.monotonic()
            say(f"  sent {player.counts['tickets']}/{config.tickets} tickets")

    try:
        await launch_at_rate(
            player,
            jobs(),
            rate=config.rate,
            concurrency=config.concurrency,
            tolerated=(RequestRefused,),
            on_failure=failed,
            tick=progress,
        )
    except* ServiceUnreachable as group:
        raise group.exceptions[0] from None
    counts = player.counts
    say(
        f"sent {counts['tickets']} tickets, {counts['transfers']} transfers, "
        f"{counts['work_orders']} work orders, {counts['replies']} replies, "
        f"{counts['callbacks']} callbacks; waiting for /rates (up to {config.settle_timeout:g} s)"
    )
    selection = Selection(since=window.since, until=window.until)
    began = last_said[0] = time.monotonic()
    while True:
        expected = expected_rates(player.sent, now=datetime.now(UTC), selection=selection)
        if baseline is not None:
            expected = combined(expected, baseline)
        comparison = compare(expected, await read_rates(clients, window.query()))
        waited = time.monotonic() - began
        if comparison.match or waited >= config.settle_timeout:
            break
        if time.monotonic() - last_said[0] >= 5:
            last_said[0] = time.monotonic()
            say(f"  /rates after {waited:.0f} s: {settle_progress(comparison)}")
        await asyncio.sleep(config.poll_interval)
    return RunResult(
        run_id=run_id,
        seed=config.seed,
        window=window,
        sent=player.sent,
        baseline=baseline,
        comparison=comparison,
        failures=player.failures,
        settle_seconds=waited,
    )


def settle_progress(comparison: Comparison) -> str:
    """How far `/rates` has caught up: rates matching, and answered tickets counted."""
    matching = len(comparison.rows) - len(comparison.mismatched)
    line = f"{matching} of {len(comparison.rows)} rates match"
    for row in comparison.rows:
        if row.name == "first_contact_resolution_rate" and row.reported is not None:
            line += (
                f", {row.reported.denominator} of {row.expected.denominator} answered tickets in"
            )
    return line


async def wait_until_ready(clients: ServiceClients, say: Say, stop: asyncio.Event) -> bool:
    """Poll every service's /readyz until all answer 200 (the stack may still be starting);
    False if stopped first."""
    waiting: set[Service] = set()
    for service in SERVICES:
        client = clients.of(service)
        while not stop.is_set():
            with contextlib.suppress(httpx.TransportError):
                if (await client.get("/readyz")).is_success:
                    break
            if service not in waiting:
                waiting.add(service)
                say(f"live: waiting for {service} at {client.base_url} ...")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1.0)
    return not stop.is_set()


async def simulate_live(
    config: RunConfig, clients: ServiceClients, *, say: Say = print, stop: asyncio.Event
) -> Player:
    """Tickets submitted now at `config.rate` a second until `stop` is set; a summary line
    every `config.summary_every` seconds. Stories in flight when stopped are abandoned."""
    run_id = config.run_id or new_run_id()
    player = Player(clients, config, run_id)
    if not await wait_until_ready(clients, say, stop):
        return player
    began = datetime.now(UTC)
    say(f"live: run {run_id}, {config.rate:g} tickets/s; stop with Ctrl-C")

    def failed(story: Story, exc: SimulatorError) -> None:
        player.failures.append(f"ticket {story.index}: {exc}")
        say(f"live: ticket {story.index}: {exc}")

    async def jobs() -> AsyncIterator[tuple[Story, datetime | None]]:
        for story in iter_stories(config.params, config.seed):
            yield story, None

    async def summaries() -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=config.summary_every)
            say(await live_summary(player, clients, began))

    reporter = asyncio.create_task(summaries())
    try:
        await launch_at_rate(
            player,
            jobs(),
            rate=config.rate,
            concurrency=config.concurrency,
            tolerated=(SimulatorError,),
            on_failure=failed,
            stop=stop,
        )
    finally:
        stop.set()
        await reporter
    return player


async def live_summary(player: Player, clients: ServiceClients, since: datetime) -> str:
    """One line: what was sent so far, and a few of `/rates` for tickets since `since`."""
    c = player.counts
    line = (
        f"live: {c['tickets']} tickets, {c['transfers']} transfers, {c['work_orders']} work "
        f"orders, {c['replies']} replies, {c['callbacks']} callbacks"
    )
    if player.failures:
        line += f", {len(player.failures)} failed"
    try:
        rates = await read_rates(clients, {"since": since.isoformat()})
    except SimulatorError as exc:
        return f"{line} | /rates unavailable ({exc})"
    shown = []
    for name, label in LIVE_RATES:
        value = rates.get(name, {}).get("value")
        if value is not None:
            shown.append(
                f"{label} {value:.1%}" if name != "avg_wait_seconds" else f"{label} {value:.1f}s"
            )
    return f"{line} | /rates since {since.astimezone(SHANGHAI):%H:%M} UTC+8: " + (
        ", ".join(shown) or "nothing yet"
    )


LIVE_RATES: Final = (
    ("connection_rate", "connected"),
    ("avg_wait_seconds", "wait"),
    ("first_contact_resolution_rate", "first-contact"),
    ("unanswered_rate", "unanswered"),
    ("definite_reply_rate", "definite"),
    ("satisfaction_rate", "satisfied"),
)


async def run(
    config: RunConfig,
    *,
    endpoints: Endpoints | None = None,
    clients: ServiceClients | None = None,
    live: bool = False,
    json_output: bool = False,
    console: Console | None = None,
    request_timeout: float = 10.0,
) -> int:
    """`hotline simulate`: a comparison run (exit 0 all match, 1 a rate differs, 2 the run
    failed) or, with `live`, a live run until SIGINT/SIGTERM (exit 0). Clients are opened
    on `endpoints` unless given."""
    out = console or Console()
    if console is None and not out.is_terminal:
        out.width = max(out.width, 120)  # a log file or a pipe: keep the table's rows whole
    notes = Console(stderr=True) if json_output else out

    def say(line: str) -> None:
        notes.print(line, markup=False, highlight=False, soft_wrap=True)

    try:
        async with contextlib.AsyncExitStack() as stack:
            if clients is None:
                if endpoints is None:
                    raise SimulatorError("give the services' endpoints or clients")
                clients = await stack.enter_async_context(open_clients(endpoints, request_timeout))
            if live:
                await run_live(config, clients, say)
                return 0
            result = await simulate(config, clients, say=say)
    except SimulatorError as exc:
        Console(stderr=True).print(f"[red]error:[/red] {exc}", highlight=False)
        return 2
    if json_output:
        out.print_json(data=as_json(result))
    else:
        render_table(result, out)
    return result.exit_code


async def run_live(config: RunConfig, clients: ServiceClients, say: Say) -> None:
    """The live run, stopped cleanly by SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    handled = (signal.SIGINT, signal.SIGTERM)
    for signum in handled:
        loop.add_signal_handler(signum, stop.set)
    try:
        player = await simulate_live(config, clients, say=say, stop=stop)
    finally:
        for signum in handled:
            loop.remove_signal_handler(signum)
    say(f"live: stopped after {player.counts['tickets']} tickets")
