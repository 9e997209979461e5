"""The "Hotline overview" dashboard: service quality per city, rates and overdue work orders
per department, outcomes in the range, and the event pipeline. One entry of `LAYOUT` a row
or panel, in the order they appear.

Queries follow what the services export (`shared/observability.py`,
`services/metrics/prometheus.py`): every metrics replica exports the same outcome totals
and rates, so those are aggregated across instances with `max`, never `sum`. What
Prometheus cannot hold (scenario, a free-text dimension) is read from the metrics
service's schema in PostgreSQL, and so are the rates per department; the overdue work
orders per department are Prometheus gauges.
"""

from __future__ import annotations

from grafana_foundation_sdk.models import dashboard as dashboard_models

from .spec import (
    FULL,
    METRICS_SCHEMA,
    PROMETHEUS,
    PROMETHEUS_ALL,
    SQL,
    THIRD,
    Dashboard,
    Panel,
    PromQL,
    Row,
    Variable,
    sql_in,
)

WINDOW_NOTE = (
    "Each point is the rate over the metrics service's rolling window of tickets "
    "(HOTLINE_RATES_WINDOW_DAYS, 30 days by default) as it stood at that time."
)

OPS_ROUTES = 'route!~"/metrics|/healthz|/readyz"'


def city_rate(rate: str) -> str:
    """A rate per city over the metrics service's rolling window; `max` over replicas."""
    return f'max by (city) (hotline_rate_ratio{{rate="{rate}", city=~"$city"}})'


def outcomes_in_range(metric: str, by: str, selector: str = "") -> str:
    """How much an outcome counter grew over the dashboard's range, by `by` (summed over
    cities and channels once the replicas' identical copies are reduced with `max`)."""
    matchers = ", ".join(part for part in (selector, 'city=~"$city"') if part)
    kept = ", ".join(label for label in ("city", "channel", by) if label)
    per_cell = f"max by ({kept}) (increase({metric}{{{matchers}}}[$__range]))"
    return f"sum by ({by}) ({per_cell})" if by else f"sum({per_cell})"


def by_service(expr: str) -> list[PromQL]:
    """One series per service, named by it."""
    return [PromQL(expr, "{{service}}")]


def rolling_rate(title: str, definition: str, rate: str) -> Panel:
    """One of the evaluation rates (DESIGN.md) per city, as it moved over time."""
    return Panel(
        "timeseries",
        title,
        f"{definition} {WINDOW_NOTE}",
        [PromQL(city_rate(rate), "{{city}}")],
        unit="percentunit",
    )


CITY = Variable(
    "city",
    "City",
    PROMETHEUS,
    "label_values(hotline_rate_ratio, city)",
    dashboard_models.VariableRefresh.ON_TIME_RANGE_CHANGED,
    PROMETHEUS_ALL,
)
"""The cities Prometheus knows rates of; "All" is a regex matching every city."""


FIRST_DAY = "($__timeFrom()::timestamptz AT TIME ZONE 'Asia/Shanghai')::date"
LAST_DAY = "($__timeTo()::timestamptz AT TIME ZONE 'Asia/Shanghai')::date"
"""The first and last days (Asia/Shanghai) the dashboard's time range touches."""
CITY_IN = sql_in("city", "city", PROMETHEUS_ALL)

# Scenario is free text, so never a Prometheus label: its first-contact resolution comes
# from the metrics service's cells in PostgreSQL.
FIRST_CONTACT_BY_SCENARIO_SQL = f"""
    -- Day cells of the (city, scenario) grouping set (grouping_set = 1 + 4; department
    -- ALL): tickets submitted on the days (Asia/Shanghai) the time range touches.
    SELECT scenario,
           SUM(answered_tickets) AS answered,
           SUM(resolved_first) AS resolved_at_first_contact,
           SUM(resolved_first)::float8 / SUM(answered_tickets) AS first_contact_resolution
    FROM {METRICS_SCHEMA}.rate_cells
    WHERE grouping_set = 5
      AND grain = 'day'
      AND period BETWEEN {FIRST_DAY}
                     AND {LAST_DAY}
      AND {CITY_IN}
    GROUP BY scenario
    HAVING SUM(answered_tickets) > 0
    ORDER BY first_contact_resolution DESC, scenario
"""

# Departments are many and not bounded in advance, so their rates are not Prometheus
# series either: they come from the cells of the (city, department) grouping set
# (grouping_set = 1 + 8), summed over the chosen cities. Each query names its ratio column
# after the rate of GET /rates/by/department it equals (tests/e2e/test_prometheus.py).


def department_cells(indent: str) -> str:
    """The WHERE conditions of the day cells of the (city, department) grouping set in the
    range, for the chosen cities; `indent` starts each line after the first."""
    return f"\n{indent}AND ".join(
        (
            "grouping_set = 9",
            "grain = 'day'",
            f"period BETWEEN {FIRST_DAY} AND {LAST_DAY}",
            CITY_IN,
        )
    )


ON_TIME = "replied_on_time_definite + replied_on_time_partial + replied_on_time_none"
REPLIED = "replied_definite + replied_partial + replied_none"

REPLY_TIMELINESS_BY_DEPARTMENT_SQL = f"""
    -- Work orders of tickets submitted on the days (Asia/Shanghai) the time range touches:
    -- first replied by due_at / replied, plus past due with no reply. The work orders not
    -- due yet and not replied (awaiting a reply, counted as of now) are neither.
    WITH cells AS (
        SELECT department,
               SUM({ON_TIME}) AS on_time,
               SUM(work_orders) AS work_orders
        FROM {METRICS_SCHEMA}.rate_cells
        WHERE {department_cells("          ")}
        GROUP BY department
    ), awaiting AS (
        SELECT department, count(*) AS awaiting
        FROM {METRICS_SCHEMA}.work_order_facts
        WHERE first_reply_at IS NULL AND created_known AND counted AND due_at >= now()
          AND (submitted_at AT TIME ZONE 'Asia/Shanghai')::date
              BETWEEN {FIRST_DAY} AND {LAST_DAY}
          AND {CITY_IN}
        GROUP BY department
    )
    SELECT department,
           on_time AS replied_on_time,
           work_orders - COALESCE(awaiting, 0) AS replied_or_past_due,
           on_time::float8 / (work_orders - COALESCE(awaiting, 0)) AS reply_timeliness_rate
    FROM cells LEFT JOIN awaiting USING (department)
    WHERE work_orders - COALESCE(awaiting, 0) > 0
    ORDER BY reply_timeliness_rate, department
"""

UNANSWERED_BY_DEPARTMENT_SQL = f"""
    -- Work orders of tickets submitted on the days (Asia/Shanghai) the time range touches:
    -- no reply yet / all of them.
    SELECT department,
           SUM(work_orders - ({REPLIED})) AS unanswered,
           SUM(work_orders) AS work_orders,
           SUM(work_orders - ({REPLIED}))::float8 / SUM(work_orders) AS unanswered_rate
    FROM {METRICS_SCHEMA}.rate_cells
    WHERE {department_cells("      ")}
    GROUP BY department
    HAVING SUM(work_orders) > 0
    ORDER BY unanswered_rate DESC, department
"""

TRANSFER_FAILURE_BY_DEPARTMENT_SQL = f"""
    -- Transfers (转接, mode=transfer) of tickets submitted on the days (Asia/Shanghai) the
    -- time range touches: not connected / all of them.
    SELECT department,
           SUM(transfers_failed) AS not_connected,
           SUM(transfers) AS transfers,
           SUM(transfers_failed)::float8 / SUM(transfers) AS transfer_failure_rate
    FROM {METRICS_SCHEMA}.rate_cells
    WHERE {department_cells("      ")}
    GROUP BY department
    HAVING SUM(transfers) > 0
    ORDER BY transfer_failure_rate DESC, department
"""

RATIO_AS_GAUGE: dict[str, object] = {
    "unit": "percentunit",
    "min": 0,
    "max": 1,
    "custom.cellOptions": {"type": "gauge", "mode": "gradient"},
}
"""A ratio column drawn as a 0-100% gauge in each cell."""


def department_table(title: str, definition: str, sql: str, rate: str) -> Panel:
    """One rate per department over the tickets submitted in the range, worst first."""
    return Panel(
        "table",
        f"{title} by department (tickets submitted in the range)",
        f"{definition} Per department, over the whole days (Asia/Shanghai) of the time range, "
        "for the chosen cities; the same figure as GET /rates/by/department over those days. "
        "From the metrics service's aggregate cells in PostgreSQL.",
        [SQL(sql)],
        width=THIRD,
        overrides={rate: RATIO_AS_GAUGE},
    )


OVERDUE_BY_DEPARTMENT = (
    'sum by (department) (max by (department, city) (hotline_overdue_work_orders{city=~"$city"}))'
)
"""Every metrics replica exports the same counts: `max` over replicas, then summed over
cities."""

LAYOUT: list[Row | Panel] = [
    Row("Service quality per city (rolling window)"),
    rolling_rate(
        "Reply timeliness (replied by the deadline)",
        "Work orders whose first reply came by due_at / work orders replied plus those past "
        "due with no reply.",
        "reply_timeliness_rate",
    ),
    rolling_rate(
        "Unanswered work orders",
        "Work orders with no reply yet / work orders.",
        "unanswered_rate",
    ),
    rolling_rate(
        "Transfers not connected (转接)",
        "Transfers (mode=transfer) not connected / transfers.",
        "transfer_failure_rate",
    ),
    rolling_rate(
        "Three-way calls failed (第三方通话)",
        "Three-way calls not connected / three-way calls.",
        "three_way_failure_rate",
    ),
    rolling_rate(
        "Connection rate (phone)",
        "Phone tickets answered / phone tickets.",
        "connection_rate",
    ),
    rolling_rate(
        "Reopened tickets (重办)",
        "Tickets reopened by an unsatisfied callback / tickets with a reached callback that "
        "had an answer.",
        "reopen_rate",
    ),
    Panel(
        "timeseries",
        "Mean wait to answer (phone)",
        "Sum of wait_seconds / answered phone tickets. " + WINDOW_NOTE,
        [PromQL('max by (city) (hotline_avg_wait_seconds{city=~"$city"})', "{{city}}")],
        unit="s",
    ),
    rolling_rate(
        "Answered within 15 s (phone)",
        "Answered phone tickets with a wait of 15 s or less / answered phone tickets.",
        "answered_within_15s_rate",
    ),
    rolling_rate(
        "First-contact resolution (首呼解答)",
        "Tickets resolved at first contact / tickets answered (online: the submission went "
        "through).",
        "first_contact_resolution_rate",
    ),
    rolling_rate(
        "Definite replies (明确答复)",
        "Work orders whose first reply has quality=definite / work orders replied.",
        "definite_reply_rate",
    ),
    Row("Departments"),
    department_table(
        "Reply timeliness",
        "Work orders whose first reply came by due_at / work orders replied plus those past "
        "due with no reply.",
        REPLY_TIMELINESS_BY_DEPARTMENT_SQL,
        "reply_timeliness_rate",
    ),
    department_table(
        "Unanswered work orders",
        "Work orders with no reply yet / work orders.",
        UNANSWERED_BY_DEPARTMENT_SQL,
        "unanswered_rate",
    ),
    department_table(
        "Transfers not connected",
        "Transfers (mode=transfer) not connected / transfers.",
        TRANSFER_FAILURE_BY_DEPARTMENT_SQL,
        "transfer_failure_rate",
    ),
    Panel(
        "timeseries",
        "Overdue work orders per department (督办)",
        "Work orders past their deadline with no reply, of any age, per department, as they "
        "stood at each time (of the chosen cities; all of them include work orders whose "
        "ticket has not reached metrics yet).",
        [PromQL(OVERDUE_BY_DEPARTMENT, "{{department}}")],
        unit="none",
    ),
    Panel(
        "bars",
        "Latest overdue work order per department (working days late)",
        "Per department, the working days (China's statutory holidays and make-up working "
        "days) wholly elapsed since the deadline of its latest overdue work order, now.",
        [
            PromQL(
                'max by (department) (hotline_overdue_working_days_max{city=~"$city"})',
                "{{department}}",
            )
        ],
    ),
    Row("Outcomes"),
    Panel(
        "table",
        "First-contact resolution by scenario (tickets submitted in the range)",
        "Tickets resolved at first contact (首呼解答) / tickets answered, per scenario, over "
        "the whole days (Asia/Shanghai) of the time range, for the chosen cities. From the "
        "metrics service's aggregate cells in PostgreSQL.",
        [SQL(FIRST_CONTACT_BY_SCENARIO_SQL)],
        overrides={"first_contact_resolution": RATIO_AS_GAUGE},
    ),
    Panel(
        "timeseries",
        "Callbacks and satisfaction",
        "Callback rate: eligible tickets called back / eligible tickets. Satisfaction: "
        "reached callbacks satisfied or basically satisfied / reached callbacks with an "
        "answer. " + WINDOW_NOTE,
        [
            PromQL(city_rate("callback_rate"), "callback rate {{city}}"),
            PromQL(city_rate("satisfaction_rate"), "satisfaction {{city}}"),
        ],
        unit="percentunit",
    ),
    Panel(
        "bars",
        "Callbacks recorded in the range, by answer",
        "Callbacks (回访) logged in the time range: reached, by the satisfaction given "
        "(none: no answer), and not reached.",
        [
            PromQL(
                outcomes_in_range("hotline_callbacks_total", "satisfaction", 'reached="true"'),
                "reached: {{satisfaction}}",
            ),
            PromQL(
                outcomes_in_range("hotline_callbacks_total", "", 'reached="false"'),
                "not reached",
            ),
        ],
    ),
    Panel(
        "bars",
        "First replies recorded in the range",
        "Departments' first replies to work orders in the time range, on time (at or before "
        "due_at) or late, by quality.",
        [
            PromQL(
                outcomes_in_range("hotline_first_replies_total", "quality", 'on_time="true"'),
                "on time: {{quality}}",
            ),
            PromQL(
                outcomes_in_range("hotline_first_replies_total", "quality", 'on_time="false"'),
                "late: {{quality}}",
            ),
        ],
    ),
    Panel(
        "bars",
        "Tickets, transfers and work orders recorded in the range",
        "Tickets by whether the call was answered (online: went through), transfers and "
        "three-way calls by whether they connected, work orders dispatched.",
        [
            PromQL(
                outcomes_in_range("hotline_tickets_total", "answered"),
                "tickets answered={{answered}}",
            ),
            PromQL(
                outcomes_in_range("hotline_transfers_total", "mode, connected"),
                "{{mode}} connected={{connected}}",
            ),
            PromQL(
                outcomes_in_range("hotline_work_orders_created_total", ""),
                "work orders dispatched",
            ),
        ],
        width=FULL,
    ),
    Row("Event pipeline"),
    Panel(
        "timeseries",
        "Consumer lag",
        "Records on the topics each service's consumer group has not processed yet.",
        by_service("sum by (service) (hotline_consumer_lag)"),
        unit="none",
        width=THIRD,
    ),
    Panel(
        "timeseries",
        "Outbox backlog",
        "Events written to a service's outbox and not yet published to Kafka.",
        by_service("max by (service) (hotline_outbox_backlog)"),
        unit="none",
        width=THIRD,
    ),
    Panel(
        "timeseries",
        "Oldest unpublished event",
        "Age of the oldest event in a service's outbox (0 when it is empty).",
        by_service("max by (service) (hotline_outbox_oldest_unpublished_age_seconds)"),
        unit="s",
        width=THIRD,
    ),
    Panel(
        "timeseries",
        "Events published and consumed",
        "Events the outbox relays published, and events the consumers took.",
        [
            PromQL(
                "sum by (service) (rate(hotline_events_published_total[$__rate_interval]))",
                "published by {{service}}",
            ),
            PromQL(
                "sum by (service) (rate(hotline_events_consumed_total[$__rate_interval]))",
                "consumed by {{service}}",
            ),
        ],
        unit="ops",
        width=THIRD,
    ),
    Panel(
        "timeseries",
        "HTTP requests",
        "Requests answered per second, by service (health checks and scrapes left out).",
        by_service(
            "sum by (service) "
            f"(rate(hotline_http_requests_total{{{OPS_ROUTES}}}[$__rate_interval]))"
        ),
        unit="reqps",
        width=THIRD,
    ),
    Panel(
        "timeseries",
        "HTTP latency (95th percentile)",
        "95% of requests were answered within this time, by service.",
        by_service(
            "histogram_quantile(0.95, sum by (service, le) "
            "(rate(hotline_http_request_duration_seconds_bucket"
            f"{{{OPS_ROUTES}}}[$__rate_interval])))"
        ),
        unit="s",
        width=THIRD,
    ),
    Panel(
        "bars",
        "Dead letters in the range",
        "Events a consumer could never process (bad JSON, failed validation, a handler that "
        "refuses them), copied to <topic>.dlq with the reason, per service and topic. "
        "`hotline dlq list` shows them, `hotline dlq replay` puts them back once fixed.",
        [
            PromQL(
                "sum by (service, topic) (increase(hotline_events_dead_lettered_total[$__range]))",
                "{{service}}: {{topic}}",
            )
        ],
    ),
    Panel(
        "timeseries",
        "Age of the rate series",
        "Time since each metrics replica last recomputed the rate gauges and outcome totals "
        "(every HOTLINE_RATES_REFRESH_SECONDS, 30 s by default); alert HotlineRatesStale "
        "fires past 5 minutes.",
        [
            PromQL(
                "time() - max by (instance) (hotline_rates_refreshed_timestamp_seconds)",
                "{{instance}}",
            )
        ],
        unit="s",
    ),
]

DASHBOARD = Dashboard(
    title="Hotline overview",
    uid="hotline-overview",
    description=(
        "The 12345 hotline's evaluation rates per city (DESIGN.md), the outcomes recorded in "
        "the time range, and the health of the event pipeline."
    ),
    tags=["hotline", "12345"],
    time_from="now-24h",
    refresh="1m",
    variables=[CITY],
    layout=LAYOUT,
    shared_crosshair=True,
)
