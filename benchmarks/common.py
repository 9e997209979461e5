"""What every benchmark reports beside its figures: the machine, the versions, and a figure's
spread over its runs."""

from __future__ import annotations

import os
import platform
import signal
import statistics
import subprocess
from importlib.metadata import version
from pathlib import Path
from typing import Any

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
