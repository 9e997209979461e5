"""`make bench`: every benchmark in turn, one result file, and a table against the goals.

Each benchmark runs in a process of its own, starts its own servers, measures each figure
over `--rounds` runs (at least three) beside its baseline in the same run, and prints one
JSON object; this collects them into `bench-result.json` (the machine, the versions, every
run) and prints a table: each goal of issue 13, the median with its lowest and highest run,
the baseline measured beside it, and whether the goal is met. A figure no benchmark measures
yet says so instead of a number.

    .venv/bin/python -m benchmarks.run_all                  # about 35 minutes
    .venv/bin/python -m benchmarks.run_all --quick          # smaller sizes, a few minutes
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import machine

Results = dict[str, Any]


def commands(rounds: int, quick: bool) -> dict[str, list[str]]:
    """The benchmarks and their arguments."""
    return {
        "intake": [
            "benchmarks.bench_intake",
            *("--rounds", str(rounds), "--seconds", "8" if quick else "20"),
        ],
        "intake_2_workers": [
            "benchmarks.bench_intake",
            *("--rounds", str(rounds), "--seconds", "8" if quick else "20", "--workers", "2"),
        ],
        "metrics": [
            "benchmarks.bench_metrics_ingest",
            *("--rounds", str(rounds), "--tickets", "3000" if quick else "10000"),
        ],
        "freshness": [
            "benchmarks.bench_freshness",
            *("--rounds", str(rounds), "--rate", "200", "--seconds", "10" if quick else "30"),
        ],
        "lifecycle": [
            "benchmarks.bench_sustained",
            *("--rounds", str(rounds), "--rate", "1000", "--seconds", "15" if quick else "60"),
        ],
        "memory": [
            "benchmarks.bench_sustained",
            *("--kind", "tickets", "--rounds", "1", "--rate", "200"),
            *("--seconds", "60" if quick else "600"),
        ],
        "rates": [
            "benchmarks.bench_rates",
            *("--rounds", str(rounds), "--seconds", "5" if quick else "10"),
            *("--tickets", "50000" if quick else "300000", "--repeats", "10"),
        ],
    }


@dataclass(frozen=True)
class Goal:
    """One line of the goals table: where its figure is in the results, and its bound."""

    figure: str
    goal: str
    met: Callable[[float], bool]
    value: Callable[[Results], dict[str, Any] | float | None]
    """The figure's spread (median, min, max) or a single number; None if not measured."""
    baseline: Callable[[Results], str] = lambda results: ""


def _path(*keys: str) -> Callable[[Results], Any]:
    def get(results: Results) -> Any:
        found: Any = results
        for key in keys:
            if not isinstance(found, dict) or key not in found:
                return None
            found = found[key]
        return found

    return get


def _intake_goals(key: str, how: str) -> tuple[Goal, Goal]:
    return (
        Goal(
            f"intake req/s vs the bare baseline ({how})",
            "≥ 0.6",
            lambda v: v >= 0.6,
            _path(key, "ratio_requests_per_second"),
            lambda r: f"{_path(key, 'median', 'baseline', 'requests_per_second')(r)} req/s",
        ),
        Goal(
            f"intake p99 vs the baseline's ({how})",
            "≤ 2×",
            lambda v: v <= 2.0,
            _path(key, "ratio_p99"),
            lambda r: f"p99 {_path(key, 'median', 'baseline', 'p99_ms')(r)} ms",
        ),
    )


GOALS = (
    *_intake_goals("intake", "one process"),
    *_intake_goals("intake_2_workers", "two worker processes"),
    Goal(
        "metrics apply rate, one replica (events/s)",
        "≥ 5,000",
        lambda v: v >= 5000,
        _path("metrics", "events_per_second", "metrics_1"),
        lambda r: f"no-op loop {_path('metrics', 'events_per_second', 'noop_loop', 'median')(r)}",
    ),
    Goal(
        "metrics, two replicas vs one",
        "≥ 1.5×",
        lambda v: v >= 1.5,
        _path("metrics", "two_replicas_vs_one"),
    ),
    Goal(
        "consumer loop with no-op handlers (events/s)",
        "≥ 20,000",
        lambda v: v >= 20000,
        _path("metrics", "events_per_second", "noop_loop"),
        lambda r: (
            f"aiokafka alone {_path('metrics', 'events_per_second', 'kafka_alone', 'median')(r)}"
        ),
    ),
    Goal(
        "tickets with their whole lifecycle, sustained 60 s (tickets/s)",
        "≥ 1,000",
        lambda v: v >= 1000,
        _path("lifecycle", "tickets_per_second"),
        lambda r: f"every rate exact: {_path('lifecycle', 'exact')(r)}",
    ),
    Goal(
        "freshness at 200 tickets/s, p99 (s): answered → applied by metrics",
        "< 1",
        lambda v: v < 1,
        _path("freshness", "p99_seconds"),
        lambda r: (
            f"p50 {_path('freshness', 'p50_seconds', 'median')(r)} s; "
            "/rates answers up to 0.5 s older"
        ),
    ),
    Goal(
        "/rates p99, 8 connections (ms)",
        "< 20",
        lambda v: v < 20,
        _path("rates", "concurrent", "rates", "p99_ms"),
        lambda r: (
            f"full scan {_path('rates', 'baseline_median_ms')(r)} ms, "
            f"{_path('rates', 'tickets')(r)} tickets"
        ),
    ),
    Goal(
        "/rates/by/city p99, 8 connections (ms)",
        "< 20",
        lambda v: v < 20,
        _path("rates", "concurrent", "rates_by_city", "p99_ms"),
    ),
    Goal(
        "rebuild of 5 million events (minutes, from the measured rate)",
        "< 20",
        lambda v: v < 20,
        _path("metrics", "rebuild_minutes_for_5_million_events"),
        lambda r: f"{_path('metrics', 'events_per_second', 'rebuild', 'median')(r)} events/s",
    ),
    Goal(
        "RSS per service after 10 minutes at 200 tickets/s (MB, the largest)",
        "≤ 150",
        lambda v: v <= 150,
        _path("memory", "rss_max_last_mb"),
        lambda r: ", ".join(
            f"{name} {figures['last_mb']:.0f}"
            for name, figures in (_path("memory", "rss")(r) or {}).items()
        ),
    ),
    Goal(
        "RSS growth, second quarter of those 10 minutes to the last (MB, the largest)",
        "flat: ≤ 10",
        lambda v: v <= 10,
        _path("memory", "rss_max_growth_mb"),
    ),
)


def _cell(value: dict[str, Any] | float | None) -> tuple[str, float | None]:
    if value is None:
        return "not measured by `make bench`", None
    if isinstance(value, dict):
        return f"{value['median']:,} ({value['min']:,}–{value['max']:,})", float(value["median"])
    return f"{value:,}", float(value)


def table(results: Results) -> list[str]:
    """The goals table, in Markdown."""
    lines = [
        "| figure | goal | measured: median (lowest–highest) | baseline, same run | met |",
        "|---|---|---|---|---|",
    ]
    for goal in GOALS:
        shown, median = _cell(goal.value(results))
        met = "—" if median is None else ("yes" if goal.met(median) else "**no**")
        baseline = goal.baseline(results) if median is not None else ""
        lines.append(f"| {goal.figure} | {goal.goal} | {shown} | {baseline} | {met} |")
    return lines


def run_one(module_and_args: list[str]) -> Results:
    """Run one benchmark; its JSON result (the last JSON object it printed)."""
    done = subprocess.run(
        [sys.executable, "-m", *module_and_args], capture_output=True, text=True, check=False
    )
    lines = done.stdout.splitlines()
    starts = [n for n, line in enumerate(lines) if line.startswith("{")]
    try:
        parsed: Results = json.loads("\n".join(lines[starts[-1] :]))
    except (IndexError, json.JSONDecodeError):
        tail = (done.stderr or done.stdout).strip().splitlines()[-15:]
        return {"failed": done.returncode, "output": tail}
    parsed["exit_code"] = done.returncode
    return parsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, shorter runs")
    parser.add_argument(
        "--only",
        choices=tuple(commands(3, False)),
        action="append",
    )
    parser.add_argument("--out", type=Path, default=Path("bench-result.json"))
    args = parser.parse_args(argv)
    if args.rounds < 3:
        parser.error("--rounds must be at least 3: a figure needs its spread")
    results: Results = {"machine": machine(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    for name, command in commands(args.rounds, args.quick).items():
        if args.only and name not in args.only:
            continue
        print(f"running {name}: python -m {' '.join(command)}", flush=True)
        started = time.monotonic()
        results[name] = run_one(command)
        results[name]["wall_seconds"] = round(time.monotonic() - started, 1)
    results["table"] = table(results)
    args.out.write_text(json.dumps(results, ensure_ascii=False, indent=2))
    print("\n".join(results["table"]))
    print(f"\nevery run, the machine and the versions: {args.out}")
    failed = [name for name in commands(3, False) if "failed" in results.get(name, {})]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
