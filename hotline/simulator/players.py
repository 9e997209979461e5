"""The people a story needs (evaluator, operator, department, callback staff), played over
HTTP, and what each public API is sent.

Every POST carries an Idempotency-Key, fresh for each step of each story and the same on
every retry of it (`<run's key prefix>-<story index>[-<step>]`): a request whose answer was
lost (a read timeout, a connection dropped by a service killed mid-request) is sent again
and answered as the first was, so a retry never makes a second ticket, transfer, work
order, reply or callback, and the run knows what each service recorded. A connection
refused (a service restarting) is retried with a back-off for about 25 s before the
service counts as down. Dispatch and followup answer 409 `not_yet_known` (with
Retry-After) for a ticket whose event has not reached them yet, and 503 while their
database is away: both are retried after Retry-After.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from datetime import datetime, timedelta
from typing import Any, Final, TypeVar

import httpx

from hotline.simulator.client import (
    CONNECT_ATTEMPTS,
    RequestRefused,
    ServiceClients,
    ServiceUnreachable,
    SimulatorError,
    connect_backoff,
    retry_delay,
    unreachable,
)
from hotline.simulator.config import RunConfig
from hotline.simulator.model import (
    CallbackPlan,
    ReplyPlan,
    Story,
    TransferPlan,
    WorkOrderPlan,
    rng_for,
)
from hotline.simulator.truth import (
    SentCallback,
    SentReply,
    SentTicket,
    SentTransfer,
    SentWorkOrder,
)
from shared.clock import utc_now
from shared.names import Role, ServiceName

Recorded = TypeVar("Recorded")


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

    def tally(self) -> str:
        """What the services have acknowledged so far, for progress lines."""
        c = self.counts
        return (
            f"{c['tickets']} tickets, {c['transfers']} transfers, {c['work_orders']} work "
            f"orders, {c['replies']} replies, {c['callbacks']} callbacks"
        )

    def fail(self, story: Story, exc: SimulatorError) -> str:
        """Record that `story` ended early because of `exc`; the line recorded."""
        line = f"ticket {story.index}: {exc}"
        self.failures.append(line)
        return line

    # --- HTTP -----------------------------------------------------------------------------

    async def post(
        self,
        service: ServiceName,
        path: str,
        body: dict[str, Any],
        *,
        role: Role,
        department: str | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """POST as `role` and return the 2xx JSON answer, retrying what is safe to retry."""
        client = self.clients.of(service)
        headers = self.clients.auth(role, department)
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        deadline = time.monotonic() + self.config.not_known_timeout
        failed_connects = 0
        while True:
            try:
                response = await client.post(path, json=body, headers=headers)
            except httpx.TransportError as exc:
                never_sent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
                if not never_sent and idempotency_key is None:
                    raise ServiceUnreachable(
                        f"{service}: POST {path} may or may not have been recorded "
                        f"({type(exc).__name__}: {exc}); not retried, it has no idempotency key"
                    ) from exc
                # Never sent, or sent with its key: a retry cannot duplicate anything.
                failed_connects += 1
                if failed_connects >= CONNECT_ATTEMPTS:
                    raise unreachable(service, client, exc) from exc
                await asyncio.sleep(connect_backoff(failed_connects))
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

    def step_key(self, story: Story, step: str | None = None) -> str:
        """The Idempotency-Key of one step of `story` (its submission without `step`): new
        for each run, the same on each retry of the step."""
        key = f"{self.key_prefix}-{story.index}"
        return f"{key}-{step}" if step else key

    def recorded(self, kind: str, into: list[Recorded], item: Recorded) -> Recorded:
        """`item` kept in `into` and counted as one more `kind` a service acknowledged."""
        into.append(item)
        self.counts[kind] += 1
        return item

    # --- A back-dated story ----------------------------------------------------------------

    async def play_backdated(self, story: Story, submitted_at: datetime) -> None:
        """Play `story` with every event dated: submission at `submitted_at`, the rest after
        in the story's order (a reply relative to the `due_at` dispatch answers)."""
        sent = await self.submit(story, submitted_at)
        call_end = submitted_at + timedelta(seconds=story.call.wait_seconds or 0.0)
        for n, plan in enumerate(story.transfers):
            transfer = await self.transfer(
                sent, story, n, plan, whole_seconds(submitted_at + plan.after)
            )
            call_end = max(call_end, transfer.at)
        eligible_at = submitted_at if story.call.resolved_at_first_contact else None
        order = story.work_order
        if order is not None:
            work_order = await self.create_work_order(
                sent, story, order, whole_seconds(call_end + order.after)
            )
            if order.reply is not None:
                at = reply_time(order.reply, work_order.created_at, work_order.due_at)
                reply = await self.reply(work_order, story, order.reply, at)
                eligible_at = eligible_at or reply.at
        if eligible_at is None:
            return
        moment = eligible_at
        for n, callback in enumerate(story.callbacks):
            moment = whole_seconds(moment + callback.after)
            await self.call_back(sent, story, n, callback, moment)

    async def play_live(self, story: Story) -> None:
        """Play `story` now, its steps a few real seconds apart. A reply drawn late cannot
        be sent after a deadline days ahead, so it is left out: the work order stays
        unanswered (and turns overdue if nobody replies by its deadline)."""
        pause = rng_for(self.config.seed, story.index, "live")
        low, high = self.config.params.timing.live_step_seconds

        async def step() -> None:
            await asyncio.sleep(pause.uniform(low, high))

        sent = await self.submit(story, None)
        for n, plan in enumerate(story.transfers):
            await step()
            await self.transfer(sent, story, n, plan, None)
        eligible = story.call.resolved_at_first_contact
        order = story.work_order
        if order is not None:
            await step()
            work_order = await self.create_work_order(sent, story, order, None)
            if order.reply is not None and order.reply.timeliness == "on_time":
                await step()
                await self.reply(work_order, story, order.reply, None)
                eligible = True
        if not eligible:
            return
        for n, callback in enumerate(story.callbacks):
            await step()
            await self.call_back(sent, story, n, callback, None)

    # --- One request each; `None` for a time means now ------------------------------------

    async def submit(self, story: Story, submitted_at: datetime | None) -> SentTicket:
        """POST the ticket and record it."""
        answer = await self.post(
            "intake",
            "/tickets",
            ticket_body(story, evaluator=f"simulator {self.run_id}", submitted_at=submitted_at),
            role="evaluator",
            idempotency_key=self.step_key(story),
        )
        sent = SentTicket(
            ticket_id=answer["ticket_id"],
            city=story.city,
            channel=story.channel,
            scenario=story.scenario,
            submitted_at=submitted_at or utc_now(),
            answered=story.call.answered,
            wait_seconds=story.call.wait_seconds,
            resolved_at_first_contact=story.call.resolved_at_first_contact,
        )
        return self.recorded("tickets", self.sent, sent)

    async def transfer(
        self, sent: SentTicket, story: Story, n: int, plan: TransferPlan, at: datetime | None
    ) -> SentTransfer:
        """POST the story's `n`-th transfer or three-way call and record it."""
        answer = await self.post(
            "dispatch",
            f"/tickets/{sent.ticket_id}/transfers",
            transfer_body(story, plan, at),
            role="operator",
            idempotency_key=self.step_key(story, f"transfer-{n}"),
        )
        transfer = SentTransfer(story.department, plan.mode, plan.connected, answered_at(answer))
        return self.recorded("transfers", sent.transfers, transfer)

    async def create_work_order(
        self, sent: SentTicket, story: Story, plan: WorkOrderPlan, created: datetime | None
    ) -> SentWorkOrder:
        """POST the story's work order and record it with the `due_at` dispatch gave it."""
        answer = await self.post(
            "dispatch",
            f"/tickets/{sent.ticket_id}/work-orders",
            work_order_body(plan, created),
            role="operator",
            idempotency_key=self.step_key(story, "work-order"),
        )
        work_order = SentWorkOrder(
            work_order_id=answer["work_order_id"],
            department=plan.department,
            created_at=datetime.fromisoformat(answer["created_at"]),
            due_at=datetime.fromisoformat(answer["due_at"]),
        )
        return self.recorded("work_orders", sent.work_orders, work_order)

    async def reply(
        self, work_order: SentWorkOrder, story: Story, plan: ReplyPlan, at: datetime | None
    ) -> SentReply:
        """POST the department's reply to the story's work order and record it."""
        answer = await self.post(
            "dispatch",
            f"/work-orders/{work_order.work_order_id}/replies",
            reply_body(plan, at),
            role="department",
            department=work_order.department,
            idempotency_key=self.step_key(story, "reply"),
        )
        reply = SentReply(plan.quality, answered_at(answer))
        return self.recorded("replies", work_order.replies, reply)

    async def call_back(
        self, sent: SentTicket, story: Story, n: int, plan: CallbackPlan, at: datetime | None
    ) -> SentCallback:
        """POST the story's `n`-th callback and record it."""
        answer = await self.post(
            "followup",
            f"/tickets/{sent.ticket_id}/callbacks",
            callback_body(plan, at),
            role="callback",
            idempotency_key=self.step_key(story, f"callback-{n}"),
        )
        callback = SentCallback(plan.reached, plan.satisfaction, answered_at(answer))
        return self.recorded("callbacks", sent.callbacks, callback)


def answered_at(answer: dict[str, Any]) -> datetime:
    """The `at` a service gave the step it recorded (its own clock when none was sent)."""
    return datetime.fromisoformat(answer["at"])


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
