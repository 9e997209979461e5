"""`hotline metrics ...`: operations on the metrics service's figures."""

from __future__ import annotations

import os
import subprocess
from typing import Annotated

import typer

from hotline.service_processes import service_command
from hotline.stack_env import stack_settings

app = typer.Typer(help="Operate on the metrics service's figures.", no_args_is_help=True)


@app.command()
def rebuild(
    batch: Annotated[
        int, typer.Option("--batch", min=1, help="Events applied per transaction.")
    ] = 5000,
    keep_old: Annotated[
        bool, typer.Option("--keep-old", help="Keep the old schema aside (`<schema>__old`).")
    ] = False,
) -> None:
    """Recompute every fact and rate from the event history, with a progress bar.

    The service keeps answering with the old figures until the new ones are complete; then
    they swap in one short transaction, and the events that came meanwhile are applied too.
    """
    settings = stack_settings()
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "DATABASE_URL": settings.database_url,
    }
    args = ["rebuild", "--batch", str(batch), *(["--keep-old"] if keep_old else [])]
    done = subprocess.run(service_command("metrics", *args), env=env, check=False)  # noqa: S603
    raise typer.Exit(done.returncode)
