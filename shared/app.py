"""The FastAPI app around a service's runtime: health, readiness, metrics, error mapping, and
the one way routes reach what the service was built with (`app.state.deps`).

Each service's `deps.py` declares its dependency holder (a `ServiceDeps` subclass with what
its routes need beyond the database) and `Deps`, the `Annotated` dependency for it;
`create_app` builds the holder once. Views get a read-only transaction through `ReadDep`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse

from shared.auth.http import Authenticator
from shared.auth.routes import router as keys_router
from shared.db import Database, ReadTransaction
from shared.errors import install_error_handlers
from shared.observability import instrument
from shared.openapi import document_errors
from shared.runtime import Runtime
from shared.settings import Settings


@dataclass(frozen=True)
class ServiceDeps:
    """What every service's routes are given; a service's own holder adds its parts."""

    database: Database
    settings: Settings
    auth: Authenticator


D = TypeVar("D", bound=ServiceDeps)


def deps_of(request: Request, kind: type[D]) -> D:
    """The app's dependency holder, checked to be of the service's own kind."""
    deps = request.app.state.deps
    if not isinstance(deps, kind):
        raise TypeError(f"app.state.deps is {type(deps).__name__}, not {kind.__name__}")
    return deps


def depends_on_deps(kind: type[D]) -> Any:
    """`Depends(...)` handing a route the app's holder, checked to be `kind`: each service's
    `Deps = Annotated[TheirDeps, depends_on_deps(TheirDeps)]`."""

    # `async`: FastAPI runs a plain `def` dependency in a worker thread, a thread handoff
    # on every request for a lookup that never blocks.
    async def get(request: Request) -> D:
        return deps_of(request, kind)

    return Depends(get)


async def read_transaction(request: Request) -> AsyncIterator[ReadTransaction]:
    """FastAPI dependency: a read-only transaction, closed as soon as the route returns."""
    deps = deps_of(request, ServiceDeps)
    async with deps.database.read() as transaction:
        yield transaction


ReadDep = Annotated[ReadTransaction, Depends(read_transaction, scope="function")]
"""A view's transaction: `async def route(..., db: ReadDep)`."""


def create_service_app(runtime: Runtime, deps: ServiceDeps) -> FastAPI:
    """The FastAPI app of a service, with health, readiness, metrics and error mapping."""
    spec, settings = runtime.spec, runtime.settings

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    app = FastAPI(title=spec.title, lifespan=lifespan)
    app.state.runtime = runtime
    app.state.deps = deps
    # Every error is a problem-details answer; bodies over the limit are refused with 413 as
    # they arrive, before anything parses them.
    install_error_handlers(app, settings.retry_after_seconds, settings.max_body_bytes)
    document_errors(app)
    instrument(app, spec.name)

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, str]:
        """Alive: the process answers."""
        return {"status": "ok", "service": spec.name}

    @app.get("/readyz", tags=["ops"], responses={503: {"description": "Not ready"}})
    async def readyz() -> Any:
        """Ready: the database and the broker are reachable, no loop is failing and the relay
        is not stuck. A service that publishes also says how its outbox stands (`outbox`:
        events pending, set aside, held behind one set aside, the oldest pending one's age);
        events set aside do not make it unready."""
        readiness = await runtime.readiness()
        content: dict[str, Any] = {
            "status": "ready" if readiness.ready else "not ready",
            "checks": readiness.checks,
        }
        if readiness.outbox is not None:
            content["outbox"] = {
                "pending": readiness.outbox.pending,
                "set_aside": readiness.outbox.set_aside,
                "held": readiness.outbox.held,
                "oldest_pending_seconds": round(readiness.outbox.oldest_pending_seconds, 1),
            }
        return JSONResponse(status_code=200 if readiness.ready else 503, content=content)

    for router in (*spec.routers, keys_router):
        app.include_router(router)
    return app
