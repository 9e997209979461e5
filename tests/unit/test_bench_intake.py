"""The benchmarks read wrk's figures right, and counts failed answers as errors."""

from __future__ import annotations

from benchmarks.common import parse_wrk

WRK_OUTPUT = """\
Running 20s test @ http://127.0.0.1:40123/tickets
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   150.12ms   40.01ms 500.00ms   70.00%
    Req/Sec   107.00     20.00   160.00     70.00%
  Latency Distribution
     50%  149.28ms
     75%  170.00ms
     90%  200.00ms
     99%    1.26s
  4288 requests in 20.04s, 1.02MB read
  Socket errors: connect 0, read 2, write 0, timeout 3
  Non-2xx or 3xx responses: 7
Requests/sec:    213.94
Transfer/sec:     52.10KB
"""


def test_wrk_figures_are_read_with_their_units_and_failures_counted():
    run = parse_wrk("intake", WRK_OUTPUT)
    assert run.requests_per_second == 213.94
    assert run.p50_ms == 149.28
    assert run.p99_ms == 1260.0
    assert run.requests == 4288
    assert run.errors == 7 + 2 + 3


def test_a_clean_run_has_no_errors():
    clean = WRK_OUTPUT.replace("  Socket errors: connect 0, read 2, write 0, timeout 3\n", "")
    clean = clean.replace("  Non-2xx or 3xx responses: 7\n", "").replace(
        "50%  149.28ms", "50%  900.00us"
    )
    run = parse_wrk("baseline", clean)
    assert run.errors == 0
    assert run.p50_ms == 0.9


def test_the_goals_table_says_met_not_met_and_not_measured():
    from benchmarks.run_all import table

    results = {
        "intake": {
            "ratio_requests_per_second": 0.45,
            "ratio_p99": 1.8,
            "median": {"baseline": {"requests_per_second": 1200.0, "p99_ms": 50.0}},
        },
        "metrics": {
            "events_per_second": {
                "metrics_1": {"median": 6000.0, "min": 5500.0, "max": 6100.0},
                "noop_loop": {"median": 15000.0, "min": 14000.0, "max": 16000.0},
            },
        },
    }
    rows = {line.split(" | ")[0].lstrip("| "): line for line in table(results)[2:]}
    assert rows["intake req/s vs the bare baseline (one process)"].endswith("| **no** |")
    assert "1200.0 req/s" in rows["intake req/s vs the bare baseline (one process)"]
    assert rows["intake p99 vs the baseline's (one process)"].endswith("| yes |")
    assert "6,000.0 (5,500.0–6,100.0)" in rows["metrics apply rate, one replica (events/s)"]
    assert rows["metrics apply rate, one replica (events/s)"].endswith("| yes |")
    assert rows["consumer loop with no-op handlers (events/s)"].endswith("| **no** |")
    # Not in the results (no rates run), or not measured by any benchmark yet:
    assert "not measured" in rows["/rates p99, 8 connections (ms)"]
    assert "not measured" in rows["intake req/s vs the bare baseline (two worker processes)"]
    assert (
        "not measured" in rows["freshness at 200 tickets/s, p99 (s): answered → applied by metrics"]
    )
