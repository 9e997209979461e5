"""What intake's routes are given, built once by `create_app`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from shared.app import ServiceDeps, depends_on_deps
from shared.cities import Cities
from shared.privacy import PhoneHasher


@dataclass(frozen=True)
class IntakeDeps(ServiceDeps):
    """The database and settings, the keyed hash of phone numbers, and the cities a ticket
    may name."""

    hasher: PhoneHasher
    cities: Cities


Deps = Annotated[IntakeDeps, depends_on_deps(IntakeDeps)]
