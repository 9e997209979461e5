"""One metrics consumer process for the benchmarks, until SIGTERM: the real service, or with
`--noop` the same consumer loop whose handlers do nothing (the loop's own cost).

    python -m benchmarks.metrics_worker [--noop]      # settings from the environment
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from pathlib import Path
from typing import Any

import services.metrics
from services.metrics.app import create_app
from services.metrics.projections import projections as metrics_projections
from shared.app import ServiceDeps, create_service_app
from shared.db import Transaction
from shared.events import Event
from shared.names import CONSUMES
from shared.projections import Projections
from shared.runtime import Runtime, ServiceSpec
from shared.settings import Settings


async def record_only(tx: Transaction, event: Event) -> None:
    """The baseline handler: nothing but the loop's own bookkeeping."""


def noop_app(settings: Settings) -> Any:
    """The metrics consumer with handlers that do nothing, for the event types metrics
    handles."""
    projections = Projections[Transaction]()
    for event_type in metrics_projections.event_types:
        projections.on(event_type)(record_only)
    spec = ServiceSpec(
        name="metrics",
        title="baseline",
        migrations=Path(services.metrics.__file__).parent / "migrations",
        routers=[],
        publishes=False,
        consumes=CONSUMES["metrics"],
        projections=projections,
    )
    runtime = Runtime(spec, settings)
    deps = ServiceDeps(database=runtime.database, settings=settings, auth=runtime.auth)
    return create_service_app(runtime, deps)


async def run(noop: bool) -> None:
    settings = Settings()
    app = noop_app(settings) if noop else create_app(settings)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with app.router.lifespan_context(app):
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--noop", action="store_true")
    asyncio.run(run(parser.parse_args().noop))


if __name__ == "__main__":
    main()
