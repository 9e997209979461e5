"""What every benchmark reports beside its figures: the machine, the versions, and a figure's
spread over its runs."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import httpx

from hotline.embedded import free_port, start_broker, start_postgres
from shared.auth.keyfile import KeyEntry, generate_entries, import_entries
from shared.auth.store import standalone_key_store
from shared.names import Role, ServiceName
from shared.settings import Settings

PACKAGES = ("fastapi", "uvicorn", "asyncpg", "sqlalchemy", "aiokafka")


def machine() -> dict[str, Any]:
    """Cores, memory and the versions that decide the figures."""
    memory_kb = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal")
    )
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(memory_kb / 1024 / 1024, 1),
        "python": platform.python_version(),
        "versions": {package: version(package) for package in PACKAGES},
    }


def spread(values: list[float]) -> dict[str, Any]:
    """The median of a figure's runs, its lowest and highest, and the runs themselves."""
    return {
        "median": round(statistics.median(values), 2),
        "min": round(min(values), 2),
        "max": round(max(values), 2),
        "runs": [round(value, 2) for value in values],
    }


def stop_all(children: list[subprocess.Popen[bytes]], grace: float = 30.0) -> None:
    """SIGTERM every child at once, then wait for each; SIGKILL one that outlives `grace`."""
    for child in children:
        child.send_signal(signal.SIGTERM)
    for child in children:
        try:
            child.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


@dataclass
class Run:
    """One wrk run against one target."""

    target: str
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    """Non-2xx answers and socket errors: a run with any is not a valid figure."""


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _millis(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


def parse_wrk(target: str, output: str) -> Run:
    """The figures of `wrk --latency` output."""
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    p50 = _millis(re.search(r"^\s+50%\s+(\S+)", output, re.M).group(1))  # type: ignore[union-attr]
    p99 = _millis(re.search(r"^\s+99%\s+(\S+)", output, re.M).group(1))  # type: ignore[union-attr]
    requests = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    errors = 0
    if found := re.search(r"Non-2xx or 3xx responses: (\d+)", output):
        errors += int(found.group(1))
    if found := re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    ):
        errors += sum(int(n) for n in found.groups())
    return Run(target, rps, p50, p99, requests, errors)


def wrk(
    url: str,
    token: str,
    seconds: int,
    connections: int,
    folder: Path,
    body: dict[str, Any] | None = None,
) -> str:
    """Run wrk against `url` with the key `token` (a POST of `body` if given, else a GET);
    its text output."""
    script = folder / "request.lua"
    lines = [f'wrk.headers["Authorization"] = "Bearer {token}"']
    if body is not None:
        lines += [
            'wrk.method = "POST"',
            # A long bracket: the UTF-8 body as it is (LuaJIT reads no \u escapes).
            f"wrk.body = [==[{json.dumps(body, ensure_ascii=False)}]==]",
            'wrk.headers["Content-Type"] = "application/json"',
        ]
    script.write_text("\n".join(lines) + "\n")
    command = [
        "wrk",
        "--latency",
        "-t2",
        f"-c{connections}",
        f"-d{seconds}s",
        "-s",
        str(script),
        url,
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return done.stdout


def wait_answering(url: str, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    """Wait until `url` answers 200; RuntimeError if the process exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url} exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer")


async def store_entries(settings: Settings, entries: Sequence[KeyEntry]) -> None:
    """Keys stored (the keys' schema exists once a service has migrated)."""
    async with standalone_key_store(settings) as store:
        await import_entries(store, entries)


async def store_key(settings: Settings, role: Role = "evaluator") -> str:
    """A key of `role` stored."""
    entries = [e for e in generate_entries([], label="bench") if e.role == role]
    await store_entries(settings, entries)
    return entries[0].token


@dataclass(frozen=True)
class Service:
    """A service running as its own process, and where it answers."""

    url: str
    process: subprocess.Popen[bytes]


@dataclass
class Servers:
    """A broker and PostgreSQL of a benchmark's own, and what its service processes need."""

    folder: Path
    database_url: str
    env: dict[str, str]
    children: list[subprocess.Popen[bytes]]

    def start(self, command: list[str], **env: str) -> subprocess.Popen[bytes]:
        """A child process with the servers' environment (and `env`), logging to a file."""
        log = (self.folder / "servers.log").open("ab")
        child = subprocess.Popen(command, env={**self.env, **env}, stdout=log, stderr=log)
        self.children.append(child)
        return child

    def start_services(self, *names: ServiceName) -> dict[ServiceName, Service]:
        """`python -m services.<name>` for each, every one told the others' ports; returned
        once each answers `/readyz`."""
        ports = {name: free_port() for name in names}
        env = {f"HOTLINE_{name.upper()}_PORT": str(port) for name, port in ports.items()}
        started = {
            name: Service(
                f"http://127.0.0.1:{ports[name]}",
                self.start([sys.executable, "-m", f"services.{name}"], **env),
            )
            for name in names
        }
        for service in started.values():
            wait_answering(f"{service.url}/readyz", service.process)
        return started


@contextlib.contextmanager
def embedded_servers(name: str) -> Iterator[Servers]:
    """The embedded broker and PostgreSQL in a folder of their own, for one benchmark; every
    child started with `Servers.start` is stopped, and the folder removed, at the end. Per-key
    rate limits are lifted."""
    # SIGTERM (a benchmark stopped from outside) unwinds like Ctrl-C: servers stopped too.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    folder = Path(tempfile.mkdtemp(prefix=f"hotline-bench-{name}-"))
    folder.chmod(0o711)  # PostgreSQL runs as an unprivileged user when we are root
    broker = start_broker(folder)
    postgres = start_postgres(folder)
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        "DATABASE_URL": postgres.url,
        "HOTLINE_DATA_DIR": str(folder / "data"),
        "HOTLINE_LOG_LEVEL": "WARNING",
        "HOTLINE_RATE_LIMIT": "1000000/second",
        "HOTLINE_KAFKA_IDEMPOTENT_PRODUCER": "false",
    }
    servers = Servers(folder, postgres.url, env, [])
    try:
        yield servers
    finally:
        stop_all(servers.children)
        broker.stop()
        postgres.stop()
        shutil.rmtree(folder, ignore_errors=True)
