"""Intake's tables and API schemas: the ticket as stored, as submitted and as shown."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, field_validator, model_validator
from pydantic import Field as PydanticField
from sqlalchemy import Column, DateTime, Index, Text, UniqueConstraint
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

from shared.bus_tables import add_bus_tables
from shared.events import CallOutcome, Category, Channel
from shared.inputs import EventTime, SafeText
from shared.privacy import normalize_phone


class IntakeModel(SQLModel, registry=registry()):
    """Base of intake's tables: its own metadata, so no other service's tables mix in."""


METADATA = add_bus_tables(IntakeModel.metadata, with_outbox=True)
"""Intake's tables, with the bus tables every service has (`shared.bus_tables`)."""


class Ticket(IntakeModel, table=True):
    """A citizen's request as intake stores it. The phone number only masked and hashed."""

    __tablename__ = "tickets"
    __table_args__ = (
        Index("tickets_by_time", "submitted_at", "ticket_id"),
        Index("tickets_by_submitter", "submitted_by", "submitted_at", "ticket_id"),
        UniqueConstraint("submitted_by", "idempotency_key", name="tickets_idempotency_per_key"),
    )

    ticket_id: str = Field(primary_key=True, max_length=64)
    city: str = Field(max_length=64, index=True)
    channel: str = Field(max_length=16)
    scenario: str = Field(max_length=64)
    category: str = Field(max_length=16)
    content: str = Field(sa_column=Column(Text, nullable=False))
    citizen_phone_masked: str | None = Field(default=None, max_length=32)
    citizen_phone_hash: str | None = Field(default=None, max_length=64, index=True)
    evaluator: str | None = Field(default=None, max_length=64)
    submitted_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    recorded_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    call_answered: bool
    wait_seconds: float | None = None
    resolved_at_first_contact: bool
    idempotency_key: str | None = Field(default=None, max_length=255)
    request_fingerprint: str | None = Field(default=None, max_length=64)
    submitted_by: str | None = Field(default=None, max_length=16)
    """The API key (its id) that submitted it: an evaluator reads its own tickets only."""


class CallInput(CallOutcome):
    """How the contact went (the event's `CallOutcome`, strict about unknown fields). For
    `online`, `answered` means the submission went through."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="after")
    def _consistent(self) -> CallInput:
        if self.resolved_at_first_contact and not self.answered:
            raise ValueError("resolved_at_first_contact cannot be true when answered is false")
        return self


class TicketCreate(BaseModel):
    """The body of `POST /tickets`."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    city: SafeText = PydanticField(
        min_length=1,
        max_length=64,
        examples=["沈阳"],
        description="A prefecture-level city (or a county-level one directly under a province) "
        "by its name or official name, 沈阳 or 沈阳市; a 地区, 盟 or 自治州 by its full name. "
        "Stored and announced by its canonical name (沈阳).",
    )
    channel: Channel
    scenario: SafeText = PydanticField(min_length=1, max_length=64, examples=["社保查询"])
    category: Category
    content: SafeText = PydanticField(min_length=1, max_length=4000)
    citizen_phone: SafeText | None = PydanticField(
        default=None,
        max_length=32,
        examples=["138-1234-5678"],
        description="Any usual way of writing it (010-12345678, +86 10 1234 5678); kept only "
        "masked and as a keyed hash of its E.164 form.",
    )
    evaluator: SafeText | None = PydanticField(default=None, max_length=64)
    submitted_at: EventTime | None = PydanticField(
        default=None, description="When the citizen made the request; default now."
    )
    call: CallInput

    @field_validator("citizen_phone")
    @classmethod
    def _valid_phone(cls, value: str | None) -> str | None:
        # E.164, so a replayed body fingerprints alike however the number was written.
        return normalize_phone(value) if value else None

    @field_validator("call")
    @classmethod
    def _call_fits_channel(cls, call: CallInput, info: object) -> CallInput:
        channel = getattr(info, "data", {}).get("channel")
        if channel == "phone" and call.answered and call.wait_seconds is None:
            raise ValueError("call.wait_seconds is required when a phone call was answered")
        if channel == "online" and call.wait_seconds is not None:
            raise ValueError("call.wait_seconds must be null for an online submission")
        return call


class TicketPublic(BaseModel):
    """A ticket as the API shows it: never the full phone number, never its hash."""

    ticket_id: str
    city: str
    channel: Channel
    scenario: str
    category: Category
    content: str
    citizen_phone_masked: str | None
    evaluator: str | None
    submitted_at: datetime
    recorded_at: datetime
    call: CallOutcome

    @classmethod
    def of(cls, ticket: Ticket) -> TicketPublic:
        """Shape a stored ticket for the API."""
        return cls(
            ticket_id=ticket.ticket_id,
            city=ticket.city,
            channel=ticket.channel,
            scenario=ticket.scenario,
            category=ticket.category,
            content=ticket.content,
            citizen_phone_masked=ticket.citizen_phone_masked,
            evaluator=ticket.evaluator,
            submitted_at=ticket.submitted_at,
            recorded_at=ticket.recorded_at,
            call=CallOutcome(
                answered=ticket.call_answered,
                wait_seconds=ticket.wait_seconds,
                resolved_at_first_contact=ticket.resolved_at_first_contact,
            ),
        )


class TicketCreated(BaseModel):
    """The answer to `POST /tickets`."""

    ticket_id: str


class TicketPage(BaseModel):
    """One page of `GET /tickets`; pass `next_cursor` back as `cursor` for the next."""

    items: list[TicketPublic]
    next_cursor: str | None
