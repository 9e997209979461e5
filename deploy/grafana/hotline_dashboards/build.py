"""The dashboards' tables (`spec`) turned into grafana-foundation-sdk objects: one builder
a panel kind, and the layout that numbers rows and panels in the order of the table."""

from __future__ import annotations

from collections.abc import Callable
from string import ascii_uppercase
from typing import TypeVar

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
from grafana_foundation_sdk.models import common as common_models
from grafana_foundation_sdk.models import dashboard as dashboard_models

from .spec import POSTGRES, PROMETHEUS, SQL, Dashboard, Panel, PanelKind, PromQL, Row, Variable

Target = cogbuilder.Builder[cogvariants.Dataquery]
AnyPanel = TypeVar("AnyPanel", timeseries.Panel, bargauge.Panel, table.Panel, stat.Panel)
SdkPanel = timeseries.Panel | bargauge.Panel | table.Panel | stat.Panel


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


# --- Panels ----------------------------------------------------------------------------------


def target(query: PromQL | SQL, ref_id: str, *, instant: bool) -> Target:
    """A panel's target: PromQL with its legend (instant or over the range), or raw SQL."""
    if isinstance(query, SQL):
        return Sql(query.text, ref_id)
    built = (
        prometheus.Dataquery()
        .expr(query.expr)
        .legend_format(query.legend)
        .ref_id(ref_id)
        .datasource(PROMETHEUS)
    )
    return built.instant() if instant else built.range()


def with_spec(panel: AnyPanel, spec: Panel) -> AnyPanel:
    """What every kind takes from its row: title, description, data source, queries
    (refIds A, B, ... in order), unit, size and field overrides."""
    panel = (
        panel.title(spec.title)
        .description(spec.description)
        .datasource(spec.datasource)
        .span(spec.width)
        .height(spec.height)
    )
    if spec.unit is not None:
        panel = panel.unit(spec.unit)
    instant = spec.kind == "bars"
    for number, query in enumerate(spec.queries):
        panel = panel.with_target(target(query, ascii_uppercase[number], instant=instant))
    for name, config in spec.overrides.items():
        properties = [
            dashboard_models.DynamicConfigValue(id_val=key, value=value)
            for key, value in config.items()
        ]
        panel = panel.override_by_name(name, properties)
    return panel


def legend() -> common.VizLegendOptions:
    """A visible legend under the graph (the SDK hides it unless set)."""
    return (
        common.VizLegendOptions()
        .show_legend(True)
        .display_mode(common_models.LegendDisplayMode.LIST)
        .placement(common_models.LegendPlacement.BOTTOM)
    )


def last_value() -> common.ReduceDataOptions:
    """One value a series: its last one that is not null."""
    return common.ReduceDataOptions().values(False).calcs(["lastNotNull"])


def graph(spec: Panel) -> timeseries.Panel:
    """A time series panel with a legend; ratios are drawn on a fixed 0-100% axis."""
    panel = with_spec(timeseries.Panel().legend(legend()).min(0), spec)
    return panel.max(1) if spec.unit == "percentunit" else panel


def bars(spec: Panel) -> bargauge.Panel:
    """Horizontal bars of instant values (one bar per series, named by its legend); counts
    unless the row gives a unit."""
    return with_spec(
        bargauge.Panel()
        .orientation(common_models.VizOrientation.HORIZONTAL)
        .display_mode(common_models.BarGaugeDisplayMode.GRADIENT)
        .reduce_options(last_value())
        .unit("none")
        .decimals(0)
        .min(0),
        spec,
    )


def rows_table(spec: Panel) -> table.Panel:
    """The rows a query returns, columns shaped by the row's overrides."""
    return with_spec(table.Panel(), spec)


def big_numbers(spec: Panel) -> stat.Panel:
    """One big number per column of the query's single row ("0" when there is none)."""
    return with_spec(
        stat.Panel()
        .reduce_options(last_value())
        .graph_mode(common_models.BigValueGraphMode.NONE)
        .no_value("0"),
        spec,
    )


PANEL_BUILDERS: dict[PanelKind, Callable[[Panel], SdkPanel]] = {
    "timeseries": graph,
    "bars": bars,
    "table": rows_table,
    "stat": big_numbers,
}


# --- Dashboards ------------------------------------------------------------------------------


def query_variable(spec: Variable) -> dashboard.QueryVariable:
    """A multi-value variable whose values a query lists, sorted, with "All"."""
    return (
        dashboard.QueryVariable(spec.name)
        .label(spec.label)
        .datasource(spec.datasource)
        .query(spec.query)
        .definition(spec.query)
        .refresh(spec.refresh)
        .sort(dashboard_models.VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(spec.all_value)
    )


def build_dashboard(spec: Dashboard) -> dashboard_models.Dashboard:
    """The dashboard with its rows and panels numbered 1, 2, ... in the order of the table;
    the SDK places each one on the grid after the one before (rows span the width)."""
    board = (
        dashboard.Dashboard(spec.title)
        .uid(spec.uid)
        .description(spec.description)
        .tags(list(spec.tags))
        .timezone("browser")
        .time(spec.time_from, "now")
        .refresh(spec.refresh)
    )
    if spec.shared_crosshair:
        board = board.tooltip(dashboard_models.DashboardCursorSync.CROSSHAIR)
    if spec.hide_time_picker:
        board = board.timepicker(dashboard.TimePicker().hidden(True))
    for variable in spec.variables:
        board = board.with_variable(query_variable(variable))
    for panel_id, item in enumerate(spec.layout, start=1):
        if isinstance(item, Row):
            board = board.with_row(dashboard.Row(item.title).id(panel_id))
        else:
            board = board.with_panel(PANEL_BUILDERS[item.kind](item).id(panel_id))
    built: dashboard_models.Dashboard = board.build()
    return built
