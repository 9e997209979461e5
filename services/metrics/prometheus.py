"""Prometheus series of the outcomes and the rates, for Grafana.

- Counters `hotline_*_total` of outcomes, labelled by city and channel (and the outcome:
  answered, mode/connected, on_time/quality, reached/satisfaction), never by an id or free
  text. They are read from the all-time cells of the (city, channel) grouping set, so they
  are exact, never count a retried batch twice, survive restarts, and every replica shows
  the same totals: aggregate across instances with `max`, not `sum`.
- Gauges `hotline_rate_ratio{rate, city}` and `hotline_avg_wait_seconds{city}` over the last
  `rates_window_days` days of tickets. A rate whose denominator is 0 has no sample.
- Gauges `hotline_overdue_work_orders{department, city}` and
  `hotline_overdue_working_days_max{department, city}`: work orders past due with no reply
  now (督办), of any age, and the latest of them in working days (city "" while the
  ticket's own event has not arrived).

Both are recomputed every `rates_refresh_seconds` by background work; a scrape only reads
the last snapshot.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from services.metrics.rates import Counts, Rate, rates_of
from services.metrics.views import (
    OverdueGroup,
    RateFilter,
    outcomes_by_city_and_channel,
    overdue_by,
    read_totals,
)
from shared.background import Periodic
from shared.clock import utc_now
from shared.db import ReadTransaction
from shared.runtime import WorkContext

log = logging.getLogger(__name__)

QUALITIES = ("definite", "partial", "none")


@dataclass(frozen=True)
class Snapshot:
    """What the last refresh read."""

    outcomes: dict[tuple[str, str], Counts] = field(default_factory=dict)
    city_rates: dict[str, dict[str, Rate]] = field(default_factory=dict)
    overdue: list[OverdueGroup] = field(default_factory=list)
    """Per (department, city)."""
    window_days: int = 30
    refreshed_at: float = 0.0


class HotlineSeries(Collector):
    """Serves the last snapshot to every scrape."""

    def __init__(self) -> None:
        self.snapshot: Snapshot | None = None

    def collect(self) -> Iterator[Metric]:
        """The series of the last snapshot; none before the first refresh."""
        snapshot = self.snapshot
        if snapshot is None:
            return
        yield from outcome_counters(snapshot.outcomes)
        yield from rate_gauges(snapshot)
        yield from overdue_gauges(snapshot.overdue)


def outcome_counters(outcomes: dict[tuple[str, str], Counts]) -> Iterator[Metric]:
    """The outcome counters, one sample per city, channel and outcome."""
    tickets = CounterMetricFamily(
        "hotline_tickets",
        "Tickets recorded, by whether the call was answered (online: went through).",
        labels=["city", "channel", "answered"],
    )
    transfers = CounterMetricFamily(
        "hotline_transfers",
        "Transfers (mode=transfer) and three-way calls (mode=three_way), by connected.",
        labels=["city", "channel", "mode", "connected"],
    )
    work_orders = CounterMetricFamily(
        "hotline_work_orders_created",
        "Work orders dispatched to a department.",
        labels=["city", "channel"],
    )
    replies = CounterMetricFamily(
        "hotline_first_replies",
        "First replies to work orders, by on time (at or before due_at) and quality.",
        labels=["city", "channel", "on_time", "quality"],
    )
    callbacks = CounterMetricFamily(
        "hotline_callbacks",
        "Callbacks logged, by reached and the satisfaction given (none: no answer).",
        labels=["city", "channel", "reached", "satisfaction"],
    )
    for (city, channel), c in sorted(outcomes.items()):
        tickets.add_metric([city, channel, "true"], c.answered_tickets)
        tickets.add_metric([city, channel, "false"], c.tickets - c.answered_tickets)
        transfers.add_metric([city, channel, "transfer", "true"], c.transfers - c.transfers_failed)
        transfers.add_metric([city, channel, "transfer", "false"], c.transfers_failed)
        transfers.add_metric([city, channel, "three_way", "true"], c.three_way - c.three_way_failed)
        transfers.add_metric([city, channel, "three_way", "false"], c.three_way_failed)
        work_orders.add_metric([city, channel], c.work_orders)
        for quality in QUALITIES:
            replied = c[f"replied_{quality}"]
            on_time = c[f"replied_on_time_{quality}"]
            replies.add_metric([city, channel, "true", quality], on_time)
            replies.add_metric([city, channel, "false", quality], replied - on_time)
        answered = {
            "satisfied": c.callbacks_satisfied,
            "basically_satisfied": c.callbacks_basically_satisfied,
            "unsatisfied": c.callbacks_unsatisfied,
        }
        for satisfaction, number in answered.items():
            callbacks.add_metric([city, channel, "true", satisfaction], number)
        callbacks.add_metric(
            [city, channel, "true", "none"], c.callbacks_reached - sum(answered.values())
        )
        callbacks.add_metric([city, channel, "false", "none"], c.callbacks - c.callbacks_reached)
    yield from (tickets, transfers, work_orders, replies, callbacks)


def rate_gauges(snapshot: Snapshot) -> Iterator[Metric]:
    """Each rate per city over the rolling window."""
    ratios = GaugeMetricFamily(
        "hotline_rate_ratio",
        f"Evaluation rates per city over the last {snapshot.window_days} days of tickets.",
        labels=["rate", "city"],
    )
    waits = GaugeMetricFamily(
        "hotline_avg_wait_seconds",
        f"Mean time to answer a phone call per city, last {snapshot.window_days} days.",
        labels=["city"],
    )
    for city, rates in sorted(snapshot.city_rates.items()):
        for name, rate in rates.items():
            if rate.value is None:
                continue
            if name == "avg_wait_seconds":
                waits.add_metric([city], rate.value)
            else:
                ratios.add_metric([name, city], rate.value)
    window = GaugeMetricFamily(
        "hotline_rates_window_seconds",
        "The rolling window of the rate gauges.",
        value=snapshot.window_days * 86_400,
    )
    refreshed = GaugeMetricFamily(
        "hotline_rates_refreshed_timestamp_seconds",
        "When the rate series were last recomputed (Unix time).",
        value=snapshot.refreshed_at,
    )
    yield from (ratios, waits, window, refreshed)


def overdue_gauges(groups: list[OverdueGroup]) -> Iterator[Metric]:
    """Overdue work orders per department and city, and how late the latest is."""
    labels = ["department", "city"]
    count = GaugeMetricFamily(
        "hotline_overdue_work_orders",
        "Work orders past their deadline with no reply, now.",
        labels=labels,
    )
    latest = GaugeMetricFamily(
        "hotline_overdue_working_days_max",
        "Working days since the deadline of the latest overdue work order.",
        labels=labels,
    )
    for group in groups:
        department, city = group.key
        count.add_metric([department or "", city or ""], group.overdue)
        latest.add_metric([department or "", city or ""], group.working_days_late_max)
    yield from (count, latest)


SERIES = HotlineSeries()
"""One collector per process: several apps in one process (tests) share it."""
_registered = False


def install_series() -> HotlineSeries:
    """Register the collector with the default registry, once."""
    global _registered
    if not _registered:
        REGISTRY.register(SERIES)
        _registered = True
    return SERIES


async def read_snapshot(db: ReadTransaction, *, now: datetime, window_days: int) -> Snapshot:
    """Read the outcome totals and the per-city rates of the window ending now."""
    outcomes = await outcomes_by_city_and_channel(db)
    window = RateFilter(since=now - timedelta(days=window_days))
    totals = await read_totals(db, window, by="city", now=now)
    return Snapshot(
        outcomes=outcomes,
        city_rates={city: rates_of(total) for city, total in totals.items()},
        overdue=await overdue_by(db, ("department", "city"), now=now),
        window_days=window_days,
        refreshed_at=now.timestamp(),
    )


def rate_series_refresher(context: WorkContext) -> Periodic:
    """Background work: recompute the series now and every `rates_refresh_seconds`; a failed
    refresh leaves the last snapshot in place."""
    settings = context.settings

    async def refresh() -> None:
        async with context.read() as db:
            SERIES.snapshot = await read_snapshot(
                db, now=utc_now(), window_days=settings.rates_window_days
            )

    interval = settings.rates_refresh_seconds
    return Periodic("rate-series", refresh, interval=interval, max_backoff=interval)
