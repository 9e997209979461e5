"""The whole ticket list as CSV, streamed: rows a second, and the metrics service's resident
memory while it streams, against the same service idle just before (the baseline of the same
run).

Starts the embedded broker and PostgreSQL of its own and metrics as its own process, fills
metrics's ticket facts with `--tickets` counted tickets straight in SQL (the list reads only
the facts), then asks `GET /tickets?format=csv` for all of them and reads the answer as it
comes, sampling the service's RSS every 0.2 s. Prints one JSON object: rows, seconds, rows a
second, RSS idle, the highest RSS while streaming, and the growth.

    .venv/bin/python -m benchmarks.bench_export --tickets 1000000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

import asyncpg
import httpx

from benchmarks.common import embedded_servers, machine, store_key
from hotline.stack import rss_mb
from shared.settings import Settings

FILL = """
INSERT INTO "{schema}".ticket_facts
    (ticket_id, counted, city, channel, scenario, submitted_at, category, evaluator,
     answered, wait_seconds, resolved_at_first_contact)
SELECT 'bench-' || lpad(n::text, 8, '0'), true,
       (ARRAY['沈阳', '大连', '鞍山', '抚顺'])[1 + n % 4],
       CASE WHEN n % 3 = 0 THEN 'online' ELSE 'phone' END,
       '供暖', now() - make_interval(secs => n), 'complaint', '评估员' || (n % 17),
       true, 8.5, n % 2 = 0
FROM generate_series(1, $1) AS n
"""


async def run(tickets: int) -> dict[str, Any]:
    with embedded_servers("export") as servers:
        metrics = servers.start_services("metrics")["metrics"]
        settings = Settings(database_url=servers.database_url)
        connection = await asyncpg.connect(servers.database_url.replace("+asyncpg", ""))
        try:
            schema = settings.schema_of("metrics")
            await connection.execute(FILL.format(schema=schema), tickets)
            await connection.execute(f'VACUUM ANALYZE "{schema}".ticket_facts')
        finally:
            await connection.close()
        token = await store_key(settings, "auditor")
        pid = metrics.process.pid
        idle = rss_mb(pid)
        peak, rows = idle, 0
        started = time.perf_counter()
        headers = {"Authorization": f"Bearer {token}"}
        async with (
            httpx.AsyncClient(base_url=metrics.url, timeout=600, headers=headers) as client,
            client.stream("GET", "/tickets", params={"format": "csv"}) as response,
        ):
            response.raise_for_status()
            last_sample = 0.0
            async for _ in response.aiter_lines():
                rows += 1
                now = time.perf_counter()
                if now - last_sample > 0.2:
                    peak, last_sample = max(peak, rss_mb(pid)), now
        seconds = time.perf_counter() - started
        peak = max(peak, rss_mb(pid))
    rows -= 1  # the header line
    if rows != tickets:
        raise SystemExit(f"{rows} rows streamed of {tickets}")
    return {
        "benchmark": "export",
        "command": f"python -m benchmarks.bench_export --tickets {tickets}",
        "machine": machine(),
        "rows": rows,
        "seconds": round(seconds, 1),
        "rows_per_second": round(rows / seconds),
        "rss_idle_mb": round(idle, 1),
        "rss_peak_streaming_mb": round(peak, 1),
        "rss_growth_mb": round(peak - idle, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickets", type=int, default=1_000_000)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.tickets)), ensure_ascii=False, indent=2))


if __name__ == "__main__":
    main()
