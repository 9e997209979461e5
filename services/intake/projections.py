"""Events intake applies: none. Intake is where tickets start; it consumes no topic."""

from __future__ import annotations

from shared.db import Transaction
from shared.projections import Projections

projections = Projections[Transaction]()
