"""The Prometheus alert rules are valid and fire when, and only when, they should
(`promtool test rules` runs the cases of tests/prometheus/hotline_test.yml)."""

import subprocess

from tests.grafana import REPO_ROOT, RULES_FILE, need


def promtool(*args, cwd=REPO_ROOT):
    result = subprocess.run(
        [need("promtool"), *args], cwd=cwd, capture_output=True, text=True, check=False
    )
    return result.returncode, result.stdout + result.stderr


def test_the_alert_rules_are_valid():
    code, output = promtool("check", "rules", str(RULES_FILE))
    assert code == 0, output


def test_the_alert_rules_fire_as_their_unit_tests_expect():
    code, output = promtool("test", "rules", "hotline_test.yml", cwd=REPO_ROOT / "tests/prometheus")
    assert code == 0, output
