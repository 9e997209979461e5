"""Followup's tables and API schemas: the facts the callback queue is derived from, and
the callbacks themselves.

Tables use followup's own registry, so no other service's tables mix in. The API schemas
are separate from the tables, so storage columns never leak into answers.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator
from pydantic import Field as PydanticField
from sqlalchemy import Column, DateTime, Index, String
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

from shared.bus_tables import add_bus_tables
from shared.events import Channel, Satisfaction
from shared.idempotency import add_idempotency_table
from shared.inputs import EventTime

EligibleReason = Literal["resolved_at_first_contact", "work_order_replied"]


class FollowupModel(SQLModel, registry=registry()):
    """Base of followup's tables."""


METADATA = add_idempotency_table(add_bus_tables(FollowupModel.metadata, with_outbox=True))
"""Followup's tables, with the bus tables every service has (`shared.bus_tables`) and the
answers kept for Idempotency-Keys (`shared.idempotency`)."""


def _when(nullable: bool = False) -> Column[datetime]:
    return Column(DateTime(timezone=True), nullable=nullable)


class Ticket(FollowupModel, table=True):
    """A ticket as followup heard of it from `hotline.ticket.submitted.v1`."""

    __tablename__ = "tickets"

    ticket_id: str = Field(primary_key=True, max_length=64)
    city: str = Field(max_length=64, index=True)
    channel: Channel = Field(sa_column=Column(String(16), nullable=False))
    scenario: str = Field(max_length=64)
    submitted_at: datetime = Field(sa_column=_when())
    resolved_at_first_contact: bool
    known_at: datetime = Field(sa_column=_when())


class RepliedWorkOrder(FollowupModel, table=True):
    """A work order's first reply, from `hotline.workorder.replied.v1` with `first: true`."""

    __tablename__ = "replied_work_orders"
    __table_args__ = (Index("replied_work_orders_by_ticket", "ticket_id", "first_reply_at"),)

    work_order_id: str = Field(primary_key=True, max_length=64)
    ticket_id: str = Field(max_length=64)
    department: str = Field(max_length=64)
    first_reply_at: datetime = Field(sa_column=_when())


class Callback(FollowupModel, table=True):
    """A callback (回访): whether the citizen was reached and how satisfied they were."""

    __tablename__ = "callbacks"
    __table_args__ = (Index("callbacks_by_ticket", "ticket_id", "at"),)

    callback_id: str = Field(primary_key=True, max_length=64)
    ticket_id: str = Field(max_length=64)
    reached: bool
    satisfaction: Satisfaction | None = Field(
        default=None, sa_column=Column(String(32), nullable=True)
    )
    at: datetime = Field(sa_column=_when())
    recorded_at: datetime = Field(sa_column=_when())


class CallbackCreate(BaseModel):
    """The body of `POST /tickets/{ticket_id}/callbacks`."""

    model_config = ConfigDict(extra="forbid")

    reached: bool
    satisfaction: Satisfaction | None = PydanticField(
        default=None,
        description="Null when the citizen was not reached, or declined to answer.",
    )
    at: EventTime | None = PydanticField(
        default=None, description="When the call was made (RFC 3339 with offset); default now."
    )

    @field_validator("satisfaction")
    @classmethod
    def _only_when_reached(
        cls, value: Satisfaction | None, info: ValidationInfo
    ) -> Satisfaction | None:
        if value is not None and info.data.get("reached") is False:
            raise ValueError("satisfaction must be null when reached is false")
        return value


class CallbackPublic(BaseModel):
    """A callback as shown."""

    callback_id: str
    ticket_id: str
    reached: bool
    satisfaction: Satisfaction | None
    at: datetime


class DueCallback(BaseModel):
    """A ticket waiting for a callback, and why."""

    ticket_id: str
    city: str
    channel: Channel
    scenario: str
    submitted_at: datetime
    eligible_since: datetime = PydanticField(
        description="When the ticket last became due: its submission if solved at first "
        "contact, else its latest work order's first reply."
    )
    reason: EligibleReason
    unreached_attempts: int = PydanticField(
        description="Callbacks since `eligible_since` that did not reach the citizen."
    )


class DueCallbackPage(BaseModel):
    """One page of `GET /callbacks/due`; pass `next_cursor` back as `cursor` for the next."""

    items: list[DueCallback]
    next_cursor: str | None


class FollowupTicketPublic(BaseModel):
    """Followup's view of a ticket: its callbacks and whether one is due."""

    ticket_id: str
    city: str
    channel: Channel
    scenario: str
    submitted_at: datetime
    resolved_at_first_contact: bool
    callback_due: bool
    eligible_since: datetime | None
    reason: EligibleReason | None
    callbacks: list[CallbackPublic]
