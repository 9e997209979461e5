"""Dispatch's rules without servers: reopening (重办), statuses, and a holiday file that
stops startup."""

from datetime import UTC, datetime, timedelta

import pytest

from services.dispatch.app import create_app
from services.dispatch.domain import CallbackFact, calendar_note, is_overdue, reopen_state
from shared.settings import Settings
from shared.workdays import HolidayFileError

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
