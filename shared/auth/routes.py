"""Managing keys over HTTP (admin keys only): on every service, since the keys are the same
for all of them. The CLI (`hotline keys`) does the same against the database."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Response, status
from pydantic import BaseModel, ConfigDict, Field

from shared.auth.http import Allow, Authenticator, request_authenticator
from shared.auth.store import KeyRecord, Principal
from shared.inputs import PathId, SafeText
from shared.names import Role
from shared.openapi import set_location

router = APIRouter(tags=["keys"])

AdminDep = Annotated[Principal, Depends(Allow("admin"))]


class KeyCreate(BaseModel):
    """The body of `POST /keys`."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: SafeText = Field(min_length=1, max_length=100, description="Who or what holds the key.")
    role: Role
    department: SafeText | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="The department a `department` key acts for; only for that role.",
    )


class KeyPublic(BaseModel):
    """A key as listed: never its secret."""

    key_id: str
    name: str
    role: Role
    department: str | None
    created_at: datetime
    revoked_at: datetime | None

    @classmethod
    def of(cls, record: KeyRecord) -> KeyPublic:
        """Shape a stored key for the API."""
        return cls.model_validate(record, from_attributes=True)


class KeyCreated(KeyPublic):
    """A new key, with its token: shown this once, stored nowhere."""

    token: str


KeysDep = Annotated[Authenticator, Depends(request_authenticator)]


@router.post(
    "/keys",
    status_code=status.HTTP_201_CREATED,
    response_model=KeyCreated,
    responses={422: {"description": "A bad name, role or department"}},
)
async def create_key(
    body: KeyCreate, admin: AdminDep, keys: KeysDep, response: Response
) -> KeyCreated:
    """Create a key; its token is in this answer only. `Location` is the key's URL (to
    revoke it)."""
    token, record = await keys.store.create(
        name=body.name, role=body.role, department=body.department
    )
    set_location(response, "keys", record.key_id)
    return KeyCreated(**KeyPublic.of(record).model_dump(), token=token.value)


@router.get("/keys", response_model=list[KeyPublic])
async def list_keys(
    admin: AdminDep, keys: KeysDep, include_revoked: bool = False
) -> list[KeyPublic]:
    """Every key (without secrets), oldest first."""
    return [KeyPublic.of(r) for r in await keys.store.list(include_revoked=include_revoked)]


@router.delete(
    "/keys/{key_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={404: {"description": "No such key"}},
)
async def revoke_key(key_id: PathId, admin: AdminDep, keys: KeysDep) -> Response:
    """Revoke a key: every service refuses it within a few seconds."""
    await keys.store.revoke(key_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
