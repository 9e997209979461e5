"""The "Unanswered work orders" dashboard: the audit of work orders no department has
replied to, read from the metrics service's schema in PostgreSQL, filterable by city and
department. One entry of `LAYOUT` a panel, in the order they appear."""

from __future__ import annotations

from grafana_foundation_sdk.models import dashboard as dashboard_models

from .spec import FULL, METRICS_SCHEMA, POSTGRES, SQL, SQL_ALL, Dashboard, Panel, Variable, sql_in

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


def column_variable(name: str, label: str) -> Variable:
    """The values of a column of the unanswered work orders; "All" is `SQL_ALL`."""
    query = (
        f"SELECT DISTINCT {name} FROM {METRICS_SCHEMA}.unanswered_work_orders "
        f"WHERE {name} IS NOT NULL ORDER BY 1"
    )
    refresh = dashboard_models.VariableRefresh.ON_DASHBOARD_LOAD
    return Variable(name, label, POSTGRES, query, refresh, SQL_ALL)


OVERDUE_MAPPING = dashboard_models.ValueMap(
    options={
        "true": dashboard_models.ValueMappingResult(text="overdue", color="red", index=0),
        "false": dashboard_models.ValueMappingResult(text="not yet due", color="green", index=1),
    }
)

COLUMNS: dict[str, dict[str, object]] = {
    "work_order_id": {"displayName": "Work order"},
    "ticket_id": {"displayName": "Ticket"},
    "city": {"displayName": "City"},
    "department": {"displayName": "Department"},
    "created_at": {"displayName": "Created"},
    "due_at": {"displayName": "Due"},
    "overdue": {
        "displayName": "Overdue",
        "mappings": [OVERDUE_MAPPING],
        "custom.cellOptions": {"type": "color-text"},
    },
    "age_working_days": {"displayName": "Age (working days)"},
}
"""Each column of the table and its field config, in the order of the query's columns."""

LAYOUT: list[Panel] = [
    Panel(
        "stat",
        "Unanswered, overdue, and the oldest overdue (working days)",
        "Unanswered work orders for the chosen cities and departments, how many are past "
        "their deadline, and the age of the oldest of those.",
        [SQL(UNANSWERED_SUMMARY_SQL)],
        unit="none",
        width=FULL,
        height=5,
    ),
    Panel(
        "table",
        "Unanswered work orders, most overdue first (first 1,000)",
        "Work orders with no reply yet, earliest deadline first. Age: working days (China's "
        "statutory holidays and make-up working days) wholly elapsed since the day the work "
        "order was created, in Asia/Shanghai; the same list and ages as GET /audit/unanswered.",
        [SQL(UNANSWERED_TABLE_SQL)],
        width=FULL,
        height=18,
        overrides=COLUMNS,
    ),
]

DASHBOARD = Dashboard(
    title="Unanswered work orders",
    uid="unanswered-work-orders",
    description=(
        "Work orders dispatched to a department and not replied to yet, with their age in "
        "working days and whether they are past their deadline. The list is as of now; the "
        "time range does not apply."
    ),
    tags=["hotline", "12345", "audit"],
    time_from="now-7d",
    refresh="5m",
    variables=[column_variable("city", "City"), column_variable("department", "Department")],
    layout=LAYOUT,
    hide_time_picker=True,
)
