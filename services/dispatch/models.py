"""Dispatch's tables and API schemas: transfers, work orders, replies, and what it heard.

Tables use dispatch's own registry, so no other service's tables mix in. The API schemas
are separate from the tables, so storage columns never leak into answers.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict
from pydantic import Field as PydanticField
from sqlalchemy import Column, DateTime, Index, String, Text, text
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

from shared.bus_tables import add_bus_tables
from shared.events import CalendarSource, Channel, ReplyQuality, Satisfaction, TransferMode
from shared.idempotency import add_idempotency_table
from shared.inputs import EventTime, SafeText


class DispatchModel(SQLModel, registry=registry()):
    """Base of dispatch's tables."""


METADATA = add_idempotency_table(add_bus_tables(DispatchModel.metadata, with_outbox=True))
"""Dispatch's tables, with the bus tables every service has (`shared.bus_tables`) and the
answers kept for Idempotency-Keys (`shared.idempotency`)."""


def _when(nullable: bool = False) -> Column[datetime]:
    return Column(DateTime(timezone=True), nullable=nullable)


def _label(length: int, nullable: bool = False) -> Column[str]:
    """A short string column holding one of a Literal's values (checked on the way in)."""
    return Column(String(length), nullable=nullable)


class Ticket(DispatchModel, table=True):
    """A ticket as dispatch heard of it from `hotline.ticket.submitted.v1`."""

    __tablename__ = "tickets"

    ticket_id: str = Field(primary_key=True, max_length=64)
    city: str = Field(max_length=64)
    channel: Channel = Field(sa_column=_label(16))
    scenario: str = Field(max_length=64)
    submitted_at: datetime = Field(sa_column=_when())
    known_at: datetime = Field(sa_column=_when())


class Transfer(DispatchModel, table=True):
    """One attempt to transfer the call (转接) or set up a three-way call (第三方通话)."""

    __tablename__ = "transfers"

    transfer_id: str = Field(primary_key=True, max_length=64)
    ticket_id: str = Field(max_length=64, index=True)
    department: str = Field(max_length=64)
    mode: TransferMode = Field(sa_column=_label(16))
    connected: bool
    at: datetime = Field(sa_column=_when())
    recorded_at: datetime = Field(sa_column=_when())


UNANSWERED = text("first_reply_at IS NULL")
TO_SWEEP = text("first_reply_at IS NULL AND overdue_at IS NULL")
TO_WARN = text("first_reply_at IS NULL AND due_soon_at IS NULL")


class WorkOrder(DispatchModel, table=True):
    """A work order (工单) sent to a department, its deadline and its first reply."""

    __tablename__ = "work_orders"
    __table_args__ = (
        Index("work_orders_by_due", "due_at", "work_order_id"),
        Index("work_orders_unanswered", "due_at", "work_order_id", postgresql_where=UNANSWERED),
        Index("work_orders_to_sweep", "due_at", postgresql_where=TO_SWEEP),
        Index("work_orders_to_warn", "due_at", postgresql_where=TO_WARN),
        Index(
            "work_orders_one_open_per_department",
            "ticket_id",
            "department",
            unique=True,
            postgresql_where=UNANSWERED,
        ),
    )

    work_order_id: str = Field(primary_key=True, max_length=64)
    ticket_id: str = Field(max_length=64, index=True)
    city: str = Field(max_length=64, index=True)
    department: str = Field(max_length=64, index=True)
    created_at: datetime = Field(sa_column=_when())
    recorded_at: datetime = Field(sa_column=_when())
    due_at: datetime = Field(sa_column=_when())
    due_working_days: int
    calendar_source: CalendarSource = Field(sa_column=_label(32))
    first_reply_id: str | None = Field(default=None, max_length=64)
    first_reply_at: datetime | None = Field(default=None, sa_column=_when(nullable=True))
    first_reply_quality: ReplyQuality | None = Field(
        default=None, sa_column=_label(16, nullable=True)
    )
    reply_count: int = 0
    overdue_at: datetime | None = Field(default=None, sa_column=_when(nullable=True))
    """When the sweeper announced `hotline.workorder.overdue.v1`; set once, never cleared."""
    due_soon_at: datetime | None = Field(default=None, sa_column=_when(nullable=True))
    """When the sweeper announced `hotline.workorder.due_soon.v1`; set once, never cleared."""
    redo_round: int = 0
    """0 for an ordinary work order; n for the redo (重办) after the ticket's n-th reopen."""


class Reply(DispatchModel, table=True):
    """A department's reply (部门回复). Every reply is kept; the first one is marked."""

    __tablename__ = "replies"

    reply_id: str = Field(primary_key=True, max_length=64)
    work_order_id: str = Field(max_length=64, index=True)
    ticket_id: str = Field(max_length=64)
    quality: ReplyQuality = Field(sa_column=_label(16))
    content: str = Field(sa_column=Column(Text, nullable=False))
    at: datetime = Field(sa_column=_when())
    recorded_at: datetime = Field(sa_column=_when())
    first: bool


class Callback(DispatchModel, table=True):
    """A callback (回访) as dispatch heard of it: the facts a reopen (重办) is derived from."""

    __tablename__ = "callbacks"

    callback_id: str = Field(primary_key=True, max_length=64)
    ticket_id: str = Field(max_length=64, index=True)
    reached: bool
    satisfaction: Satisfaction | None = Field(default=None, sa_column=_label(32, nullable=True))
    at: datetime = Field(sa_column=_when())


class TicketReopen(DispatchModel, table=True):
    """A reopen (重办) from `hotline.ticket.reopened.v1`, and the work order that took it:
    the ticket's first work order created after it, its redo round."""

    __tablename__ = "ticket_reopens"

    callback_id: str = Field(primary_key=True, max_length=64)
    ticket_id: str = Field(max_length=64, index=True)
    at: datetime = Field(sa_column=_when())
    redo_work_order_id: str | None = Field(default=None, max_length=64)


class _Command(BaseModel):
    """Base of request bodies: unknown fields refused, `at` optional (`shared.inputs.EventTime`)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    at: EventTime | None = PydanticField(
        default=None, description="When it happened (RFC 3339 with offset); default now."
    )


class TransferCreate(_Command):
    """The body of `POST /tickets/{ticket_id}/transfers`."""

    department: SafeText = PydanticField(min_length=1, max_length=64, examples=["住建局"])
    mode: TransferMode
    connected: bool


class WorkOrderCreate(_Command):
    """The body of `POST /tickets/{ticket_id}/work-orders`."""

    department: SafeText = PydanticField(min_length=1, max_length=64, examples=["住建局"])
    due_working_days: int | None = PydanticField(
        default=None, ge=1, le=60, description="Working days to reply; default configured (5)."
    )


class ReplyCreate(_Command):
    """The body of `POST /work-orders/{work_order_id}/replies`."""

    content: SafeText = PydanticField(min_length=1, max_length=4000)
    quality: ReplyQuality


class TransferPublic(BaseModel):
    """A transfer attempt as shown."""

    transfer_id: str
    ticket_id: str
    department: str
    mode: TransferMode
    connected: bool
    at: datetime


class FirstReply(BaseModel):
    """The reply the rates use; it never changes once recorded."""

    reply_id: str
    at: datetime
    quality: ReplyQuality


class WorkOrderPublic(BaseModel):
    """A work order as shown; `overdue` means no reply yet and `due_at` has passed."""

    work_order_id: str
    ticket_id: str
    city: str
    department: str
    created_at: datetime
    due_at: datetime
    due_working_days: int
    calendar_source: CalendarSource
    calendar_note: str | None = PydanticField(
        description="Set when the deadline could not count statutory holidays."
    )
    status: Literal["unanswered", "replied"]
    overdue: bool
    first_reply: FirstReply | None
    reply_count: int
    # A default, so an answer stored for an Idempotency-Key before redo rounds existed
    # (an ordinary work order) is still replayed.
    redo_round: int = PydanticField(
        default=0,
        description="0 for an ordinary work order; n for a redo (重办): the ticket's first "
        "work order created after its n-th reopen (a reached callback answered unsatisfied).",
    )


class ReplyPublic(BaseModel):
    """One reply as shown; `first` marks the one the rates use."""

    reply_id: str
    work_order_id: str
    quality: ReplyQuality
    content: str
    at: datetime
    first: bool


class WorkOrderDetail(WorkOrderPublic):
    """A work order with every reply, oldest first."""

    replies: list[ReplyPublic]


class WorkOrderPage(BaseModel):
    """One page of `GET /work-orders`; pass `next_cursor` back as `cursor` for the next."""

    items: list[WorkOrderPublic]
    next_cursor: str | None


class DispatchTicketPublic(BaseModel):
    """Dispatch's view of a ticket: its transfers, its work orders, whether it was reopened."""

    ticket_id: str
    city: str
    channel: Channel
    scenario: str
    submitted_at: datetime
    reopened: bool = PydanticField(
        description="An unsatisfied callback (重办) with no satisfied one after it."
    )
    reopen_count: int = PydanticField(description="Unsatisfied callbacks so far.")
    reopened_at: datetime | None
    transfers: list[TransferPublic]
    work_orders: list[WorkOrderPublic]
