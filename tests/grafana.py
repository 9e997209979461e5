"""The committed Grafana dashboards as the tests read them: panels, their queries, and the
queries with Grafana's variables and macros filled in as Grafana would for "All"."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
GRAFANA_DIR = REPO_ROOT / "deploy" / "grafana"
DASHBOARDS_DIR = GRAFANA_DIR / "dashboards"
RULES_FILE = REPO_ROOT / "deploy" / "prometheus" / "rules" / "hotline.yml"

PROMETHEUS_UID = "prometheus"
POSTGRES_UID = "hotline-postgres"

# What Grafana puts for its own variables; the test Prometheus scrapes every second.
PROMQL_BUILTINS = {"__range": "1h", "__rate_interval": "1m", "__interval": "15s"}


def need(program: str, package: str = "prometheus") -> str:
    """The path of `program`; fails the test (never skips it) when it is not installed."""
    for candidate in (f"/usr/bin/{program}", shutil.which(program)):
        if candidate and Path(candidate).exists():
            return candidate
    raise AssertionError(
        f"{program} is not installed: install the Debian package `{package}` "
        f"(apt-get install {package}); the dashboard and alert-rule tests need it"
    )


def load_generator() -> ModuleType:
    """`deploy/grafana/generate.py` as a module (it is a script, not a package)."""
    spec = importlib.util.spec_from_file_location("grafana_generate", GRAFANA_DIR / "generate.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_dashboards() -> dict[str, dict[str, Any]]:
    """Each committed dashboard by file name."""
    return {
        path.name: json.loads(path.read_text(encoding="utf-8"))
        for path in sorted(DASHBOARDS_DIR.glob("*.json"))
    }


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel that shows data (rows left out, panels of collapsed rows included)."""
    found = []
    for panel in dashboard.get("panels", []):
        if panel["type"] == "row":
            found.extend(panel.get("panels", []))
        else:
            found.append(panel)
    return found


@dataclass(frozen=True)
class Query:
    """One query of a dashboard: a panel's target, or a variable's."""

    dashboard: dict[str, Any]
    where: str
    datasource_uid: str
    text: str
    legend: str | None = None

    def __str__(self) -> str:
        return f"{self.dashboard['title']} / {self.where}: {self.text}"


def queries(dashboard: dict[str, Any]) -> list[Query]:
    """Every query of the dashboard: panel targets and query variables."""
    found = []
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            uid = (target.get("datasource") or panel["datasource"])["uid"]
            text = target.get("expr") if uid == PROMETHEUS_UID else target.get("rawSql")
            where = f"panel {panel['title']!r} target {target['refId']}"
            found.append(Query(dashboard, where, uid, text, target.get("legendFormat")))
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            where = f"variable ${variable['name']}"
            found.append(Query(dashboard, where, variable["datasource"]["uid"], variable["query"]))
    return found


def all_queries() -> list[Query]:
    """Every query of every committed dashboard."""
    return [query for dashboard in load_dashboards().values() for query in queries(dashboard)]


def all_values(dashboard: dict[str, Any]) -> dict[str, str]:
    """Each variable's value when "All" is chosen."""
    return {
        variable["name"]: variable["allValue"]
        for variable in dashboard.get("templating", {}).get("list", [])
    }


_VARIABLE = re.compile(r"\$\{(\w+)(?::(\w+))?\}|\$(\w+)")


def promql_for_test(query: Query) -> str:
    """The PromQL Grafana sends with every variable at "All"."""
    values = {**all_values(query.dashboard), **PROMQL_BUILTINS}

    def fill(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(3)
        if name not in values:
            raise AssertionError(f"{query}: unknown variable ${name}")
        return values[name]

    return _VARIABLE.sub(fill, query.text)


def sql_for_test(query: Query, since: datetime, until: datetime) -> str:
    """The SQL Grafana's PostgreSQL data source runs with every variable at "All" and the
    time range [since, until]."""
    text = query.text.replace("$__timeFrom()", f"'{since.isoformat()}'")
    text = text.replace("$__timeTo()", f"'{until.isoformat()}'")
    values = all_values(query.dashboard)

    def fill(match: re.Match[str]) -> str:
        name, form = match.group(1) or match.group(3), match.group(2)
        if name not in values or form not in (None, "sqlstring"):
            raise AssertionError(f"{query}: cannot fill {match.group(0)}")
        quoted = values[name].replace("'", "''")
        return f"'{quoted}'"

    return _VARIABLE.sub(fill, text)
