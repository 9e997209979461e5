"""`hotline status`: what the stack of this data folder runs, how often each part was
restarted, and whether each service is ready (its `/readyz`, which also says when a loop
fails or a relay is stuck)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.table import Table

from hotline.supervisor import StackStatus, process_alive
from shared.settings import Settings

NOT_RUNNING = 3
"""Exit status when no stack runs from the data folder."""


def readiness(url: str, timeout: float = 3.0) -> tuple[bool, str]:
    """Whether a service answers ready, and if not, what its `/readyz` says is wrong."""
    try:
        answer = httpx.get(f"{url}/readyz", timeout=timeout)
    except httpx.HTTPError as exc:
        return False, f"no answer ({type(exc).__name__})"
    try:
        body: dict[str, Any] = answer.json()
    except ValueError:
        return False, f"HTTP {answer.status_code}"
    if answer.status_code == 200:
        return True, "ready"
    checks = body.get("checks", {})
    wrong = [f"{name}: {value}" for name, value in checks.items() if value != "ok"]
    return False, "; ".join(wrong) or f"HTTP {answer.status_code}"


def status(
    data_dir: Annotated[
        Path | None,
        typer.Option("--data-dir", help="State folder (default .hotline, or HOTLINE_DATA_DIR)."),
    ] = None,
) -> None:
    """Show each process of the running stack, its restarts and its readiness."""
    folder = data_dir or Settings().data_dir
    found = StackStatus.load(folder)
    console = Console()
    if found is None or not process_alive(found.pid):
        console.print(f"no stack runs from {folder} (start one with `hotline up`)")
        raise typer.Exit(NOT_RUNNING)
    table = Table(title=f"hotline up (pid {found.pid}), {folder}")
    for column in ("process", "pid", "state", "restarts", "last exit", "since", "ready"):
        table.add_column(column)
    all_ready = True
    for process in found.processes:
        name = str(process["name"])
        ready_text = ""
        if name in found.urls:
            ready, ready_text = readiness(found.urls[name])
            all_ready = all_ready and ready
        last_exit = process.get("last_exit")
        table.add_row(
            name,
            str(process.get("pid") or "-"),
            str(process.get("state")),
            str(process.get("restarts", 0)),
            "-" if last_exit is None else str(last_exit),
            str(process.get("since", "")),
            ready_text,
        )
    console.print(table)
    if found.age_seconds() > 10:
        console.print(f"(status written {found.age_seconds():.0f}s ago: is `hotline up` stuck?)")
    raise typer.Exit(0 if all_ready else 1)
