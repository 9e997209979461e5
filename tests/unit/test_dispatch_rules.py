"""Dispatch's rules without servers: reopening (重办), statuses, the due-soon warning (督办),
and settings or a holiday file that stop startup."""

import os
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from services.dispatch.app import create_app
from services.dispatch.domain import (
    CallbackFact,
    calendar_note,
    due_soon_cutoff,
    is_due_soon,
    is_overdue,
    reopen_state,
)
from shared.settings import Settings
from shared.workdays import HolidayFileError, WorkCalendar, YearSchedule, due_at

T0 = datetime(2026, 4, 1, 9, 0, tzinfo=UTC)


def callback(minutes, satisfaction, reached=True):
    return CallbackFact(
        callback_id=f"c{minutes}",
        at=T0 + timedelta(minutes=minutes),
        reached=reached,
        satisfaction=satisfaction,
    )


def test_an_unsatisfied_answer_reopens_until_a_later_satisfied_one():
    unsatisfied, satisfied = callback(1, "unsatisfied"), callback(5, "basically_satisfied")
    assert reopen_state([unsatisfied]).reopened is True
    assert reopen_state([unsatisfied]).reopened_at == unsatisfied.at
    closed = reopen_state([satisfied, unsatisfied])  # arrival order does not matter
    assert (closed.reopened, closed.count, closed.reopened_at) == (False, 1, None)


def test_unreached_and_declined_callbacks_change_nothing():
    unsatisfied = callback(1, "unsatisfied")
    later = [callback(2, None, reached=False), callback(3, None)]
    state = reopen_state([unsatisfied, *later])
    assert (state.reopened, state.count) == (True, 1)
    assert reopen_state(later).reopened is False


def test_each_unsatisfied_answer_counts_and_the_current_reopen_dates_from_its_first():
    calls = [
        callback(1, "unsatisfied"),
        callback(2, "satisfied"),
        callback(3, "unsatisfied"),
        callback(4, "unsatisfied"),
    ]
    state = reopen_state(calls)
    assert (state.reopened, state.count, state.reopened_at) == (True, 3, calls[2].at)


def test_a_reply_exactly_at_the_deadline_is_on_time():
    assert is_overdue(None, T0, T0) is False
    assert is_overdue(None, T0, T0 + timedelta(microseconds=1)) is True
    assert is_overdue(T0, T0, T0 + timedelta(days=9)) is False


def test_only_a_weekends_only_deadline_carries_a_note():
    assert "weekends only" in (calendar_note("weekends_only") or "")
    assert calendar_note("chinesecalendar") is None
    assert calendar_note("holiday_file") is None


def test_a_malformed_holiday_file_stops_dispatch_at_startup_naming_the_file(tmp_path):
    holiday_file = tmp_path / "holidays.toml"
    holiday_file.write_text('[2027]\nholidays = ["2027-13-01"]\n', encoding="utf-8")
    settings = Settings(data_dir=tmp_path, holiday_file=holiday_file)
    with pytest.raises(HolidayFileError, match=r"holidays\.toml.*\[2027\]\.holidays\[0\]"):
        create_app(settings)


SHANGHAI = ZoneInfo("Asia/Shanghai")
WEEKDAYS_ONLY = WorkCalendar(use_library=False)
# Created Monday 2026-03-02, 5 working days: due at 24:00 of Monday 2026-03-09.
CREATED = datetime(2026, 3, 2, 10, 0, tzinfo=SHANGHAI)
DUE = datetime(2026, 3, 10, 0, 0, tzinfo=SHANGHAI)
INSTANT = timedelta(microseconds=1)


def shanghai(day: int, hour: int = 0) -> datetime:
    return datetime(2026, 3, day, hour, 0, tzinfo=SHANGHAI)


def test_the_example_deadline_is_monday_midnight():
    assert due_at(CREATED, 5, WEEKDAYS_ONLY).due_at == DUE


@pytest.mark.parametrize(
    ("lead", "warned_from"),
    [
        (1, shanghai(9)),  # the deadline's own working day, Monday
        (2, shanghai(6)),  # the working day before it: Friday, over the weekend
        (3, shanghai(5)),
        (5, shanghai(3)),  # the whole deadline: from the day after creation
    ],
)
def test_the_warning_starts_at_midnight_of_the_nth_working_day_before_the_deadline(
    lead, warned_from
):
    assert is_due_soon(None, DUE, warned_from, lead, WEEKDAYS_ONLY) is True
    assert is_due_soon(None, DUE, warned_from - INSTANT, lead, WEEKDAYS_ONLY) is False


def test_a_holiday_moves_the_start_of_the_warning_back():
    friday_off = WorkCalendar(
        {2026: YearSchedule(holidays=frozenset({date(2026, 3, 6)}), workdays=frozenset())}
    )
    assert is_due_soon(None, DUE, shanghai(5), 2, friday_off) is True  # Thursday
    assert is_due_soon(None, DUE, shanghai(5) - INSTANT, 2, friday_off) is False


def test_no_warning_once_replied_past_the_deadline_or_when_turned_off():
    monday_noon = shanghai(9, 12)
    assert is_due_soon(None, DUE, DUE, 1, WEEKDAYS_ONLY) is True  # not overdue yet
    assert is_due_soon(None, DUE, DUE + INSTANT, 1, WEEKDAYS_ONLY) is False  # overdue instead
    assert is_due_soon(shanghai(9, 9), DUE, monday_noon, 1, WEEKDAYS_ONLY) is False
    assert is_due_soon(None, DUE, monday_noon, 0, WEEKDAYS_ONLY) is False
    assert due_soon_cutoff(monday_noon, 0, WEEKDAYS_ONLY) is None


def test_the_due_soon_lead_defaults_to_one_working_day_and_zero_turns_it_off(monkeypatch):
    monkeypatch.delenv("HOTLINE_DUE_SOON_WORKING_DAYS", raising=False)
    assert Settings().due_soon_working_days == 1
    monkeypatch.setenv("HOTLINE_DUE_SOON_WORKING_DAYS", "0")
    assert Settings().due_soon_working_days == 0


@pytest.mark.parametrize("value", ["-1", "61"])
def test_a_due_soon_lead_out_of_range_is_refused_naming_the_variable(monkeypatch, value):
    monkeypatch.setenv("HOTLINE_DUE_SOON_WORKING_DAYS", value)
    with pytest.raises(ValidationError, match=f"HOTLINE_DUE_SOON_WORKING_DAYS={value}: use 0"):
        Settings()


def test_a_negative_due_soon_lead_stops_dispatch_at_startup(tmp_path):
    env = {**os.environ, "HOTLINE_DUE_SOON_WORKING_DAYS": "-2", "HOTLINE_DATA_DIR": str(tmp_path)}
    started = subprocess.run(
        [sys.executable, "-m", "services.dispatch", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert started.returncode != 0
    assert "HOTLINE_DUE_SOON_WORKING_DAYS=-2" in started.stderr
