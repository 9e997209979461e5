"""Metrics's app: the evaluation rates (overall, per dimension and per period) and the
unanswered work-order audit."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from services.metrics.answers import SharedAnswers
from services.metrics.api import router
from services.metrics.api_periods import router as period_router
from services.metrics.api_tickets import router as tickets_router
from services.metrics.calendar_days import working_days_keeper
from services.metrics.deps import MetricsDeps
from services.metrics.projections import projections
from services.metrics.prometheus import install_series, rate_series_refresher
from services.metrics.unit_of_work import MetricsUnitOfWork
from shared.app import create_service_app
from shared.names import CONSUMES, PUBLISHERS
from shared.privacy import PhoneHasher, load_or_create_key
from shared.runtime import Runtime, ServiceSpec
from shared.settings import Settings
from shared.workdays import WorkCalendar


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build metrics's app; the working-day calendar is loaded here, never at import."""
    settings = settings or Settings()
    calendar = WorkCalendar.load(settings.holiday_path())
    spec = ServiceSpec(
        name="metrics",
        title="12345 hotline: metrics",
        migrations=Path(__file__).parent / "migrations",
        # The fixed /rates/by/day|week|month before /rates/by/{dimension}, which would catch them.
        routers=[period_router, router, tickets_router],
        publishes="metrics" in PUBLISHERS,
        consumes=CONSUMES["metrics"],
        projections=projections,
        background=(rate_series_refresher, working_days_keeper(calendar)),
        unit_of_work=MetricsUnitOfWork,
    )
    runtime = Runtime(spec, settings)
    install_series()
    return create_service_app(
        runtime,
        MetricsDeps(
            database=runtime.database,
            settings=settings,
            auth=runtime.auth,
            calendar=calendar,
            answers=SharedAnswers(settings.rates_answer_seconds),
            hasher=PhoneHasher(
                load_or_create_key(settings.phone_hash_key, settings.data_dir / "phone-hash.key")
            ),
        ),
    )
