"""What a run is asked to do: its options and its id. Every stage reads these (the players,
the window, the pacing), so they stand apart from the runs that use them."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date

from hotline.simulator.params import SimulatorParams

Say = Callable[[str], None]
"""Where a run's progress notes go (a line each)."""


@dataclass(frozen=True)
class RunConfig:
    """What to simulate and how fast; see `hotline simulate --help` for each option."""

    params: SimulatorParams = field(default_factory=SimulatorParams)
    tickets: int = 100
    rate: float = 50.0
    seed: int = 0
    concurrency: int = 16
    run_id: str | None = None
    days: int = 7
    window_start: date | None = None
    settle_timeout: float = 60.0
    duration: float | None = None
    """Stop starting stories this many seconds after the first (None: play all `tickets`)."""
    poll_interval: float = 0.5
    not_known_timeout: float = 60.0
    """How long to keep retrying a 409 `not_yet_known` (or a 503) before giving up."""
    summary_every: float = 10.0


def new_run_id() -> str:
    """A short random run id."""
    return secrets.token_hex(5)
