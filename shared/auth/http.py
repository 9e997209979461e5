"""Who may call a route: `Allow(...)` on every route that is not an open operations route.

    caller: Annotated[Principal, Depends(Allow("operator", "auditor"))]

No key, a malformed, unknown or revoked key: 401. A known key whose role the route does not
allow: 403. The answers say no more than that (no "this key is revoked", no list of the roles
that would do). Each key gets `Settings.rate_limit` requests (429 with `Retry-After` beyond),
and each client address a few failed attempts a second, so guessing keys is slow and cheap.
"""

from __future__ import annotations

import math
import time
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from limits import RateLimitItem, parse_many
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import MovingWindowRateLimiter

from shared.auth.store import KeyStore, Principal
from shared.errors import RETRY_AFTER_HEADER, DomainError, Responses
from shared.names import Role


class Unauthenticated(DomainError):
    """No usable API key."""

    status_code = 401
    code = "unauthenticated"

    def __init__(self) -> None:
        super().__init__(
            "a valid API key is required (Authorization: Bearer <key>)",
            headers={"WWW-Authenticate": "Bearer"},
        )


class Forbidden(DomainError):
    """A valid key without the right to this route."""

    status_code = 403
    code = "forbidden"

    def __init__(self) -> None:
        super().__init__("this key may not do that")


class RateLimited(DomainError):
    """Too many requests for one key (or failed attempts from one address)."""

    status_code = 429
    code = "rate_limited"

    def __init__(self, retry_after_seconds: int) -> None:
        super().__init__(
            "too many requests; retry later",
            headers={"Retry-After": str(retry_after_seconds)},
        )


class Authenticator:
    """Turns a bearer token into a principal, and counts requests per key."""

    def __init__(self, store: KeyStore, rate_limit: str, failure_limit: str) -> None:
        self.store = store
        self._limits: list[RateLimitItem] = parse_many(rate_limit)
        self._failures: list[RateLimitItem] = parse_many(failure_limit)
        # Per process: N replicas allow N times the limit (README "Security").
        self._limiter = MovingWindowRateLimiter(MemoryStorage())

    async def authenticate(self, token: str | None, client: str) -> Principal:
        """The principal of `token`; Unauthenticated or RateLimited otherwise."""
        principal = await self.store.principal(token) if token else None
        if principal is None:
            for item in self._failures:
                await self._count(item, f"failed:{client}")
            raise Unauthenticated()
        for item in self._limits:
            await self._count(item, f"key:{principal.key_id}")
        return principal

    async def _count(self, item: RateLimitItem, key: str) -> None:
        if await self._limiter.hit(item, key):
            return
        stats = await self._limiter.get_window_stats(item, key)
        raise RateLimited(max(1, math.ceil(stats.reset_time - time.time())))


AUTH_RESPONSES: Responses = {
    401: {
        "description": "No valid API key (`Authorization: Bearer <key>`)",
        "headers": {
            "WWW-Authenticate": {
                "description": "The scheme to authenticate with",
                "schema": {"type": "string", "enum": ["Bearer"]},
                "required": True,
            }
        },
    },
    403: {"description": "This key's role may not do this"},
    429: {
        "description": "Too many requests for this key (or failed attempts from this address): "
        "retry after `Retry-After` seconds",
        "headers": {"Retry-After": {**RETRY_AFTER_HEADER, "required": True}},
    },
}
"""OpenAPI notes for every route behind `Allow` (`shared.openapi` adds them to each)."""


def authenticator_of(request: Request) -> Authenticator:
    """The app's authenticator, from its dependency holder (`shared.app.ServiceDeps`)."""
    authenticator: Authenticator = request.app.state.deps.auth
    return authenticator


async def request_authenticator(request: Request) -> Authenticator:
    """`authenticator_of` as a dependency (`async`: no worker thread for a lookup)."""
    return authenticator_of(request)


_bearer = HTTPBearer(auto_error=False, description="An API key: `hotline_<id>_<secret>`")


class Allow:
    """A route's policy: the roles that may call it. A route without one is refused by the
    policy test (tests/e2e/test_access.py), so no route is left open by mistake."""

    def __init__(self, *roles: Role) -> None:
        self.roles = frozenset(roles)

    async def __call__(
        self,
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Principal:
        authenticator = authenticator_of(request)
        client = request.client.host if request.client else "unknown"
        token = credentials.credentials if credentials is not None else None
        principal = await authenticator.authenticate(token, client)
        if principal.role not in self.roles:
            raise Forbidden()
        return principal

    def __repr__(self) -> str:
        return f"Allow({', '.join(sorted(self.roles))})"
