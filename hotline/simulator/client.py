"""The HTTP side of the simulator: where the services answer, one client each, the API keys
it plays each role with, what refusals mean (retry or give up) and the two reads every run
makes (`/healthz`, `/rates`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any, Final

import httpx

from shared.auth.keyfile import KeyRing
from shared.names import SERVICE_NAMES, Role, ServiceName
from shared.settings import Settings

MIN_RETRY_SECONDS: Final = 0.05
CONNECT_ATTEMPTS: Final = 15
"""Tries of a request that did not get through (refused, or its answer lost) before its
service counts as down; with `connect_backoff` between them, about 50 s: long enough for a
supervisor to restart a service, or the whole stack after its broker died."""
CONNECT_BACKOFF_SECONDS: Final = (0.4, 4.0)
"""The first pause after a failed try, and the longest: it doubles up to that."""


def connect_backoff(failed: int) -> float:
    """Seconds to wait after the `failed`-th try in a row that did not get through."""
    first, longest = CONNECT_BACKOFF_SECONDS
    return float(min(first * 2 ** (failed - 1), longest))


PLAYED_ROLES: Final[tuple[Role, ...]] = ("evaluator", "operator", "callback", "auditor")
"""The roles a run plays besides the departments' desks (the auditor reads `/rates`)."""


class SimulatorError(Exception):
    """The run could not be played as planned; the message says what to do."""


class ServiceUnreachable(SimulatorError):
    """A service did not accept a connection, or a request's fate is unknown."""


class RequestRefused(SimulatorError):
    """A service refused a request the simulator thought valid (a bug on one side)."""


@dataclass(frozen=True)
class Endpoints:
    """Where each service answers."""

    intake: str
    dispatch: str
    followup: str
    metrics: str

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: str | None) -> Endpoints:
        """`http://<host>:<port>` from the settings, any of them overridden."""
        urls = {
            name: overrides.get(name) or f"http://{settings.host}:{settings.port_of(name)}"
            for name in SERVICE_NAMES
        }
        return cls(**urls)


@dataclass
class ServiceClients:
    """One HTTP client per service (tests pass in-process ASGI clients), and the keys: each
    step is played with the role that does it in real life."""

    intake: httpx.AsyncClient
    dispatch: httpx.AsyncClient
    followup: httpx.AsyncClient
    metrics: httpx.AsyncClient
    keys: KeyRing

    def of(self, service: ServiceName) -> httpx.AsyncClient:
        """The client of `service`."""
        client: httpx.AsyncClient = getattr(self, service)
        return client

    def auth(self, role: Role, department: str | None = None) -> dict[str, str]:
        """The Authorization header of the key for `role` (a department's for `department`)."""
        try:
            token = self.keys.token(role, department)
        except KeyError as exc:
            raise SimulatorError(f"{exc.args[0]}: add it to the keys file (--keys)") from exc
        return {"Authorization": f"Bearer {token}"}


def check_keys(keys: KeyRing, departments: Iterable[str]) -> None:
    """SimulatorError naming every role and department the run needs a key for and lacks."""
    missing: list[str] = []
    for role in PLAYED_ROLES:
        try:
            keys.token(role)
        except KeyError:
            missing.append(role)
    missing += [f"department {d}" for d in sorted(set(departments) - keys.departments)]
    if missing:
        raise SimulatorError(
            f"no API key for {', '.join(missing)}: give a keys file with --keys (`hotline up` "
            "writes one to <data dir>/api-keys.toml; `hotline keys new-file` makes one)"
        )


@contextlib.asynccontextmanager
async def open_clients(
    endpoints: Endpoints, timeout: float, keys: KeyRing
) -> AsyncIterator[ServiceClients]:
    """Clients for the services at `endpoints`, closed on exit."""
    async with contextlib.AsyncExitStack() as stack:
        clients = {
            name: await stack.enter_async_context(
                httpx.AsyncClient(base_url=getattr(endpoints, name), timeout=timeout)
            )
            for name in SERVICE_NAMES
        }
        yield ServiceClients(**clients, keys=keys)


def retry_delay(response: httpx.Response) -> float | None:
    """Seconds to wait before retrying, or None when retrying cannot help."""
    code = None
    with contextlib.suppress(ValueError, AttributeError):
        code = response.json().get("code")
    retryable = (response.status_code == 409 and code == "not_yet_known") or (
        response.status_code == 503
    )
    if not retryable:
        return None
    try:
        seconds = float(response.headers.get("Retry-After", "1"))
    except ValueError:
        seconds = 1.0
    return max(MIN_RETRY_SECONDS, seconds)


def unreachable(
    service: ServiceName, client: httpx.AsyncClient, exc: Exception
) -> ServiceUnreachable:
    """The error for a service that does not answer, with what to check."""
    return ServiceUnreachable(
        f"{service} is unreachable at {client.base_url} ({type(exc).__name__}: {exc}); "
        f"is the stack running (`hotline up`)? Other addresses: --{service}-url"
    )


async def check_reachable(clients: ServiceClients, services: tuple[ServiceName, ...]) -> None:
    """ServiceUnreachable naming the first of `services` whose /healthz does not answer."""
    for service in services:
        client = clients.of(service)
        try:
            response = await client.get("/healthz")
        except httpx.TransportError as exc:
            raise unreachable(service, client, exc) from exc
        if not response.is_success:
            raise ServiceUnreachable(
                f"{service} at {client.base_url} answers /healthz with {response.status_code}"
            )


async def read_rates(clients: ServiceClients, params: dict[str, str]) -> dict[str, Any]:
    """`GET /rates` with `params`: the `rates` object."""
    client = clients.metrics
    failed = 0
    while True:
        try:
            response = await client.get("/rates", params=params, headers=clients.auth("auditor"))
            break
        except httpx.TransportError as exc:  # a read is safe to repeat
            failed += 1
            if failed >= CONNECT_ATTEMPTS:
                raise unreachable("metrics", client, exc) from exc
            await asyncio.sleep(connect_backoff(failed))
    if not response.is_success:
        raise RequestRefused(
            f"metrics: GET /rates answered {response.status_code}: {response.text}"
        )
    rates: dict[str, Any] = response.json()["rates"]
    return rates
