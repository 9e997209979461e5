"""The past window a comparison run fills: a few days, 60 to 400 days ago, chosen from the
run id, ending long enough ago that every deadline in it has passed, and used by no other
run (or, when the user names it, with what it already holds added to the expectation)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from datetime import time as clock_time
from typing import Any, Final

from hotline.simulator.client import ServiceClients, SimulatorError, read_rates
from hotline.simulator.comparison import reported_as_expected
from hotline.simulator.config import RunConfig
from hotline.simulator.params import SimulatorParams
from hotline.simulator.truth import Expected
from shared.clock import utc_now
from shared.workdays import SHANGHAI, local_day

EARLIEST_WINDOW_DAYS_AGO: Final = 60
LATEST_WINDOW_DAYS_AGO: Final = 400
HOLIDAY_SLACK_DAYS: Final = 12
"""Calendar days a deadline may stretch beyond its working days (the October holidays)."""
WINDOW_PROBES: Final = 50


@dataclass(frozen=True)
class Window:
    """The span of `submitted_at` a comparison run fills: since inclusive, until exclusive."""

    since: datetime
    until: datetime

    def query(self) -> dict[str, str]:
        """`since` and `until` as `/rates` query parameters."""
        return {"since": self.since.isoformat(), "until": self.until.isoformat()}


def story_span(params: SimulatorParams) -> timedelta:
    """An upper bound on how long after its submission a story's last event comes."""
    t = params.timing
    deadline = timedelta(days=params.due_working_days * 7 / 5 + HOLIDAY_SLACK_DAYS)
    return (
        timedelta(seconds=600 + t.transfer_after_answer_seconds[1])
        + timedelta(minutes=t.work_order_after_submission_minutes[1])
        + deadline
        + timedelta(days=t.late_reply_days[1])
        + timedelta(hours=t.callback_after_hours[1] + t.callback_retry_after_hours[1])
    )


def window_candidates(run_id: str, config: RunConfig, today: date) -> list[Window]:
    """Windows to try, the run id's own first; each ends long enough ago for every story
    that starts in it to be over (so every deadline in it has passed)."""
    span_days = story_span(config.params).days + 1
    if config.window_start is not None:
        starts = [config.window_start]
        newest = today - timedelta(days=config.days + span_days)
        if config.window_start > newest:
            raise SimulatorError(
                f"--window-start {config.window_start} is too recent: a {config.days}-day "
                f"window must start by {newest} for its stories to be over by today"
            )
    else:
        earliest = max(EARLIEST_WINDOW_DAYS_AGO, config.days + span_days)
        choices = max(1, LATEST_WINDOW_DAYS_AGO - earliest)
        offset = int(hashlib.sha256(run_id.encode()).hexdigest()[:8], 16)
        starts = [
            today - timedelta(days=earliest + (offset + probe * (config.days + 1)) % choices)
            for probe in range(WINDOW_PROBES)
        ]
    return [
        Window(
            since=datetime.combine(start, clock_time(0), tzinfo=SHANGHAI),
            until=datetime.combine(start + timedelta(days=config.days), clock_time(0), SHANGHAI),
        )
        for start in starts
    ]


async def choose_window(
    clients: ServiceClients, config: RunConfig, run_id: str
) -> tuple[Window, dict[str, Expected] | None]:
    """The first candidate window no earlier run has used (every denominator 0); a window
    given by the user is used anyway, and what is already in it (the baseline) is added to
    the expectation."""
    today = local_day(utc_now())
    candidates = window_candidates(run_id, config, today)
    first: dict[str, Any] | None = None
    for window in candidates:
        rates = await read_rates(clients, window.query())
        if all(not rate.get("denominator") for rate in rates.values()):
            return window, None
        first = rates if first is None else first
    return candidates[0], reported_as_expected(first or {})
