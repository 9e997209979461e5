"""The working-day table metrics writes for SQL, and the age arithmetic the view does with it."""

from datetime import date, datetime, time, timedelta

from services.metrics.calendar_days import FIRST_DAY, calendar_days, last_day
from shared.workdays import SHANGHAI, WorkCalendar, working_days_between

LIBRARY = WorkCalendar()


def test_each_day_counts_the_working_days_before_it():
    # National Day 2025: Sun Sep 28 is a make-up working day, Oct 1-8 are off.
    days = calendar_days(LIBRARY, date(2025, 9, 26), date(2025, 10, 10))
    table = {d.day: (d.is_working_day, d.working_days_before) for d in days}
    assert table[date(2025, 9, 26)] == (True, 0)
    assert table[date(2025, 9, 27)] == (False, 1)
    assert table[date(2025, 9, 28)] == (True, 1)
    assert table[date(2025, 9, 30)] == (True, 3)
    assert table[date(2025, 10, 1)] == (False, 4)
    assert table[date(2025, 10, 9)] == (True, 4)
    assert table[date(2025, 10, 10)] == (True, 5)
    assert [d.day for d in days] == [date(2025, 9, 26) + timedelta(n) for n in range(15)]


def test_the_table_reaches_the_end_of_next_year():
    assert last_day(date(2026, 11, 26)) == date(2027, 12, 31)
    assert last_day(date(2026, 1, 1)) == date(2027, 12, 31)


def view_age(before: dict[date, int], created: datetime, now: datetime) -> int:
    """What the view computes: working days before today minus before the day after the
    creation day, never below 0."""
    created_day = created.astimezone(SHANGHAI).date()
    today = now.astimezone(SHANGHAI).date()
    return max(0, before[today] - before[created_day + timedelta(days=1)])


def test_the_views_subtraction_is_working_days_between_for_every_pair_of_days():
    first, last = date(2025, 9, 1), date(2026, 3, 31)
    before = {d.day: d.working_days_before for d in calendar_days(LIBRARY, first, last)}
    days = [first + timedelta(n) for n in range((last - first).days)]
    for created_day in days[::3]:
        for now_day in days[::2]:
            for created_clock, now_clock in ((time(0), time(23, 59)), (time(23, 59), time(0))):
                created = datetime.combine(created_day, created_clock, SHANGHAI)
                now = datetime.combine(now_day, now_clock, SHANGHAI)
                assert view_age(before, created, now) == working_days_between(
                    created, now, LIBRARY
                ), (created, now)


def test_the_table_starts_where_the_library_does():
    assert date(2004, 1, 1) == FIRST_DAY
    assert LIBRARY.source_of(FIRST_DAY.year) == "chinesecalendar"
