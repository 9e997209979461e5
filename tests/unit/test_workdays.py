"""Work-order deadlines in China's working days, worked out by hand in each case's comment.

`due_at` is 24:00 Asia/Shanghai of the N-th working day after the creation day, written
below as 00:00 of the next calendar day. Days are Shanghai days.
"""

from datetime import UTC, datetime, timedelta

import pytest

from shared.workdays import (
    SHANGHAI,
    HolidayFileError,
    WorkCalendar,
    due_at,
    load_holiday_file,
    working_days_between,
)

LIBRARY = WorkCalendar()


def cst(text):
    """A wall-clock time in Asia/Shanghai."""
    return datetime.fromisoformat(text).replace(tzinfo=SHANGHAI)


@pytest.mark.parametrize(
    ("created", "days", "due"),
    [
        # National Day 2025: Oct 1-8 off; Sun Sep 28 and Sat Oct 11 are make-up working days.
        # Fri Sep 26 -> Sat 27 off, Sun 28 (1), Mon 29 (2), Tue 30 (3), Oct 1-8 off,
        # Thu Oct 9 (4), Fri Oct 10 (5): due at the end of Oct 10.
        ("2025-09-26 10:00", 5, "2025-10-11 00:00"),
        # Thu Oct 9 -> Fri 10 (1), Sat 11 make-up (2), Sun 12 off, Mon 13 (3), Tue 14 (4),
        # Wed 15 (5).
        ("2025-10-09 10:00", 5, "2025-10-16 00:00"),
        # Created on a holiday, Fri Oct 3: Oct 4-8 off, Thu Oct 9 is the 1st working day.
        ("2025-10-03 10:00", 1, "2025-10-10 00:00"),
        # ... and the 5th: Thu 9 (1), Fri 10 (2), Sat 11 make-up (3), Mon 13 (4), Tue 14 (5).
        ("2025-10-03 10:00", 5, "2025-10-15 00:00"),
        # Spring Festival 2026: Feb 15-23 off; Sat Feb 14 and Sat Feb 28 are make-up days.
        # Thu Feb 12 -> Fri 13 (1), Sat 14 make-up (2), Feb 15-23 off, Tue 24 (3),
        # Wed 25 (4), Thu 26 (5).
        ("2026-02-12 10:00", 5, "2026-02-27 00:00"),
        # N = 10: ... Fri 27 (6), Sat 28 make-up (7), Sun Mar 1 off, Mon 2 (8), Tue 3 (9),
        # Wed 4 (10).
        ("2026-02-12 10:00", 10, "2026-03-05 00:00"),
        # An ordinary weekend: Fri Mar 6 2026 -> Sat, Sun off, Mon 9 (1) ... Fri 13 (5).
        ("2026-03-06 17:30", 5, "2026-03-14 00:00"),
        # N = 1 over the same weekend: Mon Mar 9.
        ("2026-03-06 17:30", 1, "2026-03-10 00:00"),
        # The creation day never counts, even a working day created at one minute past midnight:
        # Mon Mar 9 00:01 -> Tue 10 (1).
        ("2026-03-09 00:01", 1, "2026-03-11 00:00"),
    ],
)
def test_deadlines_count_statutory_holidays_and_make_up_working_days(created, days, due):
    deadline = due_at(cst(created), days, LIBRARY)
    assert deadline.due_at == cst(due)
    assert deadline.source == "chinesecalendar"
    assert deadline.due_at.utcoffset() == timedelta(hours=8)


def test_the_day_boundary_is_midnight_in_shanghai_not_on_the_server():
    # 17:00 UTC on Thu Mar 5 is already 01:00 on Fri Mar 6 in Shanghai: counted as Friday,
    # so N = 1 is Mon Mar 9, not Fri Mar 6.
    created = datetime(2026, 3, 5, 17, 0, tzinfo=UTC)
    assert due_at(created, 1, LIBRARY).due_at == cst("2026-03-10 00:00")


def test_a_year_no_source_covers_is_counted_on_weekends_only_and_says_so():
    # Mon Dec 28 2026: Tue 29 (1), Wed 30 (2), Thu 31 (3) from the library; 2027 is
    # unknown, so Fri Jan 1 counts as a working day (4); Sat, Sun off; Mon Jan 4 (5).
    deadline = due_at(cst("2026-12-28 10:00"), 5, LIBRARY)
    assert deadline.due_at == cst("2027-01-05 00:00")
    assert deadline.source == "weekends_only"


def test_a_holiday_file_for_the_next_year_is_used_and_the_weakest_source_reported(tmp_path):
    # Test data, not an official schedule: Jan 1 2027 off, Sun Feb 7 2027 a make-up day.
    path = tmp_path / "holidays.toml"
    path.write_text(
        '[2027]\nholidays = ["2027-01-01"]  # days off\nworkdays = ["2027-02-07"]\n',
        encoding="utf-8",
    )
    calendar = WorkCalendar.load(path)
    # Mon Dec 28 2026: Tue 29 (1), Wed 30 (2), Thu 31 (3); Fri Jan 1 off by the file;
    # Mon Jan 4 (4), Tue Jan 5 (5). Days from the library and the file: the library is weaker.
    across = due_at(cst("2026-12-28 10:00"), 5, calendar)
    assert across.due_at == cst("2027-01-06 00:00")
    assert across.source == "chinesecalendar"
    # Fri Feb 5 2027: Sat 6 off, Sun 7 make-up by the file (1). Only the file counted.
    inside = due_at(cst("2027-02-05 10:00"), 1, calendar)
    assert inside.due_at == cst("2027-02-08 00:00")
    assert inside.source == "holiday_file"
    # Without the file, Sun Feb 7 is a day off: Mon Feb 8 (1).
    assert due_at(cst("2027-02-05 10:00"), 1, LIBRARY).due_at == cst("2027-02-09 00:00")


def test_the_holiday_file_takes_precedence_over_the_library_for_the_years_it_lists(tmp_path):
    path = tmp_path / "holidays.toml"
    path.write_text('[2026]\nholidays = ["2026-03-09"]\n', encoding="utf-8")
    calendar = WorkCalendar.load(path)
    # Fri Mar 6 2026: Mon Mar 9 off by the file, Tue Mar 10 (1).
    deadline = due_at(cst("2026-03-06 10:00"), 1, calendar)
    assert deadline.due_at == cst("2026-03-11 00:00")
    assert deadline.source == "holiday_file"
    # A listed year is wholly the file's: the library's Spring Festival is not counted, so
    # Mon Feb 16 2026 is a working day.
    assert calendar.is_working_day(cst("2026-02-16 12:00").date())


def test_a_missing_holiday_file_is_no_file(tmp_path):
    assert load_holiday_file(tmp_path / "absent.toml") == {}
    assert WorkCalendar.load(tmp_path / "absent.toml").file_years == ()


@pytest.mark.parametrize(
    ("content", "named"),
    [
        ("[2027\nholidays = []\n", "line 1"),
        ('[2027]\nholidays = ["2027-02-30"]\n', "[2027].holidays[0] = '2027-02-30' (line 2)"),
        ('[2027]\nholidays = ["2027-01-01", "2028-01-01"]\n', "not in 2027"),
        ('[2027]\nworkdays = ["2027-01-04"]\n', "Saturday or Sunday"),
        ('[2027]\nholidays = "2027-01-01"\n', "[2027].holidays (line 2)"),
        ('[2027]\ndays_off = ["2027-01-01"]\n', "[2027].days_off"),
        ('[next]\nholidays = ["2027-01-01"]\n', "[next] (line 1)"),
        ('[2027]\nholidays = ["2027-02-07"]\nworkdays = ["2027-02-07"]\n', "both"),
    ],
)
def test_a_malformed_holiday_file_is_an_error_naming_the_file_and_the_entry(
    tmp_path, content, named
):
    path = tmp_path / "holidays.toml"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(HolidayFileError) as caught:
        WorkCalendar.load(path)
    assert str(path) in str(caught.value)
    assert named in str(caught.value)


def test_a_naive_creation_time_or_no_working_days_is_refused():
    with pytest.raises(ValueError, match="timezone"):
        due_at(datetime(2026, 3, 6, 10, 0), 5, LIBRARY)
    with pytest.raises(ValueError, match="at least 1"):
        due_at(cst("2026-03-06 10:00"), 0, LIBRARY)


@pytest.mark.parametrize(
    ("start", "end", "elapsed"),
    [
        # Fri Mar 6 2026 10:00 -> Mon Mar 9 23:59: Monday has not ended yet.
        ("2026-03-06 10:00", "2026-03-09 23:59", 0),
        # ... -> Tue Mar 10 00:00: Monday has ended (its 24:00).
        ("2026-03-06 10:00", "2026-03-10 00:00", 1),
        # The start day never counts, however early it began.
        ("2026-03-09 00:00", "2026-03-10 00:00", 0),
        # An end before the start.
        ("2026-03-10 10:00", "2026-03-06 10:00", 0),
        # Tue Sep 30 2025 -> Fri Oct 10 12:00: Oct 1-8 off, Thu Oct 9 (1); Oct 10 not over.
        ("2025-09-30 10:00", "2025-10-10 12:00", 1),
        # Fri Sep 26 2025 -> Mon Oct 13 09:00: Sun 28, Mon 29, Tue 30, Thu 9, Fri 10,
        # Sat 11 (make-up): 6.
        ("2025-09-26 10:00", "2025-10-13 09:00", 6),
    ],
)
def test_working_days_between_counts_working_days_wholly_elapsed(start, end, elapsed):
    assert working_days_between(cst(start), cst(end), LIBRARY) == elapsed


@pytest.mark.parametrize("created", ["2025-09-26 10:00", "2026-02-12 23:59", "2026-12-28 08:00"])
@pytest.mark.parametrize("days", [1, 5, 10])
def test_working_days_between_is_the_inverse_of_due_at(created, days):
    deadline = due_at(cst(created), days, LIBRARY).due_at
    assert working_days_between(cst(created), deadline, LIBRARY) == days
    assert working_days_between(cst(created), deadline - timedelta(microseconds=1), LIBRARY) == (
        days - 1
    )
