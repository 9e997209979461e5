"""The simulator's story model: seeded, calibrated, and always valid for the public APIs."""

import math
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from hotline.simulator.model import ReplyPlan, generate_stories, generate_story
from hotline.simulator.params import SimulatorParams, with_overrides
from hotline.simulator.players import (
    callback_body,
    reply_body,
    reply_time,
    ticket_body,
    transfer_body,
    work_order_body,
)
from services.dispatch.models import ReplyCreate, TransferCreate, WorkOrderCreate
from services.followup.models import CallbackCreate
from services.intake.models import TicketCreate

PARAMS = SimulatorParams()
SAMPLE = 30_000


@pytest.fixture(scope="module")
def stories():
    return generate_stories(PARAMS, seed=2025, count=SAMPLE)


def assert_near(hits, trials, probability, *, sigmas=4.5):
    """`hits` out of `trials` is within `sigmas` binomial standard deviations of p."""
    assert trials > 100, f"too few trials ({trials}) to judge a frequency"
    spread = sigmas * math.sqrt(probability * (1 - probability) / trials)
    observed = hits / trials
    assert abs(observed - probability) <= spread, (
        f"{hits}/{trials} = {observed:.4f}, expected {probability} ± {spread:.4f}"
    )


def test_the_same_seed_gives_the_same_stories_and_another_seed_other_ones():
    first = generate_stories(PARAMS, seed=7, count=200)
    assert first == generate_stories(PARAMS, seed=7, count=200)
    assert first != generate_stories(PARAMS, seed=8, count=200)


def test_a_story_depends_on_its_seed_and_index_only_not_on_how_many_are_drawn():
    assert generate_stories(PARAMS, seed=3, count=50) == generate_stories(PARAMS, 3, 120)[:50]
    assert generate_story(PARAMS, 3, 49) == generate_stories(PARAMS, 3, 50)[49]


def test_phone_calls_connect_and_wait_as_calibrated(stories):
    phone = [s for s in stories if s.channel == "phone"]
    assert_near(len(phone), SAMPLE, PARAMS.phone_share)
    answered = [s for s in phone if s.call.answered]
    assert_near(len(answered), len(phone), PARAMS.connection_rate)
    waits = [s.call.wait_seconds for s in answered]
    mean = sum(waits) / len(waits)
    # Gamma(k, mean/k): standard deviation mean/sqrt(k); of the sample mean, / sqrt(n).
    spread = 4.5 * PARAMS.mean_wait_seconds / math.sqrt(PARAMS.wait_shape * len(waits))
    assert abs(mean - PARAMS.mean_wait_seconds) <= spread, f"mean wait {mean:.3f}"


def test_first_contact_resolution_follows_each_scenario(stories):
    for scenario in PARAMS.scenarios:
        answered_phone = [
            s
            for s in stories
            if s.scenario == scenario.name and s.channel == "phone" and s.call.answered
        ]
        resolved = sum(s.call.resolved_at_first_contact for s in answered_phone)
        assert_near(resolved, len(answered_phone), scenario.first_contact_resolution_rate)


def test_online_submissions_go_through_and_are_solved_at_once_as_calibrated(stories):
    online = [s for s in stories if s.channel == "online"]
    through = [s for s in online if s.call.answered]
    assert_near(len(through), len(online), PARAMS.online_submission_success_rate)
    resolved = sum(s.call.resolved_at_first_contact for s in through)
    assert_near(resolved, len(through), PARAMS.online_first_contact_resolution_rate)


def test_transfers_and_three_way_calls_fail_as_calibrated(stories):
    attempts = [t for s in stories for t in s.transfers]
    transfers = [t for t in attempts if t.mode == "transfer"]
    three_way = [t for t in attempts if t.mode == "three_way"]
    assert_near(sum(not t.connected for t in transfers), len(transfers), 0.2216)
    assert_near(sum(not t.connected for t in three_way), len(three_way), 0.0476)


def test_work_orders_are_answered_on_time_late_or_never_as_calibrated(stories):
    phone_orders = [s.work_order for s in stories if s.work_order and s.channel == "phone"]
    never = sum(w.reply is None for w in phone_orders)
    assert_near(never, len(phone_orders), PARAMS.phone_work_order_unanswered_rate)
    phone_replies = [w.reply for w in phone_orders if w.reply]
    on_time = sum(r.timeliness == "on_time" for r in phone_replies)
    assert_near(on_time, len(phone_replies), PARAMS.phone_reply_on_time_rate)

    online_orders = [s.work_order for s in stories if s.work_order and s.channel == "online"]
    in_time = sum(bool(w.reply and w.reply.timeliness == "on_time") for w in online_orders)
    assert_near(in_time, len(online_orders), PARAMS.online_reply_within_deadline_rate)

    replies = [s.work_order.reply for s in stories if s.work_order and s.work_order.reply]
    definite = sum(r.quality == "definite" for r in replies)
    assert_near(definite, len(replies), PARAMS.definite_reply_rate)


def test_callbacks_and_satisfaction_follow_their_parameters(stories):
    eligible = [s for s in stories if s.callback_eligible]
    called = [s for s in eligible if s.callbacks]
    assert_near(len(called), len(eligible), PARAMS.callback_rate)
    first_attempts = [s.callbacks[0] for s in called]
    assert_near(sum(c.reached for c in first_attempts), len(first_attempts), 0.8)
    answers = Counter(
        c.satisfaction for s in called for c in s.callbacks if c.satisfaction is not None
    )
    total = sum(answers.values())
    weights = (PARAMS.satisfied_weight, PARAMS.basically_satisfied_weight)
    weight_sum = sum(weights) + PARAMS.unsatisfied_weight
    assert_near(answers["satisfied"], total, PARAMS.satisfied_weight / weight_sum)
    assert_near(answers["unsatisfied"], total, PARAMS.unsatisfied_weight / weight_sum)


def test_every_story_is_consistent(stories):
    for s in stories:
        call = s.call
        if call.resolved_at_first_contact:
            assert call.answered, s
        if s.channel == "online" or not call.answered:
            assert call.wait_seconds is None, s
        else:
            assert call.wait_seconds is not None, s
            assert call.wait_seconds >= 0, s
        if s.transfers:
            assert s.channel == "phone", s
            assert call.answered, s
            assert not call.resolved_at_first_contact, s
        if s.work_order is not None:
            assert call.answered, s
            assert not call.resolved_at_first_contact, s
            assert not any(t.connected for t in s.transfers), s
        if s.callbacks:
            assert s.callback_eligible, s
        for c in s.callbacks:
            if not c.reached:
                assert c.satisfaction is None, s
        if len(s.callbacks) > 1:
            assert not s.callbacks[0].reached, s


def test_cities_can_be_overridden_and_only_those_are_used():
    params = with_overrides(PARAMS, cities=["沈阳", "青岛"])
    assert {s.city for s in generate_stories(params, 1, 300)} == {"沈阳", "青岛"}


def test_every_request_a_story_makes_is_valid_for_the_services_own_schemas(stories):
    submitted = datetime(2025, 12, 1, 9, tzinfo=UTC)
    due = submitted + timedelta(days=7)
    for s in stories[:3000]:
        TicketCreate.model_validate(ticket_body(s, evaluator="simulator t", submitted_at=submitted))
        for plan in s.transfers:
            TransferCreate.model_validate(transfer_body(s, plan, submitted + plan.after))
        if s.work_order is not None:
            created = submitted + s.work_order.after
            WorkOrderCreate.model_validate(work_order_body(s.work_order, created))
            if s.work_order.reply is not None:
                at = reply_time(s.work_order.reply, created, due)
                ReplyCreate.model_validate(reply_body(s.work_order.reply, at))
        for callback in s.callbacks:
            CallbackCreate.model_validate(callback_body(callback, due))


def test_an_on_time_reply_comes_by_the_deadline_and_a_late_one_after_it():
    created = datetime(2025, 12, 1, 9, 30, 7, tzinfo=UTC)
    due = datetime(2025, 12, 8, 16, tzinfo=UTC)
    for fraction in (0.0, 0.02, 0.5, 0.999999, 1.0):
        at = reply_time(ReplyPlan("on_time", "definite", fraction=fraction), created, due)
        assert created <= at <= due
    late = reply_time(ReplyPlan("late", "none", delay=timedelta(0)), created, due)
    assert late > due
