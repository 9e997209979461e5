"""Soak the embedded broker: does its memory stay bounded, and is nothing lost?

Runs `hotline up` in a temporary data folder with a memory budget for the embedded
broker, posts tickets to intake, samples the broker's resident memory, and at the end
checks that dispatch knows every ticket (so every event crossed the broker, recycles
included). Prints one JSON object.

    .venv/bin/python -m benchmarks.soak_broker --tickets 20000 --budget-mb 64
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

import httpx

from hotline.embedded import free_port
from hotline.simulator.params import DEFAULT_CITIES
from hotline.stack import rss_mb

SERVICES = ("intake", "dispatch", "followup", "metrics")


def broker_pids() -> list[int]:
    """tansu processes started from this soak's data folder (their parent is hotline up)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"tansu" in cmdline and b"broker" in cmdline:
                pids.append(int(entry.name))
    return pids


async def soak(tickets: int, budget_mb: int, concurrency: int) -> dict[str, object]:
    data_dir = Path(tempfile.mkdtemp(prefix="hotline-soak-"))
    data_dir.chmod(0o711)
    ports = {name: free_port() for name in SERVICES}
    env = {
        k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL")
    }
    env.update({f"HOTLINE_{n.upper()}_PORT": str(p) for n, p in ports.items()})
    broker_port = free_port()
    env.update(
        HOTLINE_DATA_DIR=str(data_dir),
        HOTLINE_EMBEDDED_BROKER_PORT=str(broker_port),
        HOTLINE_EMBEDDED_POSTGRES_PORT=str(free_port()),
        HOTLINE_EMBEDDED_BROKER_MEMORY_MB=str(budget_mb),
    )
    stack = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hotline.cli",
        "up",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert stack.stdout is not None
    output: list[str] = []

    async def follow() -> None:
        assert stack.stdout is not None
        async for raw in stack.stdout:
            output.append(raw.decode())

    async with asyncio.timeout(120):
        while not any("Ready." in line for line in output):
            line = await stack.stdout.readline()
            if not line:
                raise SystemExit("hotline up ended:\n" + "".join(output))
            output.append(line.decode())
    follower = asyncio.create_task(follow())
    samples: list[float] = []
    stop_sampling = asyncio.Event()

    async def sample() -> None:
        while not stop_sampling.is_set():
            samples.extend(
                rss_mb(pid)
                for pid in broker_pids()
                if f"{broker_port}".encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
            )
            await asyncio.sleep(0.5)

    sampler = asyncio.create_task(sample())
    intake = f"http://127.0.0.1:{ports['intake']}"
    dispatch = f"http://127.0.0.1:{ports['dispatch']}"
    ids: list[str] = []
    started = time.monotonic()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(tickets):
        queue.put_nowait(n)

    async def post(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            n = queue.get_nowait()
            body = {
                "city": DEFAULT_CITIES[n % 20],  # intake accepts only real cities
                "channel": "online",
                "scenario": "soak",
                "category": "help",
                "content": "soak test ticket",
                "call": {"answered": True, "resolved_at_first_contact": n % 3 == 0},
            }
            for _ in range(600):  # the APIs are away for a few seconds while recycling
                try:
                    response = await client.post(
                        f"{intake}/tickets", json=body, headers={"Idempotency-Key": f"soak-{n}"}
                    )
                    if response.status_code == 201:
                        ids.append(response.json()["ticket_id"])
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)

    async with httpx.AsyncClient(timeout=10) as client:
        await asyncio.gather(*(post(client) for _ in range(concurrency)))
        posted_seconds = time.monotonic() - started
        missing = set(ids)
        deadline = time.monotonic() + 300
        while missing and time.monotonic() < deadline:
            for ticket_id in list(missing)[:200]:
                try:
                    if (await client.get(f"{dispatch}/tickets/{ticket_id}")).status_code == 200:
                        missing.discard(ticket_id)
                except httpx.HTTPError:
                    await asyncio.sleep(0.2)
    stop_sampling.set()
    await sampler
    stack.send_signal(signal.SIGINT)
    await stack.wait()
    await follower
    recycles = sum("broker recycled" in line for line in output)
    return {
        "tickets": tickets,
        "accepted": len(ids),
        "unknown_to_dispatch": len(missing),
        "posting_seconds": round(posted_seconds, 1),
        "tickets_per_second": round(len(ids) / posted_seconds, 1),
        "budget_mb": budget_mb,
        "broker_rss_max_mb": round(max(samples, default=0.0), 1),
        "broker_recycles": recycles,
        "exit_status": stack.returncode,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickets", type=int, default=20_000)
    parser.add_argument("--budget-mb", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    result = asyncio.run(soak(args.tickets, args.budget_mb, args.concurrency))
    print(json.dumps(result))
    ok = result["accepted"] == args.tickets and result["unknown_to_dispatch"] == 0
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
