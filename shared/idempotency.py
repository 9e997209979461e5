"""Idempotency-Key for commands: a client that lost an answer sends the request again and
gets the first answer back, and nothing is done twice.

Per API key (`key_id`) and Idempotency-Key, a row of `idempotency_keys` in the service's own
schema holds the request's fingerprint (route and canonical JSON body) and the answer given
(status and JSON body). A command claims the row first thing in its unit of work and fills
in the answer before committing, so a crash leaves the change, its event and the answer
together or none of them. A concurrent twin's claim waits on the row until the first
commits, then answers as the first did (or 409 if the twins differ); a first that fails
leaves no row, and the twin does the work itself.

A command that uses it:

    async with new_uow() as uow:
        if (earlier := await claim(uow, request)) is not None:
            return earlier
        ...  # the change and its event
        return await commit_answer(uow, request, shape(thing))

A route: `idempotency: IdempotencyKey` among its parameters, `idempotency.of(key_id, body)`
handed to the command, `answer.sent_as(Model, response)` returned, and its OpenAPI notes
wrapped in `idempotent_responses(...)`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import timedelta
from http import HTTPStatus
from typing import Annotated, Any, Final, TypeVar

import sqlalchemy as sa
from fastapi import Depends, Header, Request, Response
from pydantic import BaseModel
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert

from shared.db import Transaction, UnitOfWork
from shared.errors import Conflict, Responses
from shared.inputs import SafeText

P = TypeVar("P", bound=BaseModel)

HEADER: Final = "Idempotency-Key"
REPLAYED: Final = "Idempotent-Replayed"
MAX_KEY_LENGTH: Final = 255

KEEP_ANSWERS_FOR: Final = timedelta(days=7)
"""How long an answer can be replayed; older rows are pruned a few at a time as new ones
are written, so the table holds about a week of keyed requests."""
PRUNE_BATCH: Final = 10
"""Expired rows removed with each answer stored: more than one, so pruning outpaces growth."""

IDEMPOTENCY_METADATA = sa.MetaData()

idempotency_keys = sa.Table(
    "idempotency_keys",
    IDEMPOTENCY_METADATA,
    sa.Column("key_id", sa.String(64), primary_key=True),
    sa.Column("idempotency_key", sa.String(MAX_KEY_LENGTH), primary_key=True),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    # Null only inside the transaction that claimed the key: it commits them filled in.
    sa.Column("status_code", sa.SmallInteger),
    sa.Column("response", JSONB),
    sa.Column(
        "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    sa.Index("idempotency_keys_by_age", "created_at"),
)
"""The first answer to each (API key, Idempotency-Key), and what request it answered."""


def add_idempotency_table(metadata: sa.MetaData) -> sa.MetaData:
    """Add `idempotency_keys` to a service's metadata (its migrations and drift test see it)."""
    idempotency_keys.to_metadata(metadata)
    return metadata


class IdempotencyKeyReused(Conflict):
    """The Idempotency-Key was used before with a different request."""

    code = "idempotency_key_reused"


def _as_given(body: BaseModel) -> Any:
    return body.model_dump(mode="json", exclude_unset=True)


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def body_fingerprint(body: BaseModel) -> str:
    """The body as given (defaults not filled in, keys sorted), hashed: equal bodies, equal
    fingerprints."""
    return _digest(_as_given(body))


def request_fingerprint(route: str, body: BaseModel) -> str:
    """The route (method and path) and the body as given, hashed together."""
    return _digest({"route": route, "body": _as_given(body)})


@dataclass(frozen=True)
class IdempotentRequest:
    """A request sent with an Idempotency-Key: whose API key, which key, what was asked."""

    key_id: str
    key: str
    fingerprint: str


@dataclass(frozen=True)
class IdempotencyHeader:
    """The Idempotency-Key a request came with (None without one) and the route it was
    sent to; `of` makes the `IdempotentRequest` a command is given."""

    key: str | None
    route: str

    def of(self, key_id: str, body: BaseModel) -> IdempotentRequest | None:
        """The request of API key `key_id` with `body`; None when it came without a key."""
        if self.key is None:
            return None
        return IdempotentRequest(key_id, self.key, request_fingerprint(self.route, body))


async def idempotency_header(
    request: Request,
    key: Annotated[
        SafeText | None,
        Header(
            alias=HEADER,
            min_length=1,
            max_length=MAX_KEY_LENGTH,
            description="Any string unique to this request among your API key's requests: "
            f"the same key and body again within {KEEP_ANSWERS_FOR.days} days give the first "
            f"answer again (with `{REPLAYED}: true`) and change nothing; the same key with "
            "another request is a 409 `idempotency_key_reused`. Without it, every request "
            "is done.",
        ),
    ] = None,
) -> IdempotencyHeader:
    """FastAPI dependency: the request's Idempotency-Key and route."""
    return IdempotencyHeader(key, f"{request.method} {request.url.path}")


IdempotencyKey = Annotated[IdempotencyHeader, Depends(idempotency_header)]
"""A route's `Idempotency-Key` header parameter (documented in its OpenAPI)."""


def idempotent_responses(responses: Responses, success: int = HTTPStatus.CREATED) -> Responses:
    """A route's OpenAPI notes with `Idempotent-Replayed` on its success answer and the
    reused key among its 409s."""
    ok = dict(responses.get(success, {}))
    ok["headers"] = {
        **ok.get("headers", {}),
        REPLAYED: {
            "description": "`true` when this is the answer of an earlier request with the same "
            "Idempotency-Key and body, given again; absent otherwise.",
            "schema": {"type": "string", "enum": ["true"]},
        },
    }
    conflict = dict(responses.get(HTTPStatus.CONFLICT, {}))
    reused = "Idempotency-Key used before with another request (code `idempotency_key_reused`)"
    earlier = conflict.get("description")
    conflict["description"] = f"{earlier}; or the {reused}" if earlier else f"The {reused}"
    return {**responses, success: ok, HTTPStatus.CONFLICT: conflict}


@dataclass(frozen=True)
class Answer:
    """What a command answered (status, JSON body), and whether it is an earlier request's
    answer given again for the same Idempotency-Key."""

    status_code: int
    body: dict[str, Any]
    replayed: bool = False

    def sent_as(self, model: type[P], response: Response) -> P:
        """The body as `model`, for the route to return; the status, and on a replay
        `Idempotent-Replayed: true`, set on `response`. First answers and replays go the
        same way, so a replay is sent byte for byte as the first was."""
        response.status_code = self.status_code
        if self.replayed:
            response.headers[REPLAYED] = "true"
        return model.model_validate(self.body)


async def claim(tx: Transaction, request: IdempotentRequest | None) -> Answer | None:
    """Take the request's key for this transaction: None if it is new (or there is no key),
    so the command goes on; else the answer stored for it, replayed. A claim in flight in
    another transaction is waited for. IdempotencyKeyReused if the key answered another
    request."""
    if request is None:
        return None
    row = None
    while row is None:
        inserted = await tx.execute(
            pg_insert(idempotency_keys)
            .values(
                key_id=request.key_id,
                idempotency_key=request.key,
                fingerprint=request.fingerprint,
            )
            .on_conflict_do_nothing()
            .returning(sa.literal(True))
        )
        if inserted.first() is not None:
            return None
        # Taken and committed; gone again only if pruned meanwhile (then claim it anew).
        row = (await tx.execute(_stored(request))).first()
    if row.fingerprint != request.fingerprint:
        raise IdempotencyKeyReused(
            f"{HEADER} was already used with a different request (another route or body)"
        )
    if row.status_code is None or row.response is None:  # committed rows always have both
        raise RuntimeError(f"idempotency key row of {request.key_id} has no answer")
    return Answer(row.status_code, row.response, replayed=True)


def _row_of(request: IdempotentRequest) -> sa.ColumnElement[bool]:
    return sa.and_(
        idempotency_keys.c.key_id == request.key_id,
        idempotency_keys.c.idempotency_key == request.key,
    )


def _stored(request: IdempotentRequest) -> sa.Select[tuple[str, int | None, Any]]:
    return sa.select(
        idempotency_keys.c.fingerprint,
        idempotency_keys.c.status_code,
        idempotency_keys.c.response,
    ).where(_row_of(request))


async def commit_answer(
    uow: UnitOfWork,
    request: IdempotentRequest | None,
    body: BaseModel,
    status_code: int = HTTPStatus.CREATED,
) -> Answer:
    """Store the answer with the key `claim` took (if any) and commit the unit of work: the
    change, its events and the answer together."""
    answer = Answer(status_code, body.model_dump(mode="json"))
    if request is not None:
        await uow.execute(
            idempotency_keys.update()
            .where(_row_of(request))
            .values(status_code=answer.status_code, response=answer.body)
        )
        await _prune(uow)
    await uow.commit()
    return answer


async def _prune(tx: Transaction) -> None:
    # A few of the oldest expired rows, skipping any another transaction holds: cheap (the
    # age index) and never waiting.
    expired = (
        sa.select(idempotency_keys.c.key_id, idempotency_keys.c.idempotency_key)
        .where(idempotency_keys.c.created_at < sa.func.now() - KEEP_ANSWERS_FOR)
        .order_by(idempotency_keys.c.created_at)
        .limit(PRUNE_BATCH)
        .with_for_update(skip_locked=True)
    )
    await tx.execute(
        idempotency_keys.delete().where(
            sa.tuple_(idempotency_keys.c.key_id, idempotency_keys.c.idempotency_key).in_(expired)
        )
    )
