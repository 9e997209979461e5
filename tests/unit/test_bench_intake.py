"""The intake benchmark reads wrk's figures right, and counts failed answers as errors."""

from __future__ import annotations

from benchmarks.bench_intake import parse_wrk

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
