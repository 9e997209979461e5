"""Which cells a fact goes to, and which cells and raw facts answer a time window."""

import random
from datetime import UTC, date, datetime, timedelta

import pytest

from services.metrics.cube import CellDeltas, Dims, cell_keys
from services.metrics.models import ALL
from services.metrics.rates import Counts
from services.metrics.windows import (
    ALL_TIME,
    PeriodRange,
    TimeRange,
    WindowPlan,
    midnight,
    plan_window,
)
from shared.workdays import SHANGHAI, local_day

SHENYANG = Dims("沈阳", "phone", "社保查询", datetime(2026, 3, 31, 17, 0, tzinfo=UTC))


def at(text):
    return datetime.fromisoformat(text)


def test_a_ticket_counts_in_every_grouping_set_of_its_dimensions_for_three_periods():
    keys = cell_keys(SHENYANG, None)
    assert len(keys) == len(set(keys)) == 8 * 3
    assert {key.department for key in keys} == {ALL}
    # 17:00 UTC on 31 March is 1 April in Shanghai.
    assert {(key.grain, key.period) for key in keys} == {
        ("all", ALL_TIME),
        ("month", date(2026, 4, 1)),
        ("day", date(2026, 4, 1)),
    }
    assert {(key.city, key.channel, key.scenario) for key in keys} >= {
        ("沈阳", "phone", "社保查询"),
        (ALL, ALL, ALL),
        ("沈阳", ALL, ALL),
    }


def test_a_department_fact_also_counts_under_its_department():
    keys = cell_keys(SHENYANG, "住建局")
    assert len(keys) == len(set(keys)) == 16 * 3
    assert {key.department for key in keys} == {"住建局", ALL}


def test_deltas_merge_per_cell_and_skip_what_nets_to_zero():
    deltas = CellDeltas()
    deltas.add(SHENYANG, None, Counts(tickets=1))
    deltas.add(SHENYANG, None, Counts(tickets=1, answered_tickets=1))
    deltas.add(SHENYANG, "住建局", Counts(work_orders=1))
    deltas.add(SHENYANG, "住建局", Counts(work_orders=-1))
    rows = deltas.rows()
    assert len(rows) == 24
    assert all(row["tickets"] == 2 and row["answered_tickets"] == 1 for row in rows)
    assert all(row["work_orders"] == 0 for row in rows)
    order = ("city", "channel", "scenario", "department", "grain", "period")
    keys = [tuple(row[name] for name in order) for row in rows]
    assert keys == sorted(keys)  # one lock order for every writer


@pytest.mark.parametrize(
    ("since", "until", "plan"),
    [
        (None, None, WindowPlan(cells=(PeriodRange("all"),))),
        (
            "2026-03-01T00:00:00+08:00",
            "2026-05-01T00:00:00+08:00",
            WindowPlan(cells=(PeriodRange("month", date(2026, 3, 1), date(2026, 5, 1)),)),
        ),
        (
            "2026-03-15T00:00:00+08:00",
            "2026-05-10T00:00:00+08:00",
            WindowPlan(
                cells=(
                    PeriodRange("month", date(2026, 4, 1), date(2026, 5, 1)),
                    PeriodRange("day", date(2026, 3, 15), date(2026, 4, 1)),
                    PeriodRange("day", date(2026, 5, 1), date(2026, 5, 10)),
                )
            ),
        ),
        (
            "2026-03-14T16:00:00+00:00",  # midnight in Shanghai
            "2026-03-20T00:00:00+08:00",
            WindowPlan(cells=(PeriodRange("day", date(2026, 3, 15), date(2026, 3, 20)),)),
        ),
        (
            "2026-03-15T10:00:00+08:00",
            "2026-03-15T15:00:00+08:00",
            WindowPlan(
                cells=(),
                raw=(TimeRange(at("2026-03-15T10:00:00+08:00"), at("2026-03-15T15:00:00+08:00")),),
            ),
        ),
        (
            None,
            "2026-05-10T12:00:00+08:00",
            WindowPlan(
                cells=(
                    PeriodRange("month", None, date(2026, 5, 1)),
                    PeriodRange("day", date(2026, 5, 1), date(2026, 5, 10)),
                ),
                raw=(TimeRange(at("2026-05-10T00:00:00+08:00"), at("2026-05-10T12:00:00+08:00")),),
            ),
        ),
        (
            "2026-03-15T10:00:00+08:00",
            None,
            WindowPlan(
                cells=(
                    PeriodRange("month", date(2026, 4, 1), None),
                    PeriodRange("day", date(2026, 3, 16), date(2026, 4, 1)),
                ),
                raw=(TimeRange(at("2026-03-15T10:00:00+08:00"), at("2026-03-16T00:00:00+08:00")),),
            ),
        ),
        ("2026-03-15T10:00:00+08:00", "2026-03-15T10:00:00+08:00", WindowPlan(cells=())),
    ],
)
def test_a_window_is_whole_months_then_whole_days_then_raw_partial_days(since, until, plan):
    assert plan_window(at(since) if since else None, at(until) if until else None) == plan


def _covers(plan, moment):
    """How many pieces of the plan count a ticket submitted at `moment`."""
    day = local_day(moment)
    count = 0
    for piece in plan.cells:
        period = {"all": ALL_TIME, "month": day.replace(day=1), "day": day}[piece.grain]
        if (piece.start is None or piece.start <= period) and (
            piece.end is None or period < piece.end
        ):
            count += 1
    for piece in plan.raw:
        if (piece.start is None or piece.start <= moment) and (
            piece.end is None or moment < piece.end
        ):
            count += 1
    return count


def random_windows(rng, base, count=300):
    """`count` windows (since, until) within 200 days from `base`: some open at one end or
    both, some starting on a Shanghai midnight."""
    for _ in range(count):
        bounds = sorted(base + timedelta(minutes=rng.randrange(0, 200 * 24 * 60)) for _ in "ab")
        since = None if rng.random() < 0.15 else bounds[0]
        until = None if rng.random() < 0.15 else bounds[1]
        if rng.random() < 0.3 and since is not None:
            since = midnight(local_day(since))
        yield since, until


def test_every_moment_in_a_window_is_counted_exactly_once_and_none_outside():
    rng = random.Random(12345)
    base = midnight(date(2025, 12, 1))
    for since, until in random_windows(rng, base):
        plan = plan_window(since, until)
        for _ in range(40):
            moment = base + timedelta(seconds=rng.randrange(-30 * 86400, 240 * 86400))
            inside = (since is None or since <= moment) and (until is None or moment < until)
            assert _covers(plan, moment) == int(inside), (since, until, moment, plan)
        for edge in (since, until):
            if edge is not None:
                assert _covers(plan, edge) == int(until is None or edge < until)


def test_midnight_is_shanghai_midnight():
    assert midnight(date(2026, 1, 1)) == datetime(2025, 12, 31, 16, 0, tzinfo=UTC)
    assert midnight(date(2026, 1, 1)).tzinfo == SHANGHAI
