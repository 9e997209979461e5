"""Where keys live: the `api_keys` table of the `auth` schema, which every service reads.

The schema belongs to no service: access control is the same for all of them, and a key
revoked once must stop working everywhere. Each service reads it with its own connection
pool (the table is named `auth.api_keys` and the schema name is translated to the
configured one, so tests can prefix it) and trusts what it read for a few seconds
(`Settings.auth_cache_seconds`), so a revoked key stops working within that.
"""

from __future__ import annotations

import hmac
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.auth.tokens import Token, new_token, parse_token
from shared.clock import utc_now
from shared.db import make_engine
from shared.errors import Conflict, DomainError, NotFound
from shared.events import Actor
from shared.names import ROLES, Role
from shared.settings import Settings

AUTH_MIGRATIONS = Path(__file__).parent / "migrations"
"""The `auth` schema's migrations: every service runs them (they take their own lock)."""

AUTH_SCHEMA = "auth"
"""The schema name in the table definitions; translated to `Settings.auth_schema()`."""


def _define_api_keys(metadata: sa.MetaData) -> sa.Table:
    return sa.Table(
        "api_keys",
        metadata,
        sa.Column("key_id", sa.String(16), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("department", sa.String(64)),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
        sa.CheckConstraint(
            "(role = 'department') = (department IS NOT NULL)", name="department_key_has_department"
        ),
    )


AUTH_METADATA = sa.MetaData(schema=AUTH_SCHEMA)
api_keys = _define_api_keys(AUTH_METADATA)
"""Keys: only a hash of each token; a department key names its department."""


def schemaless_metadata() -> sa.MetaData:
    """The auth tables without a schema name, as migrations see them (their `search_path`
    is the configured auth schema)."""
    metadata = sa.MetaData()
    _define_api_keys(metadata)
    return metadata


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key that authenticated the request."""

    key_id: str
    name: str
    role: Role
    department: str | None

    @property
    def actor(self) -> Actor:
        """What the events this request causes say about who caused them."""
        return Actor(key_id=self.key_id, role=self.role, department=self.department)


@dataclass(frozen=True)
class KeyRecord:
    """A stored key, as listed (never the secret)."""

    key_id: str
    name: str
    role: Role
    department: str | None
    created_at: datetime
    revoked_at: datetime | None


class InvalidKeySpec(DomainError):
    """A key that cannot be made as asked (e.g. a department key without its department)."""

    status_code = 422
    code = "invalid_key"


_PRINTABLE = re.compile(r"[^\x00-\x1f\x7f]+")
_KEY_ID = re.compile(r"[0-9a-f]{16}")


def check_spec(role: str, department: str | None, name: str = "key") -> Role:
    """The role, if it, the department and the name fit together; InvalidKeySpec naming the
    field (names are stored and listed: no control characters, at most 100/64 long)."""
    if not 1 <= len(name) <= 100 or not _PRINTABLE.fullmatch(name):
        raise InvalidKeySpec("name: 1 to 100 characters, no control characters", field="body.name")
    if department is not None and (
        not 1 <= len(department) <= 64 or not _PRINTABLE.fullmatch(department)
    ):
        raise InvalidKeySpec(
            "department: 1 to 64 characters, no control characters", field="body.department"
        )
    for known in ROLES:
        if role == known:
            if (role == "department") != (department is not None):
                raise InvalidKeySpec(
                    "department: required for a department key, and only for one",
                    field="body.department",
                )
            return known
    raise InvalidKeySpec(f"role: one of {', '.join(ROLES)}", field="body.role")


class KeyStore:
    """Reads and writes keys; caches what it read for `cache_seconds`."""

    def __init__(self, engine: AsyncEngine, schema: str, cache_seconds: float) -> None:
        self._engine = engine
        self._options = {"schema_translate_map": {AUTH_SCHEMA: schema}}
        self._cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, tuple[str, Principal] | None]] = {}

    async def _execute(self, statement: sa.Executable, *, write: bool = False) -> Any:
        async with self._engine.connect() as connection:
            result = await connection.execute(statement.execution_options(**self._options))
            rows = result.mappings().all() if result.returns_rows else []
            if write:
                await connection.commit()
            return rows

    async def principal(self, value: str) -> Principal | None:
        """The key `value` is, if it is one and not revoked; None otherwise."""
        token = parse_token(value)
        if token is None:
            return None
        found = await self._lookup(token.key_id)
        if found is None:
            return None
        secret_hash, principal = found
        if not hmac.compare_digest(secret_hash, token.secret_hash):
            return None
        return principal

    async def _lookup(self, key_id: str) -> tuple[str, Principal] | None:
        now = time.monotonic()
        cached = self._cache.get(key_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        rows = await self._execute(
            sa.select(api_keys).where(api_keys.c.key_id == key_id, api_keys.c.revoked_at.is_(None))
        )
        found = None
        if rows:
            row = rows[0]
            found = (
                row["secret_hash"],
                Principal(row["key_id"], row["name"], row["role"], row["department"]),
            )
        if len(self._cache) > 10_000:  # garbage key ids must not grow the cache without end
            self._cache.clear()
        self._cache[key_id] = (now + self._cache_seconds, found)
        return found

    async def create(
        self, *, name: str, role: str, department: str | None
    ) -> tuple[Token, KeyRecord]:
        """A new key; its token is returned once and never stored."""
        token = new_token()
        record = await self.add(token, name=name, role=role, department=department)
        return token, record

    async def add(self, token: Token, *, name: str, role: str, department: str | None) -> KeyRecord:
        """Store a key made elsewhere (a keys file); Conflict if its id is taken."""
        checked = check_spec(role, department, name)
        values = {
            "key_id": token.key_id,
            "name": name,
            "role": checked,
            "department": department,
            "secret_hash": token.secret_hash,
            "created_at": utc_now(),
        }
        rows = await self._execute(
            pg_insert(api_keys)
            .values(**values)
            .on_conflict_do_nothing(index_elements=["key_id"])
            .returning(*api_keys.c),
            write=True,
        )
        if not rows:
            raise Conflict(f"key {token.key_id} exists already")
        return _record(rows[0])

    async def stored_hash(self, key_id: str) -> str | None:
        """The stored hash of a key's token (revoked or not), None if no such key."""
        rows = await self._execute(
            sa.select(api_keys.c.secret_hash).where(api_keys.c.key_id == key_id)
        )
        return str(rows[0]["secret_hash"]) if rows else None

    async def get(self, key_id: str) -> KeyRecord | None:
        """One key, revoked or not."""
        if not _KEY_ID.fullmatch(key_id):
            return None
        rows = await self._execute(sa.select(api_keys).where(api_keys.c.key_id == key_id))
        return _record(rows[0]) if rows else None

    async def list(self, *, include_revoked: bool = False) -> list[KeyRecord]:
        """Every key, oldest first."""
        query = sa.select(api_keys).order_by(api_keys.c.created_at, api_keys.c.key_id)
        if not include_revoked:
            query = query.where(api_keys.c.revoked_at.is_(None))
        return [_record(row) for row in await self._execute(query)]

    async def revoke(self, key_id: str) -> KeyRecord:
        """Revoke a key for good (every service refuses it within the cache time)."""
        if not _KEY_ID.fullmatch(key_id):
            raise NotFound(f"key {key_id[:32]!r} not found")
        rows = await self._execute(
            sa.update(api_keys)
            .where(api_keys.c.key_id == key_id)
            .values(revoked_at=sa.func.coalesce(api_keys.c.revoked_at, utc_now()))
            .returning(*api_keys.c),
            write=True,
        )
        if not rows:
            raise NotFound(f"key {key_id} not found")
        self._cache.pop(key_id, None)
        return _record(rows[0])


@asynccontextmanager
async def standalone_key_store(settings: Settings) -> AsyncIterator[KeyStore]:
    """A key store on a connection of its own, for tools outside a service (the CLI, the
    embedded stack, tests); nothing cached, so every read is current."""
    engine = make_engine(settings.database_url, settings.auth_schema(), pool_size=1)
    try:
        yield KeyStore(engine, settings.auth_schema(), cache_seconds=0)
    finally:
        await engine.dispose()


def _record(row: Any) -> KeyRecord:
    return KeyRecord(
        key_id=row["key_id"],
        name=row["name"],
        role=row["role"],
        department=row["department"],
        created_at=row["created_at"],
        revoked_at=row["revoked_at"],
    )
