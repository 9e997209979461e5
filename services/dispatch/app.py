"""Dispatch's app: transfers, work orders with working-day deadlines, department replies."""

from __future__ import annotations

import logging

from fastapi import FastAPI

from services.dispatch import handlers
from services.dispatch.api import router
from services.dispatch.handlers import DispatchPolicy
from services.dispatch.sweeper import run_overdue_sweeper
from shared.events import CallbackLogged, TicketSubmitted
from shared.runtime import ServiceSpec, create_service_app
from shared.settings import Settings
from shared.workdays import WorkCalendar

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build dispatch's app. The holiday file is read here: a malformed one stops startup."""
    settings = settings or Settings()
    holiday_file = settings.holiday_path()
    calendar = WorkCalendar.load(holiday_file)
    log.info(
        "work calendar loaded",
        extra={"holiday_file": str(holiday_file), "holiday_file_years": list(calendar.file_years)},
    )
    app = create_service_app(
        ServiceSpec(
            name="dispatch",
            title="12345 hotline: dispatch",
            routers=[router],
            publishes=True,
            consumes=("intake", "followup"),
            handlers={
                TicketSubmitted: handlers.record_ticket,
                CallbackLogged: handlers.record_callback,
            },
            background=(run_overdue_sweeper,),
        ),
        settings,
    )
    app.state.dispatch_policy = DispatchPolicy(
        calendar=calendar,
        default_due_working_days=settings.default_due_working_days,
        retry_after_seconds=settings.retry_after_seconds,
    )
    return app
