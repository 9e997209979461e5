"""Followup's app: callbacks (回访), satisfaction and the due-callback queue."""

from __future__ import annotations

from fastapi import FastAPI

from services.followup import handlers
from services.followup.api import router
from shared.events import TicketSubmitted, WorkOrderReplied
from shared.runtime import ServiceSpec, create_service_app
from shared.settings import Settings


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build followup's app."""
    return create_service_app(
        ServiceSpec(
            name="followup",
            title="12345 hotline: followup",
            routers=[router],
            publishes=True,
            consumes=("intake", "dispatch"),
            handlers={
                TicketSubmitted: handlers.record_ticket,
                WorkOrderReplied: handlers.record_reply,
            },
        ),
        settings or Settings(),
    )
