"""What a dashboard is made of, as plain data: each dashboard module is a table of these
rows, and `build` turns them into grafana-foundation-sdk objects. Nothing here numbers or
places a panel; `build` does, in the order of the table."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from grafana_foundation_sdk.models import dashboard as dashboard_models
from grafana_foundation_sdk.models.common import DataSourceRef

PROMETHEUS = DataSourceRef(type_val="prometheus", uid="prometheus")
POSTGRES = DataSourceRef(type_val="grafana-postgresql-datasource", uid="hotline-postgres")
METRICS_SCHEMA = "metrics"
"""The metrics service's schema (`Settings.schema_of("metrics")` with no prefix)."""

PROMETHEUS_ALL = ".*"
"""The city variable's "All": a regex for PromQL; SQL panels test for it literally."""
SQL_ALL = "__all"
"""The "All" of the SQL variables, tested for literally (it is not a value in the data)."""

FULL, HALF, THIRD = 24, 12, 8
HEIGHT = 8

PanelKind = Literal["timeseries", "bars", "table", "stat"]
"""timeseries: lines over time; bars: one horizontal bar per series, of its value now (the
queries run as instant queries); table: the rows a query returns; stat: big numbers."""


@dataclass(frozen=True)
class PromQL:
    """A Prometheus query and the legend that names each of its series."""

    expr: str
    legend: str


@dataclass(frozen=True)
class SQL:
    """A raw SQL query of the PostgreSQL data source (indented as in the code; `build`
    dedents it)."""

    text: str


Query = PromQL | SQL


@dataclass(frozen=True)
class Panel:
    """One panel. Its data source follows from its queries: PromQL reads Prometheus, SQL
    PostgreSQL. `overrides` maps a field (a column of a table) to Grafana's field config
    (`unit`, `displayName`, `custom.cellOptions`, ...), in the order Grafana shows them."""

    kind: PanelKind
    title: str
    description: str
    queries: Sequence[Query]
    unit: str | None = None
    """None: the kind's default (counts for bars, Grafana's guess otherwise)."""
    width: int = HALF
    height: int = HEIGHT
    overrides: Mapping[str, Mapping[str, object]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.queries:
            raise ValueError(f"panel {self.title!r} has no query")
        if len({type(query) for query in self.queries}) > 1:
            raise ValueError(f"panel {self.title!r} mixes PromQL and SQL: one data source each")

    @property
    def datasource(self) -> DataSourceRef:
        """Where the panel's queries run."""
        return POSTGRES if isinstance(self.queries[0], SQL) else PROMETHEUS


@dataclass(frozen=True)
class Row:
    """A row header: the panels after it, up to the next row, belong to it."""

    title: str


@dataclass(frozen=True)
class Variable:
    """A multi-value query variable with an "All" option."""

    name: str
    label: str
    datasource: DataSourceRef
    query: str
    refresh: dashboard_models.VariableRefresh
    all_value: str


@dataclass(frozen=True)
class Dashboard:
    """A dashboard: what it is, its time settings and variables, and its rows and panels
    in the order they appear (left to right, then down). Its file is `<uid>.json`."""

    title: str
    uid: str
    description: str
    tags: Sequence[str]
    time_from: str
    refresh: str
    variables: Sequence[Variable]
    layout: Sequence[Row | Panel]
    shared_crosshair: bool = False
    hide_time_picker: bool = False


def sql_in(column: str, variable: str, all_value: str) -> str:
    """`column` is one of the variable's values, or the variable is "All" (which also keeps
    rows whose `column` is null). `sqlstring` quotes and escapes every value."""
    values = f"${{{variable}:sqlstring}}"
    return f"('{all_value}' IN ({values}) OR {column} IN ({values}))"
