"""Expected rates beside the ones `/rates` reports, compared.

A rate matches when its denominators are equal, its numerators are equal (waits to the
millisecond) and so its values; a rate missing from `/rates` does not match.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

from hotline.simulator.truth import WAIT_QUANTUM, Expected
from shared.names import RATE_NAMES

VALUE_TOLERANCE: Final = 1e-9


@dataclass(frozen=True)
class Reported:
    """One rate as `/rates` answered it."""

    value: float | None
    numerator: float
    denominator: int


@dataclass(frozen=True)
class Row:
    """One rate, expected and reported."""

    name: str
    expected: Expected
    reported: Reported | None

    @property
    def match(self) -> bool:
        """Same denominator, same numerator (to the millisecond for waits), same value."""
        expected, reported = self.expected, self.reported
        if reported is None:
            return False
        if expected.denominator != reported.denominator:
            return False
        numerator = Decimal(repr(reported.numerator)).quantize(WAIT_QUANTUM)
        if numerator != Decimal(expected.numerator).quantize(WAIT_QUANTUM):
            return False
        if expected.value is None or reported.value is None:
            return expected.value is None and reported.value is None
        return abs(expected.value - reported.value) <= VALUE_TOLERANCE * max(1.0, expected.value)


@dataclass(frozen=True)
class Comparison:
    """Every rate, expected and reported."""

    rows: tuple[Row, ...]

    @property
    def match(self) -> bool:
        """True when every rate matches."""
        return all(row.match for row in self.rows)

    @property
    def mismatched(self) -> list[str]:
        """The names of the rates that differ."""
        return [row.name for row in self.rows if not row.match]


def parse_reported(rates: dict[str, Any]) -> dict[str, Reported]:
    """The `rates` object of a `/rates` answer; malformed entries are left out."""
    parsed: dict[str, Reported] = {}
    for name, rate in rates.items():
        try:
            value = rate["value"]
            parsed[name] = Reported(
                value=None if value is None else float(value),
                numerator=float(rate["numerator"]),
                denominator=int(rate["denominator"]),
            )
        except (KeyError, TypeError, ValueError):
            continue
    return parsed


def compare(expected: dict[str, Expected], rates: dict[str, Any]) -> Comparison:
    """Each expected rate beside what `/rates` answered (`rates`: its `rates` object)."""
    reported = parse_reported(rates)
    return Comparison(tuple(Row(name, expected[name], reported.get(name)) for name in RATE_NAMES))


def reported_as_expected(rates: dict[str, Any]) -> dict[str, Expected]:
    """A `/rates` answer as expectations (to add what a window already held)."""
    reported = parse_reported(rates)
    baseline: dict[str, Expected] = {}
    for name in RATE_NAMES:
        rate = reported.get(name)
        if rate is None:
            baseline[name] = Expected.of(0, 0)
            continue
        numerator: Decimal | int = (
            int(rate.numerator)
            if float(rate.numerator).is_integer()
            else Decimal(repr(rate.numerator)).quantize(WAIT_QUANTUM)
        )
        baseline[name] = Expected.of(numerator, rate.denominator)
    return baseline
