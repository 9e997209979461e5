"""Dispatch's app: transfers, work orders with working-day deadlines, department replies."""

from __future__ import annotations

import logging
from pathlib import Path

from fastapi import FastAPI

from services.dispatch.api import router
from services.dispatch.deps import DispatchDeps
from services.dispatch.domain import DispatchPolicy
from services.dispatch.projections import projections
from services.dispatch.sweeper import deadline_sweeper
from shared.app import create_service_app
from shared.names import CONSUMES, PUBLISHERS
from shared.runtime import Runtime, ServiceSpec
from shared.settings import Settings
from shared.workdays import WorkCalendar

log = logging.getLogger(__name__)


def service_spec(policy: DispatchPolicy) -> ServiceSpec:
    """What makes dispatch itself; its deadline sweeper works by `policy`'s calendar."""
    return ServiceSpec(
        name="dispatch",
        title="12345 hotline: dispatch",
        migrations=Path(__file__).parent / "migrations",
        routers=[router],
        publishes="dispatch" in PUBLISHERS,
        consumes=CONSUMES["dispatch"],
        projections=projections,
        background=(deadline_sweeper(policy),),
    )


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build dispatch's app. The holiday file is read here: a malformed one stops startup."""
    settings = settings or Settings()
    holiday_file = settings.holiday_path()
    calendar = WorkCalendar.load(holiday_file)
    log.info(
        "work calendar loaded",
        extra={"holiday_file": str(holiday_file), "holiday_file_years": list(calendar.file_years)},
    )
    policy = DispatchPolicy(
        calendar=calendar,
        default_due_working_days=settings.default_due_working_days,
        retry_after_seconds=settings.retry_after_seconds,
        due_soon_working_days=settings.due_soon_working_days,
    )
    runtime = Runtime(service_spec(policy), settings)
    deps = DispatchDeps(
        database=runtime.database, settings=settings, auth=runtime.auth, policy=policy
    )
    return create_service_app(runtime, deps)
