"""The Grafana dashboards: committed JSON is what the generator writes, every panel says
where its data comes from, every series is named, and every PromQL query parses.

Whether each query finds data is tests/e2e/test_prometheus.py's job.
"""

import json
import re
import subprocess

from tests.grafana import (
    GRAFANA_DIR,
    POSTGRES_UID,
    PROMETHEUS_UID,
    all_queries,
    load_dashboards,
    load_generator,
    need,
    panels,
    promql_for_test,
)

LABEL_VALUES = re.compile(r"^label_values\((\w+), (\w+)\)$")


def test_the_committed_dashboards_are_what_generate_py_writes():
    generator = load_generator()
    stale = [str(path.relative_to(GRAFANA_DIR)) for path in generator.stale_files()]
    assert stale == [], (
        f"{stale} differ from deploy/grafana/generate.py's output: "
        "run `.venv/bin/python deploy/grafana/generate.py` and commit the JSON"
    )
    assert {path.name for path in generator.rendered()} == set(load_dashboards())


def test_generating_twice_gives_the_same_text():
    generator = load_generator()
    assert generator.rendered() == generator.rendered()


def test_both_dashboards_have_fixed_uids():
    dashboards = load_dashboards()
    assert {name: d["uid"] for name, d in dashboards.items()} == {
        "hotline-overview.json": "hotline-overview",
        "unanswered-work-orders.json": "unanswered-work-orders",
    }
    for dashboard in dashboards.values():
        ids = [panel["id"] for panel in dashboard["panels"]]
        assert len(ids) == len(set(ids)), dashboard["title"]


def test_every_panel_and_query_names_one_of_the_two_data_sources():
    for dashboard in load_dashboards().values():
        for panel in panels(dashboard):
            assert panel["datasource"]["uid"] in {PROMETHEUS_UID, POSTGRES_UID}, panel["title"]
            for target in panel["targets"]:
                if "datasource" in target:
                    assert target["datasource"] == panel["datasource"], panel["title"]
        for variable in dashboard["templating"]["list"]:
            assert variable["datasource"]["uid"] in {PROMETHEUS_UID, POSTGRES_UID}


def test_every_prometheus_panel_names_its_series_in_a_visible_legend():
    for dashboard in load_dashboards().values():
        for panel in panels(dashboard):
            if panel["datasource"]["uid"] != PROMETHEUS_UID:
                continue
            for target in panel["targets"]:
                assert target.get("legendFormat"), (panel["title"], target["refId"])
            if panel["type"] == "timeseries":
                shown = panel["options"]["legend"]
                assert shown["showLegend"] is True, panel["title"]
                assert shown["displayMode"] != "hidden", panel["title"]


def test_the_overview_shows_what_issue_6_asks_for():
    overview = load_dashboards()["hotline-overview.json"]
    text = json.dumps(overview, ensure_ascii=False)
    for rate in (
        "reply_timeliness_rate",
        "unanswered_rate",
        "transfer_failure_rate",
        "three_way_failure_rate",
        "connection_rate",
        "callback_rate",
        "satisfaction_rate",
    ):
        assert f'rate=\\"{rate}\\"' in text, rate
    for series in (
        "hotline_avg_wait_seconds",
        "hotline_callbacks_total",
        "hotline_consumer_lag",
        "hotline_outbox_backlog",
    ):
        assert series in text, series
    titles = [panel["title"] for panel in panels(overview)]
    assert any("First-contact resolution by scenario" in title for title in titles)


def test_every_promql_query_parses(tmp_path):
    """promtool has no command to parse an expression, but it parses every rule's: each
    query (variables filled in) becomes a recording rule of a throwaway rules file."""
    promtool = need("promtool")
    rules = []
    for number, query in enumerate(all_queries()):
        if query.datasource_uid != PROMETHEUS_UID or LABEL_VALUES.match(query.text):
            continue
        rules.append({"record": f"dashboard:query_{number}", "expr": promql_for_test(query)})
    assert len(rules) > 10
    rules_file = tmp_path / "dashboard_queries.yml"
    # JSON is YAML: no YAML library needed.
    rules_file.write_text(json.dumps({"groups": [{"name": "dashboards", "rules": rules}]}))
    result = subprocess.run(
        [promtool, "check", "rules", str(rules_file)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_label_values_variables_are_well_formed():
    for query in all_queries():
        if query.datasource_uid == PROMETHEUS_UID and query.where.startswith("variable"):
            assert LABEL_VALUES.match(query.text), query


def test_provisioning_names_the_data_sources_and_the_dashboards_folder():
    datasources = (GRAFANA_DIR / "provisioning" / "datasources" / "datasources.yml").read_text()
    assert re.search(r"^\s+uid: prometheus$", datasources, re.M)
    assert re.search(r"^\s+uid: hotline-postgres$", datasources, re.M)
    assert "url: http://prometheus:9090" in datasources
    assert "url: postgres:5432" in datasources
    assert "password: $HOTLINE_GRAFANA_PG_PASSWORD" in datasources
    providers = (GRAFANA_DIR / "provisioning" / "dashboards" / "dashboards.yml").read_text()
    assert "path: /var/lib/grafana/dashboards" in providers


def test_the_overview_shows_what_issue_14_asks_for():
    overview = load_dashboards()["hotline-overview.json"]
    text = json.dumps(overview, ensure_ascii=False)
    rates = ("definite_reply_rate", "answered_within_15s_rate", "first_contact_resolution_rate")
    assert [rate for rate in rates if f'rate=\\"{rate}\\"' not in text] == []
    series = (
        "hotline_overdue_work_orders",
        "hotline_overdue_working_days_max",
        "hotline_events_dead_lettered_total",
        "hotline_rates_refreshed_timestamp_seconds",
    )
    assert [name for name in series if name not in text] == []
    by_department = {
        panel["title"]: panel["targets"][0]["rawSql"]
        for panel in panels(overview)
        if panel["title"].endswith("by department (tickets submitted in the range)")
    }
    assert len(by_department) == 3
    for rate in ("reply_timeliness_rate", "unanswered_rate", "transfer_failure_rate"):
        assert sum(f"AS {rate}" in sql for sql in by_department.values()) == 1, rate
    assert all("grouping_set = 9" in sql for sql in by_department.values())
