"""Days, weeks (from Monday) and months in Asia/Shanghai, and which cells and raw facts make
up each period group of a window."""

import random
from datetime import UTC, date, datetime, timedelta

import pytest

from services.metrics.periods import (
    MAX_PERIOD_GROUPS,
    PERIODS,
    TooManyPeriods,
    group_window,
    next_period_start,
    period_of,
    period_start,
    plan_periods,
    split_by_day,
)
from services.metrics.windows import PeriodRange, TimeRange, WindowPlan, midnight, plan_window
from shared.workdays import local_day
from tests.unit.test_rate_cells import random_windows


def at(text):
    return datetime.fromisoformat(text)


def test_a_ticket_late_on_31_march_utc_is_1_april_in_shanghai():
    moment = datetime(2026, 3, 31, 17, 0, tzinfo=UTC)  # 01:00 on 1 April in Shanghai
    assert period_of("day", moment) == date(2026, 4, 1)
    assert period_of("week", moment) == date(2026, 3, 30)  # a Monday
    assert period_of("month", moment) == date(2026, 4, 1)
    before = datetime(2026, 3, 31, 15, 59, 59, tzinfo=UTC)  # 23:59:59 on 31 March there
    assert period_of("day", before) == date(2026, 3, 31)
    assert period_of("month", before) == date(2026, 3, 1)


@pytest.mark.parametrize(
    ("day", "monday"),
    [
        (date(2026, 3, 2), date(2026, 3, 2)),  # a Monday is its own week's start
        (date(2026, 3, 8), date(2026, 3, 2)),  # Sunday ends the week
        (date(2026, 3, 9), date(2026, 3, 9)),
        (date(2026, 1, 1), date(2025, 12, 29)),  # a week across the new year
        (date(2028, 3, 1), date(2028, 2, 28)),  # across a leap day
    ],
)
def test_a_week_starts_on_monday(day, monday):
    assert period_start("week", day) == monday
    assert next_period_start("week", monday) == monday + timedelta(days=7)


@pytest.mark.parametrize(
    ("start", "following"),
    [
        (date(2026, 1, 1), date(2026, 2, 1)),
        (date(2026, 2, 1), date(2026, 3, 1)),
        (date(2028, 2, 1), date(2028, 3, 1)),
        (date(2026, 12, 1), date(2027, 1, 1)),
        (date(2099, 12, 1), date(2100, 1, 1)),
    ],
)
def test_months_follow_each_other_across_short_months_and_years(start, following):
    assert period_start("month", start + timedelta(days=27)) == start
    assert next_period_start("month", start) == following


def test_a_day_is_its_own_period():
    assert period_start("day", date(2026, 2, 28)) == date(2026, 2, 28)
    assert next_period_start("day", date(2026, 2, 28)) == date(2026, 3, 1)


def test_a_group_window_is_the_period_cut_by_since_and_until():
    since, until = at("2026-03-04T10:30:00+08:00"), at("2026-03-20T06:00:00+08:00")
    assert group_window("week", date(2026, 3, 2), since, until) == (
        since,
        midnight(date(2026, 3, 9)),
    )
    assert group_window("week", date(2026, 3, 16), since, until) == (
        midnight(date(2026, 3, 16)),
        until,
    )
    assert group_window("month", date(2026, 3, 1), None, None) == (
        midnight(date(2026, 3, 1)),
        midnight(date(2026, 4, 1)),
    )


def test_without_a_window_every_day_cell_or_every_month_cell():
    assert plan_periods("day", None, None) == WindowPlan(cells=(PeriodRange("day"),))
    assert plan_periods("week", None, None) == WindowPlan(cells=(PeriodRange("day"),))
    assert plan_periods("month", None, None) == WindowPlan(cells=(PeriodRange("month"),))


def test_months_use_the_plan_of_rates_and_days_and_weeks_day_cells_only():
    since, until = at("2026-02-27T12:00:00+08:00"), at("2026-04-02T06:00:00+08:00")
    assert plan_periods("month", since, until) == plan_window(since, until)
    plan = plan_periods("week", since, until)
    assert {piece.grain for piece in plan.cells} == {"day"}
    assert plan.raw == plan_window(since, until).raw


def test_a_raw_range_across_midnight_is_cut_into_its_two_days():
    start, end = at("2026-03-31T22:00:00+08:00"), at("2026-04-01T03:00:00+08:00")
    assert split_by_day((TimeRange(start, end),)) == [
        (date(2026, 3, 31), TimeRange(start, midnight(date(2026, 4, 1)))),
        (date(2026, 4, 1), TimeRange(midnight(date(2026, 4, 1)), end)),
    ]
    with pytest.raises(ValueError, match="unbounded"):
        split_by_day((TimeRange(start, None),))


def _groups_counting(plan, period, moment):
    """The period groups that count a ticket submitted at `moment`, one per plan piece that
    holds it: a cell's period (its day or month) or a raw piece's day, folded into its
    period as the view folds it."""
    day = local_day(moment)
    groups = []
    for piece in plan.cells:
        cell_period = day.replace(day=1) if piece.grain == "month" else day
        if (piece.start is None or piece.start <= cell_period) and (
            piece.end is None or cell_period < piece.end
        ):
            groups.append(period_start(period, cell_period))
    for piece_day, piece in split_by_day(plan.raw):
        if piece.start <= moment < piece.end:
            groups.append(period_start(period, piece_day))
    return groups


@pytest.mark.parametrize("period", PERIODS)
def test_every_moment_in_a_window_counts_once_in_its_own_period_and_none_outside(period):
    rng = random.Random(20260302)
    base = midnight(date(2025, 11, 1))
    for since, until in random_windows(rng, base):
        if since is not None and until is not None and since >= until:
            continue
        plan = plan_periods(period, since, until)
        for _ in range(40):
            moment = base + timedelta(seconds=rng.randrange(-30 * 86400, 240 * 86400))
            inside = (since is None or since <= moment) and (until is None or moment < until)
            expected = [period_of(period, moment)] if inside else []
            assert _groups_counting(plan, period, moment) == expected, (since, until, moment)
            if inside:
                begin, end = group_window(period, expected[0], since, until)
                assert begin <= moment < end


def test_too_many_periods_says_how_many_and_what_to_do():
    error = TooManyPeriods("day", MAX_PERIOD_GROUPS + 1)
    assert str(error).startswith("1001 days have tickets in this window, more than the 1000")
    assert "later since" in str(error)
