"""Metrics's tables and API schemas.

Fact tables keep one row per ticket, transfer, work order and callback, upserted with
whatever is known so far; each row also stores the counters it contributes (see `rates`).
`rate_cells` holds the sums of those counters per cell: a grain and period of the tickets'
`submitted_at` (all time, month, day in Asia/Shanghai) and a grouping set of city, channel,
scenario and department, where `""` stands for "all"; a cell's value is the sum of its rows
over the `shard`s. A fact is in the cells once its
ticket is known (`counted`); before that it cannot be attributed to a city.

The tables are SQLAlchemy Core on metrics's own metadata, not SQLModel classes: their
counter columns are generated from the counter names in `rates`, so the definitions, the
facts and the aggregates cannot drift apart, and every statement is a Core statement run
through the unit of work.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, Field
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import registry
from sqlmodel import SQLModel

from services.metrics.rates import (
    CALLBACK_COUNTERS,
    COUNTERS,
    DECIMAL_COUNTERS,
    TICKET_COUNTERS,
    TRANSFER_COUNTERS,
    WORK_ORDER_COUNTERS,
    Rate,
)
from shared.bus_tables import add_bus_tables
from shared.names import RATE_NAMES


class MetricsModel(SQLModel, registry=registry()):
    """Base of metrics's tables: its own metadata, so no other service's tables mix in."""


METADATA = add_bus_tables(MetricsModel.metadata, with_outbox=False)
"""Metrics's tables, with the processed-events table it shares with every service."""
ALL = ""
"""The key part of a cell summed over every value of that dimension."""


def _counter_columns(names: tuple[str, ...], *, big: bool = False) -> list[sa.Column[object]]:
    integer: type[sa.Integer] = sa.BigInteger if big else sa.Integer
    columns: list[sa.Column[object]] = []
    for name in names:
        kind: sa.types.TypeEngine[Any] = (
            sa.Numeric(20 if big else 14, 3) if name in DECIMAL_COUNTERS else integer()
        )
        columns.append(sa.Column(name, kind, nullable=False, server_default="0"))
    return columns


def _ticket_dimensions() -> list[sa.Column[object]]:
    """The ticket's dimensions, copied onto a child fact once the ticket is known."""
    return [
        sa.Column("counted", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("city", sa.String(64)),
        sa.Column("channel", sa.String(16)),
        sa.Column("scenario", sa.String(64)),
        sa.Column("submitted_at", sa.DateTime(timezone=True)),
    ]


ticket_facts = sa.Table(
    "ticket_facts",
    METADATA,
    sa.Column("ticket_id", sa.String(64), primary_key=True),
    *_ticket_dimensions(),
    sa.Column("category", sa.String(16)),
    sa.Column("evaluator", sa.String(64)),
    sa.Column("citizen_phone_hash", sa.String(64)),
    sa.Column("answered", sa.Boolean),
    sa.Column("wait_seconds", sa.Numeric(12, 3)),
    sa.Column("resolved_at_first_contact", sa.Boolean),
    sa.Column("replied_work_orders", sa.Integer, nullable=False, server_default="0"),
    sa.Column("callbacks_logged", sa.Integer, nullable=False, server_default="0"),
    sa.Column("answered_callbacks", sa.Integer, nullable=False, server_default="0"),
    sa.Column("reopened_at", sa.DateTime(timezone=True)),
    *_counter_columns(TICKET_COUNTERS),
    sa.Index("ticket_facts_by_time", "submitted_at"),
    sa.Index("ticket_facts_by_list_order", "submitted_at", "ticket_id"),
    sa.Index(
        "ticket_facts_by_phone",
        "citizen_phone_hash",
        postgresql_where=sa.text("citizen_phone_hash IS NOT NULL"),
    ),
)

transfer_facts = sa.Table(
    "transfer_facts",
    METADATA,
    sa.Column("transfer_id", sa.String(64), primary_key=True),
    sa.Column("ticket_id", sa.String(64), nullable=False, index=True),
    sa.Column("department", sa.String(64), nullable=False),
    sa.Column("mode", sa.String(16), nullable=False),
    sa.Column("connected", sa.Boolean, nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    *_ticket_dimensions(),
    *_counter_columns(TRANSFER_COUNTERS),
    sa.Index("transfer_facts_by_time", "submitted_at"),
)

work_order_facts = sa.Table(
    "work_order_facts",
    METADATA,
    sa.Column("work_order_id", sa.String(64), primary_key=True),
    sa.Column("ticket_id", sa.String(64), nullable=False, index=True),
    sa.Column("department", sa.String(64), nullable=False),
    sa.Column("created_known", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("created_at", sa.DateTime(timezone=True)),
    sa.Column("due_at", sa.DateTime(timezone=True)),
    sa.Column("first_reply_id", sa.String(64)),
    sa.Column("first_reply_at", sa.DateTime(timezone=True)),
    sa.Column("first_reply_quality", sa.String(16)),
    *_ticket_dimensions(),
    *_counter_columns(WORK_ORDER_COUNTERS),
    sa.Index("work_order_facts_by_time", "submitted_at"),
    # Unreplied work orders by deadline: the audit list, and the count of those not yet
    # due at query time, answered from the index alone (hence the included columns).
    sa.Index(
        "work_order_facts_unreplied",
        "due_at",
        "work_order_id",
        postgresql_include=["counted", "city", "channel", "scenario", "department", "submitted_at"],
        postgresql_where=sa.text("first_reply_at IS NULL AND created_known"),
    ),
)

callback_facts = sa.Table(
    "callback_facts",
    METADATA,
    sa.Column("callback_id", sa.String(64), primary_key=True),
    sa.Column("ticket_id", sa.String(64), nullable=False, index=True),
    sa.Column("reached", sa.Boolean, nullable=False),
    sa.Column("satisfaction", sa.String(32)),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    *_ticket_dimensions(),
    *_counter_columns(CALLBACK_COUNTERS),
    sa.Index("callback_facts_by_time", "submitted_at"),
)

ticket_events = sa.Table(
    "ticket_events",
    METADATA,
    sa.Column("event_id", sa.String(64), primary_key=True),
    sa.Column("ticket_id", sa.String(64), nullable=False),
    sa.Column("ce_type", sa.String(255), nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("actor_key_id", sa.String(64)),
    sa.Column("actor_role", sa.String(16)),
    sa.Column("actor_department", sa.String(64)),
    sa.Column("work_order_id", sa.String(64)),
    sa.Column("changes", postgresql.JSONB, nullable=False),
    sa.Column(
        "recorded_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    sa.Index("ticket_events_by_ticket", "ticket_id", "at"),
)
"""Every event of every ticket, as it came (see `history`): the timelines read it."""

working_days = sa.Table(
    "working_days",
    METADATA,
    sa.Column("day", sa.Date, primary_key=True),
    sa.Column("is_working_day", sa.Boolean, nullable=False),
    sa.Column("working_days_before", sa.Integer, nullable=False),
)
"""The working-day calendar for SQL (see `calendar_days`); `working_days_before` counts the
working days from the table's first day up to, not including, `day`."""

UNANSWERED_VIEW = "unanswered_work_orders"
"""The view of unanswered work orders with their age in working days (migration 0003): the
rows and ages of GET /audit/unanswered, for Grafana."""

CELL_DIMENSIONS = ("city", "channel", "scenario", "department")
CELL_SHARDS = 16
"""Writers add to the cells in shards of their own (see `cube.lock_shard`), so replicas do
not wait for one another on the same few all-time cells; readers sum over the shards."""

rate_cells = sa.Table(
    "rate_cells",
    METADATA,
    sa.Column("city", sa.String(64), primary_key=True),
    sa.Column("channel", sa.String(16), primary_key=True),
    sa.Column("scenario", sa.String(64), primary_key=True),
    sa.Column("department", sa.String(64), primary_key=True),
    sa.Column("grain", sa.String(8), primary_key=True),
    sa.Column("period", sa.Date, primary_key=True),
    sa.Column("shard", sa.SmallInteger, primary_key=True, server_default="0"),
    sa.Column(
        "grouping_set",
        sa.SmallInteger,
        sa.Computed(
            "(city <> '')::int + 2 * (channel <> '')::int"
            " + 4 * (scenario <> '')::int + 8 * (department <> '')::int",
            persisted=True,
        ),
        nullable=False,
    ),
    *_counter_columns(COUNTERS, big=True),
    # The primary key finds the cells of a filter; this one the groups of a breakdown.
    sa.Index("rate_cells_by_grouping_set", "grouping_set", "grain", "period"),
)


def grouping_of(city: bool, channel: bool, scenario: bool, department: bool) -> int:
    """The `grouping_set` of cells keyed by the dimensions given as True (the others are ALL)."""
    return int(city) + 2 * int(channel) + 4 * int(scenario) + 8 * int(department)


# --- API schemas --------------------------------------------------------------------------


class RatePublic(BaseModel):
    """One rate: `value` is null when the denominator is 0."""

    value: float | None
    numerator: float | int
    denominator: int

    @classmethod
    def of(cls, rate: Rate) -> RatePublic:
        """Shape a computed rate for the API."""
        return cls(value=rate.value, numerator=rate.numerator, denominator=rate.denominator)


def rates_public(rates: dict[str, Rate]) -> dict[str, RatePublic]:
    """Every rate, in DESIGN.md's order."""
    return {name: RatePublic.of(rates[name]) for name in RATE_NAMES}


class RatesPublic(BaseModel):
    """The answer to `GET /rates`."""

    rates: dict[str, RatePublic]


class RateGroup(BaseModel):
    """The rates of one value of the breakdown dimension."""

    key: str
    rates: dict[str, RatePublic]


class RatesByPublic(BaseModel):
    """The answer to `GET /rates/by/{dimension}`: one group per value, sorted by key."""

    by: str
    groups: list[RateGroup]


class UnansweredWorkOrder(BaseModel):
    """A work order with no reply yet, as the audit lists it."""

    work_order_id: str
    ticket_id: str
    city: str | None = Field(description="null while the ticket's own event has not arrived")
    department: str
    created_at: datetime
    due_at: datetime
    overdue: bool
    age_working_days: int


class UnansweredPage(BaseModel):
    """The answer to `GET /audit/unanswered`: most overdue first; `next_cursor` pages on."""

    total: int
    items: list[UnansweredWorkOrder]
    next_cursor: str | None = None


UNANSWERED_CSV_COLUMNS = tuple(UnansweredWorkOrder.model_fields)


class ActorPublic(BaseModel):
    """The key that caused an event: its id (never its secret), role and department."""

    key_id: str
    role: str | None
    department: str | None


class TimelineEvent(BaseModel):
    """One event of a ticket's story."""

    event_id: str
    type: str = Field(description="The CloudEvents type, e.g. hotline.workorder.replied.v1")
    at: datetime = Field(description="When it happened (the event's own time)")
    actor: ActorPublic | None = Field(
        description="The key that caused it; null for what the system did by itself"
    )
    work_order_id: str | None
    changes: dict[str, Any] = Field(description="What the event recorded: its data")


class DeadlinePublic(BaseModel):
    """A work order's deadline and what became of it."""

    work_order_id: str
    department: str | None
    created_at: datetime | None = Field(description="null while its creation is not known")
    due_at: datetime | None
    redo_round: int = Field(description="0, or n for the redo (重办) after the n-th reopen")
    first_reply_at: datetime | None
    due_soon_warned_at: datetime | None
    overdue_announced_at: datetime | None
    met: bool | None = Field(
        description="true: first reply by due_at; false: replied late, or past due with "
        "no reply; null: can still be met"
    )


class TimelinePublic(BaseModel):
    """The answer to `GET /tickets/{id}/timeline`."""

    ticket_id: str
    as_of: datetime
    state: str = Field(
        description="open, awaiting_reply, overdue, reopened, replied or closed (README)"
    )
    deadlines: list[DeadlinePublic]
    events: list[TimelineEvent]


class OverdueGroupPublic(BaseModel):
    """The overdue work orders of one department or city."""

    key: str | None = Field(
        description="The department or city; null (by city) for work orders whose ticket's "
        "own event has not arrived yet"
    )
    overdue: int = Field(description="Work orders past due_at with no reply")
    working_days_late_total: int = Field(
        description="Summed over them: working days wholly elapsed since the deadline"
    )
    working_days_late_max: int = Field(description="The latest of them, in working days")


class OverduePublic(BaseModel):
    """The answer to `GET /audit/overdue/by/{dimension}`: one group per value, sorted."""

    by: str
    total: int
    groups: list[OverdueGroupPublic]


class TicketListItem(BaseModel):
    """A ticket as the list shows it: what it is and where it stands."""

    ticket_id: str
    city: str
    channel: str
    scenario: str
    category: str | None = Field(description="null for tickets recorded before it was kept")
    evaluator: str | None
    submitted_at: datetime
    answered: bool
    resolved_at_first_contact: bool
    state: str = Field(description="As in the ticket's timeline (README)")
    work_orders: int
    overdue: bool = Field(description="A work order past due with no reply")
    reopened: bool = Field(description="Reopened (重办) at least once")
    reopened_at: datetime | None = Field(description="The first reopen")


class TicketPage(BaseModel):
    """The answer to `GET /tickets` on metrics: oldest first; `next_cursor` pages on."""

    total: int
    items: list[TicketListItem]
    next_cursor: str | None = None


TICKET_CSV_COLUMNS = tuple(TicketListItem.model_fields)
