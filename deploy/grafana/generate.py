"""The Grafana dashboards as code: "Hotline overview" and "Unanswered work orders".

Built with grafana-foundation-sdk and committed as JSON under `dashboards/`, which Grafana
provisions (see `provisioning/`). After changing this file, rewrite the JSON:

    .venv/bin/python deploy/grafana/generate.py           # rewrite dashboards/*.json
    .venv/bin/python deploy/grafana/generate.py --check   # exit 1 if they differ

Queries follow what the services export (`shared/observability.py`,
`services/metrics/prometheus.py`): every metrics replica exports the same outcome totals
and rates, so those are aggregated across instances with `max`, never `sum`. What
Prometheus cannot hold (scenario, a free-text dimension; the unanswered work orders
themselves) is read from the metrics service's schema in PostgreSQL.
tests/e2e/test_prometheus.py runs every query against a real Prometheus and PostgreSQL.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import (
    bargauge,
    common,
    dashboard,
    prometheus,
    stat,
    table,
    timeseries,
)
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as common_models
from grafana_foundation_sdk.models import dashboard as dashboard_models
from grafana_foundation_sdk.models.common import DataSourceRef

HERE = Path(__file__).resolve().parent
DASHBOARDS_DIR = HERE / "dashboards"

PROMETHEUS = DataSourceRef(type_val="prometheus", uid="prometheus")
POSTGRES = DataSourceRef(type_val="grafana-postgresql-datasource", uid="hotline-postgres")
METRICS_SCHEMA = "metrics"
"""The metrics service's schema (`Settings.schema_of("metrics")` with no prefix)."""

PROMETHEUS_ALL = ".*"
"""The city variable's "All": a regex for PromQL; SQL panels test for it literally."""
SQL_ALL = "__all"
"""The "All" of the SQL variables, tested for literally (it is not a value in the data)."""

Target = cogbuilder.Builder[cogvariants.Dataquery]

FULL, HALF, THIRD = 24, 12, 8
HEIGHT = 8


# --- SQL targets: the SDK has no builder for the PostgreSQL data source -----------------------


class SqlQuery(cogvariants.Dataquery):
    """A raw SQL target of Grafana's PostgreSQL data source, as its query editor saves it."""

    def __init__(self, ref_id: str, raw_sql: str, result_format: str = "table") -> None:
        self.ref_id = ref_id
        self.raw_sql = raw_sql
        self.result_format = result_format

    def to_json(self) -> dict[str, object]:
        """The target's JSON."""
        return {
            "datasource": POSTGRES.to_json(),
            "editorMode": "code",
            "format": self.result_format,
            "rawQuery": True,
            "rawSql": self.raw_sql,
            "refId": self.ref_id,
        }


class Sql(cogbuilder.Builder[SqlQuery]):
    """Builder of a `SqlQuery`, so it goes where the SDK takes any target."""

    def __init__(self, raw_sql: str, ref_id: str = "A") -> None:
        self._query = SqlQuery(ref_id, _dedent(raw_sql))

    def build(self) -> SqlQuery:
        """The target."""
        return self._query


def _dedent(sql: str) -> str:
    lines = [line.rstrip() for line in sql.strip("\n").splitlines()]
    indent = min(len(line) - len(line.lstrip()) for line in lines if line)
    return "\n".join(line[indent:] for line in lines)


def sql_in(column: str, variable: str, all_value: str) -> str:
    """`column` is one of the variable's values, or the variable is "All" (which also keeps
    rows whose `column` is null). `sqlstring` quotes and escapes every value."""
    values = f"${{{variable}:sqlstring}}"
    return f"('{all_value}' IN ({values}) OR {column} IN ({values}))"


# --- Prometheus building blocks -----------------------------------------------------------


def promql(
    expr: str, legend: str, ref_id: str = "A", *, instant: bool = False
) -> prometheus.Dataquery:
    """A PromQL target with its legend."""
    target = (
        prometheus.Dataquery()
        .expr(expr)
        .legend_format(legend)
        .ref_id(ref_id)
        .datasource(PROMETHEUS)
    )
    return target.instant() if instant else target.range()


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


OPS_ROUTES = 'route!~"/metrics|/healthz|/readyz"'


def legend() -> common.VizLegendOptions:
    """A visible legend under the graph (the SDK hides it unless set)."""
    return (
        common.VizLegendOptions()
        .show_legend(True)
        .display_mode(common_models.LegendDisplayMode.LIST)
        .placement(common_models.LegendPlacement.BOTTOM)
    )


def graph(
    title: str, description: str, *targets: Target, unit: str, width: int = HALF
) -> timeseries.Panel:
    """A time series panel over Prometheus with a legend."""
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(PROMETHEUS)
        .unit(unit)
        .legend(legend())
        .span(width)
        .height(HEIGHT)
    )
    panel = panel.min(0).max(1) if unit == "percentunit" else panel.min(0)
    for target in targets:
        panel = panel.with_target(target)
    return panel


def bars(title: str, description: str, *targets: Target, width: int = HALF) -> bargauge.Panel:
    """Horizontal bars of instant values (one bar per series, named by its legend)."""
    panel = (
        bargauge.Panel()
        .title(title)
        .description(description)
        .datasource(PROMETHEUS)
        .orientation(common_models.VizOrientation.HORIZONTAL)
        .display_mode(common_models.BarGaugeDisplayMode.GRADIENT)
        .reduce_options(common.ReduceDataOptions().values(False).calcs(["lastNotNull"]))
        .unit("none")
        .decimals(0)
        .min(0)
        .span(width)
        .height(HEIGHT)
    )
    for target in targets:
        panel = panel.with_target(target)
    return panel


def city_variable() -> dashboard.QueryVariable:
    """The cities Prometheus knows rates of; "All" is a regex matching every city."""
    return (
        dashboard.QueryVariable("city")
        .label("City")
        .datasource(PROMETHEUS)
        .query("label_values(hotline_rate_ratio, city)")
        .definition("label_values(hotline_rate_ratio, city)")
        .refresh(dashboard_models.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dashboard_models.VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(PROMETHEUS_ALL)
    )


# --- Hotline overview -----------------------------------------------------------------------

WINDOW_NOTE = (
    "Each point is the rate over the metrics service's rolling window of tickets "
    "(HOTLINE_RATES_WINDOW_DAYS, 30 days by default) as it stood at that time."
)

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
      AND period BETWEEN ($__timeFrom()::timestamptz AT TIME ZONE 'Asia/Shanghai')::date
                     AND ($__timeTo()::timestamptz AT TIME ZONE 'Asia/Shanghai')::date
      AND {sql_in("city", "city", PROMETHEUS_ALL)}
    GROUP BY scenario
    HAVING SUM(answered_tickets) > 0
    ORDER BY first_contact_resolution DESC, scenario
"""


def first_contact_by_scenario() -> table.Panel:
    """First-contact resolution per scenario: scenario is free text, so never a label."""
    return (
        table.Panel()
        .title("First-contact resolution by scenario (tickets submitted in the range)")
        .description(
            "Tickets resolved at first contact (首呼解答) / tickets answered, per scenario, "
            "over the whole days (Asia/Shanghai) of the time range, for the chosen cities. "
            "From the metrics service's aggregate cells in PostgreSQL."
        )
        .datasource(POSTGRES)
        .with_target(Sql(FIRST_CONTACT_BY_SCENARIO_SQL))
        .override_by_name(
            "first_contact_resolution",
            [
                dashboard_models.DynamicConfigValue(id_val="unit", value="percentunit"),
                dashboard_models.DynamicConfigValue(id_val="min", value=0),
                dashboard_models.DynamicConfigValue(id_val="max", value=1),
                dashboard_models.DynamicConfigValue(
                    id_val="custom.cellOptions",
                    value={"type": "gauge", "mode": "gradient"},
                ),
            ],
        )
        .span(HALF)
        .height(HEIGHT)
    )


def hotline_overview() -> dashboard_models.Dashboard:
    """Service quality per city, outcomes in the range, and the event pipeline."""
    built: dashboard_models.Dashboard = (
        dashboard.Dashboard("Hotline overview")
        .uid("hotline-overview")
        .description(
            "The 12345 hotline's evaluation rates per city (DESIGN.md), the outcomes recorded "
            "in the time range, and the health of the event pipeline."
        )
        .tags(["hotline", "12345"])
        .timezone("browser")
        .time("now-24h", "now")
        .refresh("1m")
        .tooltip(dashboard_models.DashboardCursorSync.CROSSHAIR)
        .with_variable(city_variable())
        .with_row(dashboard.Row("Service quality per city (rolling window)").id(1))
        .with_panel(
            graph(
                "Reply timeliness (replied by the deadline)",
                "Work orders whose first reply came by due_at / work orders replied plus "
                "those past due with no reply. " + WINDOW_NOTE,
                promql(city_rate("reply_timeliness_rate"), "{{city}}"),
                unit="percentunit",
            ).id(2)
        )
        .with_panel(
            graph(
                "Unanswered work orders",
                "Work orders with no reply yet / work orders. " + WINDOW_NOTE,
                promql(city_rate("unanswered_rate"), "{{city}}"),
                unit="percentunit",
            ).id(3)
        )
        .with_panel(
            graph(
                "Transfers not connected (转接)",
                "Transfers (mode=transfer) not connected / transfers. " + WINDOW_NOTE,
                promql(city_rate("transfer_failure_rate"), "{{city}}"),
                unit="percentunit",
            ).id(4)
        )
        .with_panel(
            graph(
                "Three-way calls failed (第三方通话)",
                "Three-way calls not connected / three-way calls. " + WINDOW_NOTE,
                promql(city_rate("three_way_failure_rate"), "{{city}}"),
                unit="percentunit",
            ).id(5)
        )
        .with_panel(
            graph(
                "Connection rate (phone)",
                "Phone tickets answered / phone tickets. " + WINDOW_NOTE,
                promql(city_rate("connection_rate"), "{{city}}"),
                unit="percentunit",
            ).id(6)
        )
        .with_panel(
            graph(
                "Mean wait to answer (phone)",
                "Sum of wait_seconds / answered phone tickets. " + WINDOW_NOTE,
                promql('max by (city) (hotline_avg_wait_seconds{city=~"$city"})', "{{city}}"),
                unit="s",
            ).id(7)
        )
        .with_row(dashboard.Row("Outcomes").id(8))
        .with_panel(first_contact_by_scenario().id(9))
        .with_panel(
            graph(
                "Callbacks and satisfaction",
                "Callback rate: eligible tickets called back / eligible tickets. Satisfaction: "
                "reached callbacks satisfied or basically satisfied / reached callbacks with "
                "an answer. " + WINDOW_NOTE,
                promql(city_rate("callback_rate"), "callback rate {{city}}", "A"),
                promql(city_rate("satisfaction_rate"), "satisfaction {{city}}", "B"),
                unit="percentunit",
            ).id(10)
        )
        .with_panel(
            bars(
                "Callbacks recorded in the range, by answer",
                "Callbacks (回访) logged in the time range: reached, by the satisfaction given "
                "(none: no answer), and not reached.",
                promql(
                    outcomes_in_range("hotline_callbacks_total", "satisfaction", 'reached="true"'),
                    "reached: {{satisfaction}}",
                    "A",
                    instant=True,
                ),
                promql(
                    outcomes_in_range("hotline_callbacks_total", "", 'reached="false"'),
                    "not reached",
                    "B",
                    instant=True,
                ),
            ).id(11)
        )
        .with_panel(
            bars(
                "First replies recorded in the range",
                "Departments' first replies to work orders in the time range, on time (at or "
                "before due_at) or late, by quality.",
                promql(
                    outcomes_in_range("hotline_first_replies_total", "quality", 'on_time="true"'),
                    "on time: {{quality}}",
                    "A",
                    instant=True,
                ),
                promql(
                    outcomes_in_range("hotline_first_replies_total", "quality", 'on_time="false"'),
                    "late: {{quality}}",
                    "B",
                    instant=True,
                ),
            ).id(12)
        )
        .with_panel(
            bars(
                "Tickets, transfers and work orders recorded in the range",
                "Tickets by whether the call was answered (online: went through), transfers "
                "and three-way calls by whether they connected, work orders dispatched.",
                promql(
                    outcomes_in_range("hotline_tickets_total", "answered"),
                    "tickets answered={{answered}}",
                    "A",
                    instant=True,
                ),
                promql(
                    outcomes_in_range("hotline_transfers_total", "mode, connected"),
                    "{{mode}} connected={{connected}}",
                    "B",
                    instant=True,
                ),
                promql(
                    outcomes_in_range("hotline_work_orders_created_total", ""),
                    "work orders dispatched",
                    "C",
                    instant=True,
                ),
            )
            .span(FULL)
            .id(13)
        )
        .with_row(dashboard.Row("Event pipeline").id(14))
        .with_panel(
            graph(
                "Consumer lag",
                "Records on the topics each service's consumer group has not processed yet.",
                promql("sum by (service) (hotline_consumer_lag)", "{{service}}"),
                unit="none",
                width=THIRD,
            ).id(15)
        )
        .with_panel(
            graph(
                "Outbox backlog",
                "Events written to a service's outbox and not yet published to Kafka.",
                promql("max by (service) (hotline_outbox_backlog)", "{{service}}"),
                unit="none",
                width=THIRD,
            ).id(16)
        )
        .with_panel(
            graph(
                "Oldest unpublished event",
                "Age of the oldest event in a service's outbox (0 when it is empty).",
                promql(
                    "max by (service) (hotline_outbox_oldest_unpublished_age_seconds)",
                    "{{service}}",
                ),
                unit="s",
                width=THIRD,
            ).id(17)
        )
        .with_panel(
            graph(
                "Events published and consumed",
                "Events the outbox relays published, and events the consumers took.",
                promql(
                    "sum by (service) (rate(hotline_events_published_total[$__rate_interval]))",
                    "published by {{service}}",
                    "A",
                ),
                promql(
                    "sum by (service) (rate(hotline_events_consumed_total[$__rate_interval]))",
                    "consumed by {{service}}",
                    "B",
                ),
                unit="ops",
                width=THIRD,
            ).id(18)
        )
        .with_panel(
            graph(
                "HTTP requests",
                "Requests answered per second, by service (health checks and scrapes left out).",
                promql(
                    "sum by (service) "
                    f"(rate(hotline_http_requests_total{{{OPS_ROUTES}}}[$__rate_interval]))",
                    "{{service}}",
                ),
                unit="reqps",
                width=THIRD,
            ).id(19)
        )
        .with_panel(
            graph(
                "HTTP latency (95th percentile)",
                "95% of requests were answered within this time, by service.",
                promql(
                    "histogram_quantile(0.95, sum by (service, le) "
                    "(rate(hotline_http_request_duration_seconds_bucket"
                    f"{{{OPS_ROUTES}}}[$__rate_interval])))",
                    "{{service}}",
                ),
                unit="s",
                width=THIRD,
            ).id(20)
        )
        .build()
    )
    return built


# --- Unanswered work orders -----------------------------------------------------------------

UNANSWERED_FILTER = "\n      AND ".join(
    sql_in(name, name, SQL_ALL) for name in ("city", "department")
)

UNANSWERED_SUMMARY_SQL = f"""
    SELECT count(*) AS unanswered,
           count(*) FILTER (WHERE overdue) AS overdue,
           max(age_working_days) FILTER (WHERE overdue) AS oldest_overdue_working_days
    FROM {METRICS_SCHEMA}.unanswered_work_orders
    WHERE {UNANSWERED_FILTER}
"""

UNANSWERED_TABLE_SQL = f"""
    -- Most overdue first (earliest deadline), as GET /audit/unanswered lists them.
    SELECT work_order_id, ticket_id, city, department, created_at, due_at, overdue,
           age_working_days
    FROM {METRICS_SCHEMA}.unanswered_work_orders
    WHERE {UNANSWERED_FILTER}
    ORDER BY due_at, work_order_id
    LIMIT 1000
"""


def sql_variable(name: str, label: str) -> dashboard.QueryVariable:
    """The values of a column of the unanswered work orders; "All" is `SQL_ALL`."""
    query = (
        f"SELECT DISTINCT {name} FROM {METRICS_SCHEMA}.unanswered_work_orders "
        f"WHERE {name} IS NOT NULL ORDER BY 1"
    )
    return (
        dashboard.QueryVariable(name)
        .label(label)
        .datasource(POSTGRES)
        .query(query)
        .definition(query)
        .refresh(dashboard_models.VariableRefresh.ON_DASHBOARD_LOAD)
        .sort(dashboard_models.VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(SQL_ALL)
    )


def column(
    name: str, display: str, *extra: dashboard_models.DynamicConfigValue
) -> tuple[str, list[dashboard_models.DynamicConfigValue]]:
    """(name, overrides) of one table column."""
    return name, [dashboard_models.DynamicConfigValue(id_val="displayName", value=display), *extra]


OVERDUE_MAPPING = dashboard_models.ValueMap(
    options={
        "true": dashboard_models.ValueMappingResult(text="overdue", color="red", index=0),
        "false": dashboard_models.ValueMappingResult(text="not yet due", color="green", index=1),
    }
)


def unanswered_table() -> table.Panel:
    """Every unanswered work order, most overdue first, with its age in working days."""
    panel = (
        table.Panel()
        .title("Unanswered work orders, most overdue first (first 1,000)")
        .description(
            "Work orders with no reply yet, earliest deadline first. Age: working days "
            "(China's statutory holidays and make-up working days) wholly elapsed since the "
            "day the work order was created, in Asia/Shanghai; the same list and ages as "
            "GET /audit/unanswered."
        )
        .datasource(POSTGRES)
        .with_target(Sql(UNANSWERED_TABLE_SQL))
        .span(FULL)
        .height(18)
    )
    columns = [
        column("work_order_id", "Work order"),
        column("ticket_id", "Ticket"),
        column("city", "City"),
        column("department", "Department"),
        column("created_at", "Created"),
        column("due_at", "Due"),
        column(
            "overdue",
            "Overdue",
            dashboard_models.DynamicConfigValue(id_val="mappings", value=[OVERDUE_MAPPING]),
            dashboard_models.DynamicConfigValue(
                id_val="custom.cellOptions", value={"type": "color-text"}
            ),
        ),
        column("age_working_days", "Age (working days)"),
    ]
    for name, properties in columns:
        panel = panel.override_by_name(name, properties)
    return panel


def unanswered_work_orders() -> dashboard_models.Dashboard:
    """The audit of unanswered work orders, filterable by city and department."""
    built: dashboard_models.Dashboard = (
        dashboard.Dashboard("Unanswered work orders")
        .uid("unanswered-work-orders")
        .description(
            "Work orders dispatched to a department and not replied to yet, with their age in "
            "working days and whether they are past their deadline. The list is as of now; "
            "the time range does not apply."
        )
        .tags(["hotline", "12345", "audit"])
        .timezone("browser")
        .time("now-7d", "now")
        .refresh("5m")
        .timepicker(dashboard.TimePicker().hidden(True))
        .with_variable(sql_variable("city", "City"))
        .with_variable(sql_variable("department", "Department"))
        .with_panel(
            stat.Panel()
            .id(1)
            .title("Unanswered, overdue, and the oldest overdue (working days)")
            .description(
                "Unanswered work orders for the chosen cities and departments, how many are "
                "past their deadline, and the age of the oldest of those."
            )
            .datasource(POSTGRES)
            .with_target(Sql(UNANSWERED_SUMMARY_SQL))
            .reduce_options(common.ReduceDataOptions().values(False).calcs(["lastNotNull"]))
            .graph_mode(common_models.BigValueGraphMode.NONE)
            .no_value("0")
            .unit("none")
            .span(FULL)
            .height(5)
        )
        .with_panel(unanswered_table().id(2))
        .build()
    )
    return built


# --- Files ---------------------------------------------------------------------------------


def render(model: dashboard_models.Dashboard) -> str:
    """Stable JSON: keys sorted, two-space indent, UTF-8 text, one trailing newline."""
    return json.dumps(model, cls=JSONEncoder, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def rendered() -> dict[Path, str]:
    """Each dashboard file and its text."""
    return {
        DASHBOARDS_DIR / "hotline-overview.json": render(hotline_overview()),
        DASHBOARDS_DIR / "unanswered-work-orders.json": render(unanswered_work_orders()),
    }


def stale_files() -> list[Path]:
    """Dashboard files whose committed text differs from what this module generates."""
    return [
        path
        for path, text in rendered().items()
        if not path.exists() or path.read_text(encoding="utf-8") != text
    ]


def main(argv: list[str] | None = None) -> int:
    """Write the dashboards, or with `--check` report those that differ (exit 1)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if a committed dashboard differs"
    )
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files()
        for path in stale:
            print(f"{path.relative_to(HERE.parent.parent)} differs from generate.py's output")
        if stale:
            print("run: .venv/bin/python deploy/grafana/generate.py")
        return 1 if stale else 0
    DASHBOARDS_DIR.mkdir(parents=True, exist_ok=True)
    for path, text in rendered().items():
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path.relative_to(HERE.parent.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
