"""Metrics's app: the evaluation rates and the unanswered work-order audit."""

from __future__ import annotations

from fastapi import FastAPI

from services.metrics.api import router
from services.metrics.calendar_days import keep_working_days
from services.metrics.handlers import HANDLERS
from services.metrics.prometheus import install_series, refresh_series
from shared.runtime import ServiceSpec, create_service_app
from shared.settings import Settings
from shared.workdays import WorkCalendar


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build metrics's app; the working-day calendar is loaded here, never at import."""
    settings = settings or Settings()
    calendar = WorkCalendar.load(settings.holiday_path())
    app = create_service_app(
        ServiceSpec(
            name="metrics",
            title="12345 hotline: metrics",
            routers=[router],
            publishes=False,
            consumes=["intake", "dispatch", "followup"],
            handlers=HANDLERS,
            background=[refresh_series, keep_working_days(calendar)],
        ),
        settings,
    )
    app.state.calendar = calendar
    install_series()
    return app
