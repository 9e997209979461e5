"""What dispatch's routes are given, built once by `create_app`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from services.dispatch.domain import DispatchPolicy
from shared.app import ServiceDeps, depends_on_deps


@dataclass(frozen=True)
class DispatchDeps(ServiceDeps):
    """The database and settings, and the working-day calendar with its defaults."""

    policy: DispatchPolicy


Deps = Annotated[DispatchDeps, depends_on_deps(DispatchDeps)]
