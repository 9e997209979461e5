"""Process entry point shared by `python -m services.<name>` and `hotline serve <name>`."""

from __future__ import annotations

import asyncio
import importlib
import logging
import sys

import uvicorn
from fastapi import FastAPI

from shared.migrations import upgrade
from shared.observability import configure_logging
from shared.settings import ServiceName, Settings

log = logging.getLogger(__name__)


def load_app(service: ServiceName, settings: Settings) -> FastAPI:
    """Import `services.<service>.app` and build its app (no wiring happens at import)."""
    module = importlib.import_module(f"services.{service}.app")
    app: FastAPI = module.create_app(settings)
    return app


def migrate(service: ServiceName, settings: Settings) -> None:
    """Bring the service's schema to the newest revision."""
    upgrade(f"services.{service}", settings.database_url, settings.schema_of(service))


def serve(service: ServiceName, argv: list[str] | None = None) -> None:
    """`serve` (default) runs the HTTP server and loops; `migrate` only migrates."""
    args = sys.argv[1:] if argv is None else argv
    settings = Settings()
    configure_logging(settings.log_level, settings.log_json)
    command = args[0] if args else "serve"
    if command == "migrate":
        migrate(service, settings)
        log.info("migrated", extra={"service": service, "schema": settings.schema_of(service)})
        return
    if command != "serve":
        raise SystemExit(f"usage: python -m services.{service} [serve|migrate]")
    config = uvicorn.Config(
        load_app(service, settings),
        host=settings.host,
        port=settings.port_of(service),
        log_config=None,
        timeout_graceful_shutdown=int(settings.shutdown_drain_seconds),
    )
    asyncio.run(uvicorn.Server(config).serve())
