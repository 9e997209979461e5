"""The services as the CLI knows them: processes run from their modules, never imported
(an import-linter contract keeps it so)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping, Sequence

from shared.names import ServiceName


class MigrationFailed(RuntimeError):
    """A service's `migrate` command exited with an error."""


def service_command(name: ServiceName, *args: str) -> list[str]:
    """`python -m services.<name> [args]` with this interpreter."""
    return [sys.executable, "-m", f"services.{name}", *args]


def migrate(names: Sequence[ServiceName], env: Mapping[str, str] | None = None) -> None:
    """Run each service's `migrate` command (all at once: each takes only its own schema's
    lock); MigrationFailed naming the services that failed, with the end of their output."""
    running = {
        name: subprocess.Popen(  # noqa: S603 - our own interpreter and module
            service_command(name, "migrate"),
            env=None if env is None else dict(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for name in names
    }
    failed = []
    for name, process in running.items():
        output, _ = process.communicate()
        if process.returncode != 0:
            tail = output.decode(errors="replace").strip().splitlines()[-10:]
            failed.append(f"{name} (exit {process.returncode}):\n  " + "\n  ".join(tail))
    if failed:
        raise MigrationFailed("migrations failed: " + "\n".join(failed))
