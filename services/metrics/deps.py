"""What metrics's routes are given, built once by `create_app`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from services.metrics.answers import SharedAnswers
from shared.app import ServiceDeps, depends_on_deps
from shared.privacy import PhoneHasher
from shared.workdays import WorkCalendar


@dataclass(frozen=True)
class MetricsDeps(ServiceDeps):
    """The database and settings, the working-day calendar (ages of work orders), and the
    rate answers readers share."""

    calendar: WorkCalendar
    answers: SharedAnswers
    hasher: PhoneHasher
    """Hashes a searched phone number as intake hashed the recorded ones (the same key)."""


Deps = Annotated[MetricsDeps, depends_on_deps(MetricsDeps)]
