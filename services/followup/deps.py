"""What followup's routes are given, built once by `create_app`: the database and the
settings (`retry_after_seconds` for a ticket not known yet); nothing of its own."""

from __future__ import annotations

from typing import Annotated

from shared.app import ServiceDeps, depends_on_deps

Deps = Annotated[ServiceDeps, depends_on_deps(ServiceDeps)]
