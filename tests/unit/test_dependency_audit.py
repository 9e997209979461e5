"""`make lint`'s dependency audit fails on a known vulnerability, and never passes silently
when it could not audit."""

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "audit_dependencies.py"
spec = importlib.util.spec_from_file_location("audit_dependencies", SCRIPT)
audit = importlib.util.module_from_spec(spec)
spec.loader.exec_module(audit)

CLEAN = {"name": "fastapi", "version": "0.165.0", "vulns": []}
VULNERABLE = {
    "name": "jinja2",
    "version": "2.4.1",
    "vulns": [{"id": "PYSEC-2019-217", "fix_versions": ["2.10.1"]}],
}
SKIPPED = {"name": "aiokafka", "skip_reason": "Dependency not found on PyPI"}


def test_a_known_vulnerability_fails_and_is_named():
    status, lines = audit.judge({"dependencies": [CLEAN, VULNERABLE]}, strict=False)
    assert status == 1
    assert "jinja2 2.4.1: PYSEC-2019-217 (fixed in 2.10.1)" in lines


def test_a_clean_audit_passes():
    status, lines = audit.judge({"dependencies": [CLEAN]}, strict=True)
    assert status == 0
    assert lines == ["dependency audit: 1 of 1 audited, 0 vulnerable"]


def test_dependencies_that_could_not_be_audited_are_said_and_fail_when_strict():
    report = {"dependencies": [CLEAN, SKIPPED]}
    lenient, lines = audit.judge(report, strict=False)
    strict, _ = audit.judge(report, strict=True)
    assert lenient == 0
    assert strict == 1
    assert lines[0] == "dependency audit: 1 of 2 audited, 0 vulnerable"
    assert "1 not audited" in lines[1]
