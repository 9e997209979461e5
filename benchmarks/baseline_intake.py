"""The bare baseline of `bench_intake`: FastAPI and an asyncpg pool writing a ticket row and an
outbox row in one transaction, with no middleware, auth, idempotency or relay. What intake does
beyond this is what it costs.

    DATABASE_URL=postgresql://... uvicorn benchmarks.baseline_intake:app
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from fastapi import FastAPI
from pydantic import BaseModel, Field

SCHEMA = "bench_baseline"


class Call(BaseModel):
    answered: bool
    wait_seconds: float = Field(ge=0)
    resolved_at_first_contact: bool


class NewTicket(BaseModel):
    """The same body intake takes, validated as plainly."""

    city: str = Field(min_length=1, max_length=64)
    channel: str
    scenario: str = Field(min_length=1, max_length=64)
    category: str
    content: str = Field(max_length=2000)
    citizen_phone: str = Field(max_length=32)
    call: Call


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    dsn = os.environ["DATABASE_URL"].replace("postgresql+asyncpg://", "postgresql://")
    pool = await asyncpg.create_pool(dsn, min_size=10, max_size=10)
    async with pool.acquire() as connection:
        await connection.execute(
            f"""
            CREATE SCHEMA IF NOT EXISTS {SCHEMA};
            CREATE TABLE IF NOT EXISTS {SCHEMA}.tickets (
                ticket_id text PRIMARY KEY, body jsonb NOT NULL,
                created_at timestamptz NOT NULL DEFAULT now());
            CREATE TABLE IF NOT EXISTS {SCHEMA}.outbox (
                id bigserial PRIMARY KEY, ticket_id text NOT NULL, payload jsonb NOT NULL,
                published_at timestamptz);
            """
        )
    app.state.pool = pool
    yield
    await pool.close()


app = FastAPI(lifespan=lifespan)


@app.post("/tickets", status_code=201)
async def submit(ticket: NewTicket) -> dict[str, str]:
    ticket_id = uuid.uuid4().hex
    body = ticket.model_dump_json()
    async with app.state.pool.acquire() as connection, connection.transaction():
        await connection.execute(
            f"INSERT INTO {SCHEMA}.tickets (ticket_id, body) VALUES ($1, $2)", ticket_id, body
        )
        await connection.execute(
            f"INSERT INTO {SCHEMA}.outbox (ticket_id, payload) VALUES ($1, $2)",
            ticket_id,
            json.dumps({"ticket_id": ticket_id, "data": json.loads(body)}),
        )
    return {"ticket_id": ticket_id}
