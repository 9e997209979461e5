"""What intake's routes are given, built once by `create_app`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from services.intake.privacy import PhoneHasher
from shared.app import ServiceDeps, depends_on_deps


@dataclass(frozen=True)
class IntakeDeps(ServiceDeps):
    """The database and settings, and the keyed hash of phone numbers."""

    hasher: PhoneHasher


Deps = Annotated[IntakeDeps, depends_on_deps(IntakeDeps)]
