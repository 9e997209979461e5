"""The event contract: one pydantic model per event type, the only definition of its fields.

Events are past-tense facts. Every event carries the ticket id (the Kafka key, so one
ticket's events stay in order on one partition) and the time the fact happened. Consumers
ignore fields they do not know, so a producer may add optional fields without a new
version; removing or changing a field means a new `ce_type` version.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, ClassVar, Final, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field

from shared.names import Role

Channel = Literal["phone", "online"]
Category = Literal["consultation", "help", "complaint", "report", "suggestion"]
TransferMode = Literal["transfer", "three_way"]
ReplyQuality = Literal["definite", "partial", "none"]
Satisfaction = Literal["satisfied", "basically_satisfied", "unsatisfied"]
CalendarSource = Literal["holiday_file", "chinesecalendar", "weekends_only"]

EARLIEST_EVENT_YEAR: Final = 1970
LATEST_EVENT_YEAR: Final = 2999
"""An event's times fall in these years (inclusive, in UTC). Lenient (the API refuses much
more), but a time no projection can store or compute with, like year 1 or an offset that
overflows in UTC, makes the event a poison message (dead-lettered by the consumer) instead
of crashing the projection that would store it."""


def _plausible(value: datetime) -> datetime:
    try:
        year = value.astimezone(UTC).year
    except (OverflowError, ValueError):
        raise ValueError("out of range once converted to UTC") from None
    if not EARLIEST_EVENT_YEAR <= year <= LATEST_EVENT_YEAR:
        raise ValueError(f"must be in the years {EARLIEST_EVENT_YEAR} to {LATEST_EVENT_YEAR}")
    return value


PlausibleTime = Annotated[AwareDatetime, AfterValidator(_plausible)]
"""When a fact happened, as an event carries it: aware, within the event years."""


class Actor(BaseModel):
    """The API key whose request caused an event: its id (never its secret), its role and,
    for a department's key, the department. Who did it is part of the record."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    key_id: str = Field(min_length=1, max_length=64)
    role: Role
    department: str | None = Field(default=None, max_length=64)


class Event(BaseModel):
    """Base of every event: frozen, forward compatible (unknown fields are ignored).

    `actor` is the key that caused it; None for what the system did by itself (an overdue
    sweep) and for events written before keys existed."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    ce_type: ClassVar[str]
    ticket_id: str = Field(min_length=1, max_length=64)
    actor: Actor | None = None

    def occurred_at(self) -> datetime:
        """When the fact happened; the CloudEvent `time`."""
        raise NotImplementedError


class CallOutcome(BaseModel):
    """How the citizen's contact went: answered, after how long, solved on the spot."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    answered: bool
    wait_seconds: float | None = Field(default=None, ge=0, le=86_400, allow_inf_nan=False)
    resolved_at_first_contact: bool


class TicketSubmitted(Event):
    """A citizen's request was recorded by intake. Carries no phone number and no free text:
    only the number's keyed hash (`shared.privacy`), by which an auditor finds one citizen's
    tickets and which no one can read the number back from."""

    ce_type: ClassVar[str] = "hotline.ticket.submitted.v1"

    city: str
    channel: Channel
    scenario: str
    category: Category
    submitted_at: PlausibleTime
    evaluator: str | None = None
    citizen_phone_hash: str | None = Field(default=None, pattern="^[0-9a-f]{64}$")
    call: CallOutcome

    def occurred_at(self) -> datetime:
        return self.submitted_at


class TransferAttempted(Event):
    """An operator tried to transfer the call (转接) or set up a three-way call (第三方通话)."""

    ce_type: ClassVar[str] = "hotline.transfer.attempted.v1"

    transfer_id: str
    department: str
    mode: TransferMode
    connected: bool
    at: PlausibleTime

    def occurred_at(self) -> datetime:
        return self.at


class WorkOrderCreated(Event):
    """A work order (工单) was dispatched to a department with a working-day deadline."""

    ce_type: ClassVar[str] = "hotline.workorder.created.v1"

    work_order_id: str
    department: str
    created_at: PlausibleTime
    due_at: PlausibleTime
    due_working_days: int = Field(ge=1)
    calendar_source: CalendarSource
    redo_round: int = Field(default=0, ge=0, le=10_000)
    """0 for a ticket's ordinary work order; n for the redo (重办) after its n-th reopen."""

    def occurred_at(self) -> datetime:
        return self.created_at


class WorkOrderReplied(Event):
    """A department replied to a work order; `first` marks the reply the rates use."""

    ce_type: ClassVar[str] = "hotline.workorder.replied.v1"

    work_order_id: str
    reply_id: str
    department: str
    quality: ReplyQuality
    at: PlausibleTime
    first: bool

    def occurred_at(self) -> datetime:
        return self.at


class WorkOrderOverdue(Event):
    """A work order's deadline passed with no reply. Emitted once per work order."""

    ce_type: ClassVar[str] = "hotline.workorder.overdue.v1"

    work_order_id: str
    department: str
    due_at: PlausibleTime
    detected_at: PlausibleTime

    def occurred_at(self) -> datetime:
        return self.detected_at


class WorkOrderDueSoon(Event):
    """A work order with no reply is close to its deadline (督办 warning): emitted once per
    work order, a configurable number of working days before `due_at`, for departments to
    subscribe to."""

    ce_type: ClassVar[str] = "hotline.workorder.due_soon.v1"

    work_order_id: str
    department: str
    due_at: PlausibleTime
    warned_at: PlausibleTime

    def occurred_at(self) -> datetime:
        return self.warned_at


class CallbackLogged(Event):
    """The hotline called the citizen back (回访) and, if reached, asked for satisfaction."""

    ce_type: ClassVar[str] = "hotline.callback.logged.v1"

    callback_id: str
    reached: bool
    satisfaction: Satisfaction | None = None
    at: PlausibleTime

    def occurred_at(self) -> datetime:
        return self.at


class TicketReopened(Event):
    """A reached callback answered `unsatisfied` reopened the ticket (重办): emitted by
    followup in the callback's own transaction; the ticket's next work order is a redo."""

    ce_type: ClassVar[str] = "hotline.ticket.reopened.v1"

    callback_id: str
    at: PlausibleTime

    def occurred_at(self) -> datetime:
        return self.at


EVENT_TYPES: dict[str, type[Event]] = {
    model.ce_type: model
    for model in (
        TicketSubmitted,
        TransferAttempted,
        WorkOrderCreated,
        WorkOrderReplied,
        WorkOrderOverdue,
        WorkOrderDueSoon,
        CallbackLogged,
        TicketReopened,
    )
}
