"""Deadlines in China's working days: statutory holidays and make-up working days (调休).

Which days are working days comes, per year, from the first source that covers the year:

1. the operator's holiday file (TOML), for the years it lists: the State Council publishes
   each year's schedule in November or December, before any library release has it;
2. the `chinesecalendar` library, which covers 2004-2026;
3. weekends only (Monday to Friday work), for a year neither covers: a deadline is then
   still computed, and its source says how much to trust it.

Days begin and end at midnight Asia/Shanghai, wherever the server runs.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Final
from zoneinfo import ZoneInfo

import chinese_calendar

from shared.events import CalendarSource

SHANGHAI: Final = ZoneInfo("Asia/Shanghai")

_WEAKNESS: Final[dict[CalendarSource, int]] = {
    "holiday_file": 0,
    "chinesecalendar": 1,
    "weekends_only": 2,
}
_YEAR_KEY = re.compile(r"^[0-9]{4}$")
_LIST_KEYS = ("holidays", "workdays")


class HolidayFileError(ValueError):
    """The operator's holiday file cannot be used; the message names the file and the entry."""


@dataclass(frozen=True)
class YearSchedule:
    """One year's official schedule: days off, and weekend days made working days."""

    holidays: frozenset[date]
    workdays: frozenset[date]


@dataclass(frozen=True)
class Deadline:
    """When a work order is due, and which calendar source counted its working days."""

    due_at: datetime
    source: CalendarSource


class WorkCalendar:
    """Tells working days from days off, by the first source that covers each year."""

    def __init__(
        self, schedules: Mapping[int, YearSchedule] | None = None, *, use_library: bool = True
    ) -> None:
        self._schedules = dict(schedules or {})
        self._use_library = use_library
        self._library_years: dict[int, bool] = {}
        self._days: dict[date, bool] = {}

    @classmethod
    def load(cls, holiday_file: Path) -> WorkCalendar:
        """The calendar with the operator's file if it exists; HolidayFileError if malformed."""
        return cls(load_holiday_file(holiday_file))

    @property
    def file_years(self) -> tuple[int, ...]:
        """The years the operator's holiday file covers."""
        return tuple(sorted(self._schedules))

    def source_of(self, year: int) -> CalendarSource:
        """Which source decides the working days of `year`."""
        if year in self._schedules:
            return "holiday_file"
        if self._use_library and self._library_covers(year):
            return "chinesecalendar"
        return "weekends_only"

    def is_working_day(self, day: date) -> bool:
        """True if `day` is a working day in mainland China."""
        known = self._days.get(day)
        if known is None:
            known = self._days[day] = self._decide(day)
        return known

    def _decide(self, day: date) -> bool:
        schedule = self._schedules.get(day.year)
        if schedule is not None:
            if day in schedule.workdays:
                return True
            return day.weekday() < 5 and day not in schedule.holidays
        if self.source_of(day.year) == "chinesecalendar":
            return bool(chinese_calendar.is_workday(day))
        return day.weekday() < 5

    def _library_covers(self, year: int) -> bool:
        covered = self._library_years.get(year)
        if covered is None:
            try:
                chinese_calendar.is_workday(date(year, 1, 1))
                covered = True
            except NotImplementedError:
                covered = False
            self._library_years[year] = covered
        return covered


def weakest(sources: set[CalendarSource]) -> CalendarSource:
    """The least trustworthy of several sources: weekends_only > chinesecalendar > holiday_file."""
    return max(sources, key=_WEAKNESS.__getitem__)


def local_day(moment: datetime) -> date:
    """The calendar day of `moment` in Asia/Shanghai; a naive `moment` is a ValueError."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("a timezone-aware datetime is required")
    return moment.astimezone(SHANGHAI).date()


def end_of_day(day: date) -> datetime:
    """24:00 Asia/Shanghai of `day`, i.e. midnight at the start of the next day."""
    return datetime.combine(day + timedelta(days=1), time(0), tzinfo=SHANGHAI)


def due_at(created: datetime, working_days: int, calendar: WorkCalendar) -> Deadline:
    """The end (24:00 Asia/Shanghai) of the `working_days`-th working day after `created`'s day.

    The creation day never counts, working day or not. The source is the weakest of the
    sources of the days counted.
    """
    if working_days < 1:
        raise ValueError("working_days must be at least 1")
    day = local_day(created)
    sources: set[CalendarSource] = set()
    counted = 0
    while counted < working_days:
        day += timedelta(days=1)
        sources.add(calendar.source_of(day.year))
        if calendar.is_working_day(day):
            counted += 1
    return Deadline(due_at=end_of_day(day), source=weakest(sources))


def working_days_between(start: datetime, end: datetime, calendar: WorkCalendar) -> int:
    """Working days wholly elapsed from `start` to `end`: those after `start`'s day whose
    24:00 (Asia/Shanghai) is at or before `end`.

    It is the inverse of `due_at`: `working_days_between(c, due_at(c, n).due_at) == n`, and one
    microsecond earlier it is n - 1. 0 when `end` is not past the end of the next working day.
    """
    first = local_day(start) + timedelta(days=1)
    # The last day that has ended by `end`: the day before the one `end` falls in.
    last = local_day(end) - timedelta(days=1)
    return sum(1 for day in _days(first, last) if calendar.is_working_day(day))


def _days(first: date, last: date) -> Iterator[date]:
    day = first
    while day <= last:
        yield day
        day += timedelta(days=1)


def load_holiday_file(path: Path) -> dict[int, YearSchedule]:
    """Read the operator's holiday file; {} if it does not exist.

    Format, one table per year: `[2027]`, `holidays = ["2027-01-01", ...]` (days off, as the
    State Council lists them) and `workdays = ["2027-02-07", ...]` (weekend days made
    working days). Raises HolidayFileError naming the file and the line or entry at fault.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise HolidayFileError(f"holiday file {path}: cannot be read: {exc}") from exc
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise HolidayFileError(f"holiday file {path}: not valid TOML: {exc}") from exc
    schedules = {}
    for key, table in document.items():
        schedule = _parse_year(path, text, key, table)  # checks that `key` is a year
        schedules[int(key)] = schedule
    return schedules


def _parse_year(path: Path, text: str, key: str, table: object) -> YearSchedule:
    def fail(entry: str, problem: str, needle: str | None = None) -> HolidayFileError:
        where = _line_of(text, needle) if needle else None
        line = f" (line {where})" if where else ""
        return HolidayFileError(f"holiday file {path}: {entry}{line}: {problem}")

    if not _YEAR_KEY.match(key) or not isinstance(table, dict):
        raise fail(f"[{key}]", "expected a table named by a year, like [2027]", key)
    year = int(key)
    unknown = sorted(set(table) - set(_LIST_KEYS))
    if unknown:
        raise fail(f"[{key}].{unknown[0]}", "unknown key; expected holidays and workdays")
    lists: dict[str, frozenset[date]] = {}
    for name in _LIST_KEYS:
        values = table.get(name, [])
        if not isinstance(values, list):
            raise fail(f"[{key}].{name}", 'expected a list of dates like ["2027-01-01"]', name)
        days = set()
        for index, value in enumerate(values):
            entry = f"[{key}].{name}[{index}] = {value!r}"
            day = _as_date(value)
            if day is None:
                raise fail(entry, "not a date in YYYY-MM-DD form", str(value))
            if day.year != year:
                raise fail(entry, f"not in {year}", str(value))
            if name == "workdays" and day.weekday() < 5:
                raise fail(entry, "a make-up working day must be a Saturday or Sunday", str(value))
            days.add(day)
        lists[name] = frozenset(days)
    both = sorted(lists["holidays"] & lists["workdays"])
    if both:
        raise fail(f"[{key}]", f"{both[0].isoformat()} is both a holiday and a workday")
    return YearSchedule(holidays=lists["holidays"], workdays=lists["workdays"])


def _as_date(value: object) -> date | None:
    if isinstance(value, datetime):
        return None
    if isinstance(value, date):  # a TOML local date, written without quotes
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value) if len(value) == 10 else None
        except ValueError:
            return None
    return None


def _line_of(text: str, needle: str) -> int | None:
    for number, line in enumerate(text.splitlines(), start=1):
        if needle in line.split("#", 1)[0]:
            return number
    return None
