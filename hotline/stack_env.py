"""Where the tools find the broker and the database: the environment, else the embedded
stack that `hotline up` runs from the data folder (it writes `<data dir>/stack.env`)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from shared.settings import Settings

STACK_ENV_FILE = "stack.env"


def read_stack_env(data_dir: Path) -> dict[str, str]:
    """The `NAME=value` lines of `<data_dir>/stack.env` (empty if there is none)."""
    path = data_dir / STACK_ENV_FILE
    if not path.exists():
        return {}
    found = {}
    for line in path.read_text().splitlines():
        name, _, value = line.partition("=")
        if name and value:
            found[name.strip()] = value.strip()
    return found


def stack_settings(environ: Mapping[str, str] = os.environ) -> Settings:
    """The settings, with the embedded stack's broker and database for those the
    environment does not name (`KAFKA_BOOTSTRAP_SERVERS`, `DATABASE_URL`, or the same with
    the `HOTLINE_` prefix)."""
    settings = Settings()
    found = read_stack_env(settings.data_dir)

    def from_stack(name: str) -> str | None:
        unset = name not in environ and f"HOTLINE_{name}" not in environ
        return found.get(name) if unset else None

    update: dict[str, str] = {}
    if kafka := from_stack("KAFKA_BOOTSTRAP_SERVERS"):
        update["kafka_bootstrap_servers"] = kafka
    if database := from_stack("DATABASE_URL"):
        # Through the constructor, so the URL gets the driver the field's validator adds.
        update["database_url"] = Settings(database_url=database).database_url
    return settings.model_copy(update=update)
