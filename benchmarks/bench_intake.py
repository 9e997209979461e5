"""How fast is `POST /tickets`, against a bare FastAPI + asyncpg app writing the same two rows
(`benchmarks/baseline_intake.py`) in the same run?

Starts a broker and PostgreSQL of its own (the embedded ones), intake as `python -m
services.intake` and the baseline under uvicorn, one process each, then loads them with
`wrk` in turns (baseline, intake, baseline, intake, ...) so that both see the same machine.
Prints one JSON object: each run's requests/s and p50/p99 latency, the medians, and the
ratios intake/baseline, with the machine and versions.

    .venv/bin/python -m benchmarks.bench_intake                  # 3 rounds of 20 s each
    .venv/bin/python -m benchmarks.bench_intake --rounds 5 --seconds 30 --connections 32

Needs `wrk` (Debian: apt-get install wrk). Intake's per-key rate limit is lifted for the run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
from dataclasses import asdict
from typing import Any

import httpx

from benchmarks.common import (
    Run,
    embedded_servers,
    machine,
    parse_wrk,
    store_key,
    wait_answering,
    wrk,
)
from hotline.embedded import free_port
from shared.settings import Settings

BODY = {
    "city": "沈阳",
    "channel": "phone",
    "scenario": "社保查询",
    "category": "consultation",
    "content": "医保卡丢了怎么补办？",
    "citizen_phone": "+86 138-1234-5678",
    "call": {"answered": True, "wait_seconds": 12.5, "resolved_at_first_contact": False},
}


def intake_command(workers: int, port: int) -> list[str]:
    """Intake as it is run: `python -m services.intake`, or with `workers` > 1 under
    uvicorn's process manager (the README's "More than one process")."""
    if workers == 1:
        return [sys.executable, "-m", "services.intake"]
    return [
        sys.executable, "-m", "uvicorn", "services.intake.app:create_app", "--factory",
        "--workers", str(workers), "--host", "127.0.0.1", "--port", str(port),
        "--log-level", "warning", "--no-access-log",
    ]  # fmt: skip


def bench(rounds: int, seconds: int, connections: int, workers: int = 1) -> dict[str, Any]:
    if shutil.which("wrk") is None:
        raise SystemExit("needs wrk (Debian: apt-get install wrk)")
    with embedded_servers("intake") as servers:
        folder = servers.folder
        intake_port, baseline_port = free_port(), free_port()
        intake_process = servers.start(
            intake_command(workers, intake_port), HOTLINE_INTAKE_PORT=str(intake_port)
        )
        baseline_process = servers.start(
            [
                sys.executable, "-m", "uvicorn", "benchmarks.baseline_intake:app",
                "--host", "127.0.0.1", "--port", str(baseline_port),
                "--log-level", "warning", "--no-access-log",
            ]
        )  # fmt: skip
        intake = f"http://127.0.0.1:{intake_port}"
        baseline = f"http://127.0.0.1:{baseline_port}"
        wait_answering(f"{intake}/readyz", intake_process)
        wait_answering(f"{baseline}/docs", baseline_process)
        token = asyncio.run(store_key(Settings(database_url=servers.database_url)))
        check = httpx.post(
            f"{intake}/tickets", json=BODY, headers={"Authorization": f"Bearer {token}"}
        )
        check.raise_for_status()
        # A short warm-up of each, not counted.
        for url in (baseline, intake):
            wrk(f"{url}/tickets", token, 3, connections, folder, BODY)
        runs: list[Run] = []
        for _ in range(rounds):
            for name, url in (("baseline", baseline), ("intake", intake)):
                runs.append(
                    parse_wrk(
                        name, wrk(f"{url}/tickets", token, seconds, connections, folder, BODY)
                    )
                )

    def median(target: str, field: str) -> float:
        values = [float(getattr(r, field)) for r in runs if r.target == target]
        return round(statistics.median(values), 2)

    summary = {
        target: {f: median(target, f) for f in ("requests_per_second", "p50_ms", "p99_ms")}
        for target in ("baseline", "intake")
    }
    return {
        "benchmark": "intake POST /tickets vs bare FastAPI + asyncpg (ticket + outbox rows)",
        "connections": connections,
        "intake_workers": workers,
        "seconds_per_run": seconds,
        "rounds": rounds,
        "machine": machine(),
        "runs": [asdict(r) for r in runs],
        "median": summary,
        "ratio_requests_per_second": round(
            summary["intake"]["requests_per_second"] / summary["baseline"]["requests_per_second"], 3
        ),
        "ratio_p99": round(summary["intake"]["p99_ms"] / summary["baseline"]["p99_ms"], 2),
        "errors": sum(r.errors for r in runs),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1, help="intake processes (uvicorn's)")
    args = parser.parse_args(argv)
    result = bench(args.rounds, args.seconds, args.connections, args.workers)
    print(json.dumps(result, ensure_ascii=False))
    return 0 if result["errors"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
