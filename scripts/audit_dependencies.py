"""`make lint`'s dependency audit: pip-audit over the pinned lock file.

Fails (exit 1) on any known vulnerability. pip-audit reads vulnerability data from PyPI's
per-release JSON API; where that API does not answer (a registry mirror that serves only
packages), it skips the dependency, and a run that audited nothing would look clean. So
this says how many dependencies could not be audited, and fails on that too when
HOTLINE_AUDIT_STRICT=1 (set it wherever PyPI's JSON API is reachable).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

LOCK = Path(__file__).resolve().parent.parent / "requirements-dev.lock"


def main() -> int:
    """Run pip-audit on the lock file and judge its report."""
    result = subprocess.run(  # noqa: S603 - our own tool on our own lock file
        [
            sys.executable,
            "-m",
            "pip_audit",
            "--requirement",
            str(LOCK),
            "--no-deps",
            "--disable-pip",
            "--format",
            "json",
            "--progress-spinner",
            "off",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        report = json.loads(result.stdout)
    except json.JSONDecodeError:
        print(f"pip-audit failed (exit {result.returncode}):\n{result.stderr}", file=sys.stderr)
        return 1
    status, lines = judge(report, strict=os.environ.get("HOTLINE_AUDIT_STRICT") == "1")
    print("\n".join(lines))
    return status


def judge(report: dict[str, Any], *, strict: bool) -> tuple[int, list[str]]:
    """The exit status and what to say about a pip-audit JSON report."""
    dependencies = report["dependencies"]
    vulnerable = [d for d in dependencies if d.get("vulns")]
    skipped = [d for d in dependencies if d.get("skip_reason")]
    lines = []
    for dependency in vulnerable:
        for vuln in dependency["vulns"]:
            fixed = ", ".join(vuln.get("fix_versions", [])) or "no fix yet"
            lines.append(
                f"{dependency['name']} {dependency['version']}: {vuln['id']} (fixed in {fixed})"
            )
    audited = len(dependencies) - len(skipped)
    lines.append(
        f"dependency audit: {audited} of {len(dependencies)} audited, {len(vulnerable)} vulnerable"
    )
    if skipped:
        lines.append(
            f"  {len(skipped)} not audited: the vulnerability data did not answer "
            f"(e.g. {skipped[0]['skip_reason']})"
        )
    if vulnerable:
        return 1, lines
    if skipped and strict:
        lines.append("  HOTLINE_AUDIT_STRICT=1: an audit that could not run fails")
        return 1, lines
    return 0, lines


if __name__ == "__main__":
    sys.exit(main())
