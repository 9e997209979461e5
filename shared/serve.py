"""Process entry point of every service: `python -m services.<name> [serve|migrate]`.

A service's `__main__.py` passes its own `create_app`, so this library never names a
service (an import by string would be invisible to the import contracts).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import sys
from collections.abc import Callable

import uvicorn
from fastapi import FastAPI

from shared.observability import SUPERVISOR_RESTARTS, configure_logging
from shared.runtime import Runtime
from shared.settings import Settings

log = logging.getLogger(__name__)

RESTARTS_ENV = "HOTLINE_RESTARTS"
"""Set by a supervisor (`hotline up`): how many times it has restarted this service."""


def serve(create_app: Callable[[Settings], FastAPI], argv: list[str] | None = None) -> None:
    """`serve` (default) runs the HTTP server and loops; `migrate` only migrates."""
    args = sys.argv[1:] if argv is None else argv
    command = args[0] if args else "serve"
    settings = Settings()
    configure_logging(settings.log_level, settings.log_json)
    app = create_app(settings)
    runtime: Runtime = app.state.runtime
    service = runtime.spec.name
    if command not in ("serve", "migrate"):
        raise SystemExit(f"usage: python -m services.{service} [serve|migrate]")
    if command == "migrate":
        runtime.migrate()
        log.info("migrated", extra={"service": service, "schema": runtime.database.schema})
        return
    restarts = os.environ.get(RESTARTS_ENV, "")
    if restarts.isdigit():
        SUPERVISOR_RESTARTS.labels(service).set(int(restarts))
    # Everything built so far (modules, schemas, routes: over 100,000 objects) lives as long
    # as the process. Out of the collector's sight, a full collection no longer stalls the
    # loop for the 60-80 ms it took to scan them all, a pause every request waiting then shares.
    gc.freeze()
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port_of(service),
        log_config=None,
        timeout_graceful_shutdown=int(settings.shutdown_drain_seconds),
    )
    asyncio.run(uvicorn.Server(config).serve())
