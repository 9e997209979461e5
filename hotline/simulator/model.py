"""One ticket's whole story, drawn from a seed: pure, no I/O, no clock.

A story says what happens and how long after what: the contact (channel, city, scenario,
category, the call's outcome), the operator's transfers and three-way calls, the work
order, the department's reply (on time, late or never, and how good), and the callbacks
with their answers. Times are offsets: a reply is placed relative to the work order's
`due_at`, which only dispatch knows, so the driver turns offsets into instants as it plays.

Story `i` of seed `s` depends on (s, i) only, so a run of 100 tickets starts with the same
60 stories as a run of 60.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal, TypeVar

from hotline.simulator.params import Range, ScenarioParams, SimulatorParams
from shared.events import Category, Channel, ReplyQuality, Satisfaction, TransferMode

T = TypeVar("T")

Timeliness = Literal["on_time", "late"]


@dataclass(frozen=True)
class Call:
    """The contact's outcome as intake records it. For `online`, `answered` means the
    submission went through."""

    answered: bool
    wait_seconds: float | None
    resolved_at_first_contact: bool


@dataclass(frozen=True)
class TransferPlan:
    """A transfer (转接) or three-way call (第三方通话), tried `after` the submission."""

    mode: TransferMode
    connected: bool
    after: timedelta


@dataclass(frozen=True)
class ReplyPlan:
    """The department's first reply: `on_time` comes `fraction` of the way from the work
    order's creation to its `due_at`; `late` comes `delay` after `due_at`."""

    timeliness: Timeliness
    quality: ReplyQuality
    fraction: float = 0.0
    delay: timedelta = timedelta(0)


@dataclass(frozen=True)
class WorkOrderPlan:
    """A work order (工单) filed `after` the submission, and its reply (None: never)."""

    department: str
    after: timedelta
    due_working_days: int
    reply: ReplyPlan | None


@dataclass(frozen=True)
class CallbackPlan:
    """A callback (回访) `after` the previous moment: the resolution or reply for the first
    attempt, the previous attempt for a retry."""

    after: timedelta
    reached: bool
    satisfaction: Satisfaction | None


@dataclass(frozen=True)
class Story:
    """Everything that happens to one ticket."""

    index: int
    city: str
    channel: Channel
    scenario: str
    department: str
    category: Category
    content: str
    call: Call
    transfers: tuple[TransferPlan, ...]
    work_order: WorkOrderPlan | None
    callbacks: tuple[CallbackPlan, ...]

    @property
    def callback_eligible(self) -> bool:
        """Solved at first contact, or a work order that gets a reply."""
        replied = self.work_order is not None and self.work_order.reply is not None
        return self.call.resolved_at_first_contact or replied


def rng_for(seed: int, index: int, stream: str = "story") -> random.Random:
    """The random source of `stream` of story `index` of `seed`. String seeds hash the same
    in every process, so a seed always gives the same run."""
    # Simulation draws, not secrets: a seeded, reproducible generator is the point.
    return random.Random(f"hotline-simulator:{stream}:{seed}:{index}")  # noqa: S311


def generate_story(params: SimulatorParams, seed: int, index: int) -> Story:
    """Story `index` of `seed`: the same arguments always give the same story."""
    return _StoryMaker(params, rng_for(seed, index)).story(index)


def generate_stories(params: SimulatorParams, seed: int, count: int) -> list[Story]:
    """Stories 0 .. count-1 of `seed`."""
    return [generate_story(params, seed, index) for index in range(count)]


def iter_stories(params: SimulatorParams, seed: int, start: int = 0) -> Iterator[Story]:
    """Stories `start`, `start`+1, ... without end (the live mode)."""
    index = start
    while True:
        yield generate_story(params, seed, index)
        index += 1


class _StoryMaker:
    """Draws one story; every draw goes through `self.rng`, in a fixed order."""

    def __init__(self, params: SimulatorParams, rng: random.Random) -> None:
        self.p = params
        self.rng = rng

    def chance(self, probability: float) -> bool:
        return self.rng.random() < probability

    def pick(self, weights: Mapping[T, float]) -> T:
        choices = [k for k, w in weights.items() if w > 0]
        return self.rng.choices(choices, weights=[weights[k] for k in choices])[0]

    def uniform(self, bounds: Range) -> float:
        return self.rng.uniform(*bounds)

    def story(self, index: int) -> Story:
        p = self.p
        city = self.rng.choice(p.cities)
        scenario = self.scenario(p.scenarios)
        category = self.pick(p.category_weights)
        channel: Channel = "phone" if self.chance(p.phone_share) else "online"
        call = self.phone_call(scenario) if channel == "phone" else self.online(scenario)
        transfers: list[TransferPlan] = []
        needs_work_order = False
        if call.answered and not call.resolved_at_first_contact:
            if channel == "phone":
                transfers, needs_work_order = self.operator_routing(call)
            else:
                needs_work_order = self.chance(p.online_work_order_rate)
        work_order = self.work_order(scenario.department, channel) if needs_work_order else None
        replied = work_order is not None and work_order.reply is not None
        eligible = call.resolved_at_first_contact or replied
        return Story(
            index=index,
            city=city,
            channel=channel,
            scenario=scenario.name,
            department=scenario.department,
            category=category,
            content=scenario.content,
            call=call,
            transfers=tuple(transfers),
            work_order=work_order,
            callbacks=self.callbacks() if eligible else (),
        )

    def scenario(self, scenarios: Sequence[ScenarioParams]) -> ScenarioParams:
        return self.rng.choices(list(scenarios), weights=[s.weight for s in scenarios])[0]

    def phone_call(self, scenario: ScenarioParams) -> Call:
        if not self.chance(self.p.connection_rate):
            return Call(answered=False, wait_seconds=None, resolved_at_first_contact=False)
        shape = self.p.wait_shape
        wait = self.rng.gammavariate(shape, self.p.mean_wait_seconds / shape)
        # Hundredths of a second: what a stopwatch shows, and exact in the sums.
        return Call(
            answered=True,
            wait_seconds=round(wait, 2),
            resolved_at_first_contact=self.chance(scenario.first_contact_resolution_rate),
        )

    def online(self, scenario: ScenarioParams) -> Call:
        if not self.chance(self.p.online_submission_success_rate):
            return Call(answered=False, wait_seconds=None, resolved_at_first_contact=False)
        resolved = self.chance(self.p.online_first_contact_resolution_rate)
        return Call(answered=True, wait_seconds=None, resolved_at_first_contact=resolved)

    def operator_routing(self, call: Call) -> tuple[list[TransferPlan], bool]:
        """Transfer, three-way call or work order; a connection that fails ends in a work
        order (as often as `work_order_after_failed_connection_rate` says)."""
        p = self.p
        draw = self.rng.random()
        if draw >= p.transfer_share + p.three_way_share:
            return [], True
        mode: TransferMode = "transfer" if draw < p.transfer_share else "three_way"
        failure = p.transfer_failure_rate if mode == "transfer" else p.three_way_failure_rate
        connected = not self.chance(failure)
        answered_after = timedelta(seconds=call.wait_seconds or 0.0)
        tried = answered_after + timedelta(
            seconds=self.uniform(p.timing.transfer_after_answer_seconds)
        )
        plan = TransferPlan(mode=mode, connected=connected, after=tried)
        if connected:
            return [plan], False
        return [plan], self.chance(p.work_order_after_failed_connection_rate)

    def work_order(self, department: str, channel: Channel) -> WorkOrderPlan:
        p = self.p
        after = timedelta(minutes=self.uniform(p.timing.work_order_after_submission_minutes))
        return WorkOrderPlan(
            department=department,
            after=after,
            due_working_days=p.due_working_days,
            reply=self.reply(channel),
        )

    def reply(self, channel: Channel) -> ReplyPlan | None:
        p = self.p
        timeliness: Timeliness
        if channel == "phone":
            if self.chance(p.phone_work_order_unanswered_rate):
                return None
            timeliness = "on_time" if self.chance(p.phone_reply_on_time_rate) else "late"
        elif self.chance(p.online_reply_within_deadline_rate):
            timeliness = "on_time"
        elif self.chance(p.online_late_share_of_missed):
            timeliness = "late"
        else:
            return None
        quality: ReplyQuality = "definite"
        if not self.chance(p.definite_reply_rate):
            quality = "partial" if self.chance(p.partial_share_of_indefinite) else "none"
        if timeliness == "on_time":
            fraction = self.uniform(p.timing.on_time_reply_fraction)
            return ReplyPlan(timeliness=timeliness, quality=quality, fraction=fraction)
        delay = timedelta(days=self.uniform(p.timing.late_reply_days))
        return ReplyPlan(timeliness=timeliness, quality=quality, delay=delay)

    def callbacks(self) -> tuple[CallbackPlan, ...]:
        p = self.p
        if not self.chance(p.callback_rate):
            return ()
        first = self.callback(timedelta(hours=self.uniform(p.timing.callback_after_hours)))
        if first.reached or not self.chance(p.callback_retry_rate):
            return (first,)
        retry_after = timedelta(hours=self.uniform(p.timing.callback_retry_after_hours))
        return (first, self.callback(retry_after))

    def callback(self, after: timedelta) -> CallbackPlan:
        p = self.p
        if not self.chance(p.callback_reached_rate):
            return CallbackPlan(after=after, reached=False, satisfaction=None)
        if self.chance(p.satisfaction_declined_rate):
            return CallbackPlan(after=after, reached=True, satisfaction=None)
        answers: dict[Satisfaction, float] = {
            "satisfied": p.satisfied_weight,
            "basically_satisfied": p.basically_satisfied_weight,
            "unsatisfied": p.unsatisfied_weight,
        }
        answer: Satisfaction = self.pick(answers)
        return CallbackPlan(after=after, reached=True, satisfaction=answer)
