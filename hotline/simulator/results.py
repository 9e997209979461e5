"""What a comparison run produced, apart from the run itself so that the report can show it
without importing the run (which imports the report)."""

from __future__ import annotations

from dataclasses import dataclass

from hotline.simulator.comparison import Comparison
from hotline.simulator.truth import Expected, SentTicket
from hotline.simulator.window import Window


@dataclass
class RunResult:
    """What a comparison run sent, expected and read back."""

    run_id: str
    seed: int
    window: Window
    sent: list[SentTicket]
    baseline: dict[str, Expected] | None
    comparison: Comparison
    failures: list[str]
    settle_seconds: float

    @property
    def exit_code(self) -> int:
        """0: everything matched; 1: a rate differs; 2: requests failed."""
        if self.failures:
            return 2
        return 0 if self.comparison.match else 1
