"""The Grafana dashboards as code: "Hotline overview" and "Unanswered work orders".

Each dashboard is a table of rows and panels in `hotline_dashboards/` (`overview.py`,
`unanswered.py`; the row types in `spec.py`), which `hotline_dashboards/build.py` turns into
grafana-foundation-sdk objects. This script writes them as JSON under `dashboards/`, which
is committed and which Grafana provisions (see `provisioning/`). After changing a
dashboard, rewrite the JSON:

    .venv/bin/python deploy/grafana/generate.py           # rewrite dashboards/*.json
    .venv/bin/python deploy/grafana/generate.py --check   # exit 1 if they differ

Queries follow what the services export (`shared/observability.py`,
`services/metrics/prometheus.py`): every metrics replica exports the same outcome totals
and rates, so those are aggregated across instances with `max`, never `sum`. What
Prometheus cannot hold (scenario, a free-text dimension; the rates per department; the
unanswered work orders themselves) is read from the metrics service's schema in PostgreSQL.
tests/e2e/test_prometheus.py runs every query against a real Prometheus and PostgreSQL.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as dashboard_models

HERE = Path(__file__).resolve().parent
DASHBOARDS_DIR = HERE / "dashboards"

# deploy/grafana is a folder of scripts, not an installed package: running this file puts
# its folder on sys.path, but tests/grafana.py loads it with importlib, which does not. Put
# it there either way so `hotline_dashboards` imports the same in both.
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from hotline_dashboards import overview, unanswered  # noqa: E402
from hotline_dashboards.build import build_dashboard  # noqa: E402
from hotline_dashboards.spec import Dashboard  # noqa: E402

DASHBOARDS: list[Dashboard] = [overview.DASHBOARD, unanswered.DASHBOARD]


def render(model: dashboard_models.Dashboard) -> str:
    """Stable JSON: keys sorted, two-space indent, UTF-8 text, one trailing newline."""
    return json.dumps(model, cls=JSONEncoder, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def rendered() -> dict[Path, str]:
    """Each dashboard file (named for its uid) and its text."""
    return {
        DASHBOARDS_DIR / f"{spec.uid}.json": render(build_dashboard(spec)) for spec in DASHBOARDS
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
