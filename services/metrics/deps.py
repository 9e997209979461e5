"""What metrics's routes are given, built once by `create_app`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from shared.app import ServiceDeps, depends_on_deps
from shared.workdays import WorkCalendar


@dataclass(frozen=True)
class MetricsDeps(ServiceDeps):
    """The database and settings, and the working-day calendar (ages of work orders)."""

    calendar: WorkCalendar


Deps = Annotated[MetricsDeps, depends_on_deps(MetricsDeps)]
