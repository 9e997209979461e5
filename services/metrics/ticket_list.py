"""The ticket list: tickets filtered by what they are (city, channel, scenario, category,
evaluator, the citizen's phone hash), what happened to them (department, deadlines, overdue,
reopened) and their state, in keyset pages or streamed whole.

The state is the timeline's (`timeline`), computed in SQL from the facts at the moment of
the query, so the list and a ticket's timeline agree:
overdue > awaiting_reply > closed/reopened/replied by the last answered callback > replied
> closed (resolved at first contact) > open.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from services.metrics.models import callback_facts, ticket_facts, transfer_facts, work_order_facts
from services.metrics.timeline import TicketState
from shared.db import ReadTransaction
from shared.names import SATISFIED
from shared.pagination import STREAM_CHUNK, every_row, keyset_page


@dataclass(frozen=True)
class TicketQuery:
    """The filters and position of a list of tickets (None: not filtered)."""

    state: TicketState | None = None
    city: str | None = None
    channel: str | None = None
    scenario: str | None = None
    category: str | None = None
    evaluator: str | None = None
    department: str | None = None
    """Tickets with a transfer or a work order of this department."""
    phone_hash: str | None = None
    submitted_since: datetime | None = None
    submitted_until: datetime | None = None
    due_since: datetime | None = None
    """Tickets with a work order due at or after this time (and before `due_until`)."""
    due_until: datetime | None = None
    overdue: bool | None = None
    reopened: bool | None = None
    limit: int = 100
    after: tuple[datetime, str] | None = None
    """The (submitted_at, ticket_id) of the last row of the previous page."""


_t = ticket_facts.c
_w = work_order_facts.alias("w")
_c = callback_facts.alias("c")


def _work_orders(*conditions: sa.ColumnElement[bool]) -> sa.Exists:
    return sa.exists().where(_w.c.ticket_id == _t.ticket_id, *conditions)


def _columns(now: datetime) -> list[sa.ColumnElement[Any]]:
    """The list's columns, the computed ones included."""
    unreplied = (_w.c.first_reply_at.is_(None), _w.c.created_known)
    overdue = _work_orders(*unreplied, _w.c.due_at < now)
    awaiting = _work_orders(*unreplied)
    answers = sa.select(_c.c.satisfaction, _c.c.at).where(
        _c.c.ticket_id == _t.ticket_id, _c.c.reached, _c.c.satisfaction.is_not(None)
    )
    last = answers.order_by(_c.c.at.desc(), _c.c.callback_id.desc()).limit(1)
    last_answer = last.with_only_columns(_c.c.satisfaction).scalar_subquery()
    last_answer_at = last.with_only_columns(_c.c.at).scalar_subquery()
    last_reply = (
        sa.select(sa.func.max(_w.c.first_reply_at))
        .where(_w.c.ticket_id == _t.ticket_id)
        .scalar_subquery()
    )
    unsatisfied = last_answer == "unsatisfied"
    no_reply_since = sa.or_(last_reply.is_(None), last_reply <= last_answer_at)
    state = sa.case(
        (overdue, "overdue"),
        (awaiting, "awaiting_reply"),
        (last_answer.in_(sorted(SATISFIED)), "closed"),
        (sa.and_(unsatisfied, no_reply_since), "reopened"),
        (sa.or_(unsatisfied, last_reply.is_not(None)), "replied"),
        (_t.resolved_at_first_contact, "closed"),
        else_="open",
    )
    work_orders = (
        sa.select(sa.func.count())
        .where(_w.c.ticket_id == _t.ticket_id, _w.c.created_known)
        .scalar_subquery()
    )
    return [
        _t.ticket_id,
        _t.city,
        _t.channel,
        _t.scenario,
        _t.category,
        _t.evaluator,
        _t.submitted_at,
        _t.answered,
        _t.resolved_at_first_contact,
        state.label("state"),
        work_orders.label("work_orders"),
        overdue.label("overdue"),
        (_t.reopened_at.is_not(None)).label("reopened"),
        _t.reopened_at,
    ]


def _filters(query: TicketQuery) -> list[sa.ColumnElement[bool]]:
    conditions: list[sa.ColumnElement[bool]] = [_t.counted]
    for name in ("city", "channel", "scenario", "category", "evaluator"):
        value = getattr(query, name)
        if value is not None:
            conditions.append(_t[name] == value)
    if query.phone_hash is not None:
        conditions.append(_t.citizen_phone_hash == query.phone_hash)
    if query.submitted_since is not None:
        conditions.append(_t.submitted_at >= query.submitted_since)
    if query.submitted_until is not None:
        conditions.append(_t.submitted_at < query.submitted_until)
    if query.department is not None:
        transfers = transfer_facts.alias("x")
        conditions.append(
            sa.or_(
                _work_orders(_w.c.department == query.department),
                sa.exists().where(
                    transfers.c.ticket_id == _t.ticket_id,
                    transfers.c.department == query.department,
                ),
            )
        )
    if query.due_since is not None or query.due_until is not None:
        due: list[sa.ColumnElement[bool]] = [_w.c.created_known]
        if query.due_since is not None:
            due.append(_w.c.due_at >= query.due_since)
        if query.due_until is not None:
            due.append(_w.c.due_at < query.due_until)
        conditions.append(_work_orders(*due))
    if query.reopened is not None:
        reopened = _t.reopened_at.is_not(None)
        conditions.append(reopened if query.reopened else sa.not_(reopened))
    return conditions


def _selection(query: TicketQuery, now: datetime) -> sa.Subquery:
    """The filtered tickets with their computed columns (state and overdue filter outside,
    on the computed values)."""
    return sa.select(*_columns(now)).where(*_filters(query)).subquery("tickets")


def _computed_filters(query: TicketQuery, rows: sa.Subquery) -> list[sa.ColumnElement[bool]]:
    conditions: list[sa.ColumnElement[bool]] = []
    if query.state is not None:
        conditions.append(rows.c.state == query.state)
    if query.overdue is not None:
        conditions.append(rows.c.overdue if query.overdue else sa.not_(rows.c.overdue))
    return conditions


async def count_tickets(db: ReadTransaction, query: TicketQuery, *, now: datetime) -> int:
    """How many tickets the filters select (the position and limit aside)."""
    rows = _selection(query, now)
    statement = sa.select(sa.func.count()).select_from(rows).where(*_computed_filters(query, rows))
    return int((await db.execute(statement)).scalar_one())


async def ticket_page(
    db: ReadTransaction, query: TicketQuery, *, now: datetime
) -> tuple[list[dict[str, Any]], bool]:
    """One page after `query.after`, oldest submission first, and whether more follow."""
    rows = _selection(query, now)
    statement = sa.select(rows).where(*_computed_filters(query, rows))
    key = (rows.c.submitted_at, rows.c.ticket_id)
    found, more = await keyset_page(db, statement, key, query.after, query.limit)
    return [dict(row) for row in found], more


async def every_ticket(
    db: ReadTransaction, query: TicketQuery, *, now: datetime
) -> AsyncIterator[dict[str, Any]]:
    """Every ticket after `query.after`, read a chunk at a time (one transaction, so one
    snapshot): a list of a million rows never sits in memory."""

    async def page(after: tuple[datetime, str] | None) -> tuple[list[dict[str, Any]], bool]:
        return await ticket_page(db, replace(query, limit=STREAM_CHUNK, after=after), now=now)

    async for row in every_row(page, _position, query.after):
        yield row


def _position(row: dict[str, Any]) -> tuple[datetime, str]:
    return row["submitted_at"], row["ticket_id"]
