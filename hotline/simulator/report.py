"""Expected rates beside the ones `/rates` reports: compared, shown as a table or JSON.

A rate matches when its denominators are equal, its numerators are equal (waits to the
millisecond) and so its values; a rate missing from `/rates` does not match.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final

from rich.console import Console
from rich.table import Table

from hotline.simulator.truth import RATE_NAMES, WAIT_QUANTUM, Expected

if TYPE_CHECKING:
    from hotline.simulator.driver import RunResult

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


def shown_value(name: str, value: float | None) -> str:
    """A rate's value as people read it: a percentage, or seconds for the mean wait."""
    if value is None:
        return "null"
    if name == "avg_wait_seconds":
        return f"{value:.2f} s"
    return f"{value:.2%}"


def shown_part(numerator: Decimal | float | int, denominator: int) -> str:
    """`(numerator/denominator)`; numerators with a fraction to the millisecond."""
    number = Decimal(repr(numerator)) if isinstance(numerator, float) else Decimal(numerator)
    shown = f"{number.quantize(WAIT_QUANTUM)}" if number % 1 else f"{int(number)}"
    return f"({shown}/{denominator})"


def render_table(result: RunResult, console: Console) -> None:
    """The side-by-side table, and a verdict line."""
    window = result.window
    table = Table(
        title=f"simulator run {result.run_id}: {len(result.sent)} tickets submitted "
        f"{window.since:%Y-%m-%d %H:%M} .. {window.until:%Y-%m-%d %H:%M} (UTC+8)",
        title_justify="left",
    )
    table.add_column("rate")
    table.add_column("expected (sent)", justify="right")
    table.add_column("/rates", justify="right")
    table.add_column("match", justify="center")
    for row in result.comparison.rows:
        expected = row.expected
        got = row.reported
        table.add_row(
            row.name,
            f"{shown_value(row.name, expected.value)} "
            f"{shown_part(expected.numerator, expected.denominator)}",
            "missing"
            if got is None
            else f"{shown_value(row.name, got.value)} {shown_part(got.numerator, got.denominator)}",
            "[green]✓[/green]" if row.match else "[red]✗[/red]",
        )
    console.print(table)
    for failure in result.failures:
        console.print(f"[red]failed:[/red] {failure}", markup=True, highlight=False)
    if result.failures:
        console.print(f"[red]{len(result.failures)} requests failed[/red] (exit 2)")
    elif result.comparison.match:
        console.print(
            f"[green]all {len(result.comparison.rows)} rates match[/green] "
            f"(settled in {result.settle_seconds:.1f} s)"
        )
    else:
        console.print(
            f"[red]{len(result.comparison.mismatched)} rates differ[/red] after "
            f"{result.settle_seconds:.1f} s: {', '.join(result.comparison.mismatched)}"
        )


def as_json(result: RunResult) -> dict[str, Any]:
    """The run's outcome for machines."""
    return {
        "run_id": result.run_id,
        "seed": result.seed,
        "window": {
            "since": result.window.since.isoformat(),
            "until": result.window.until.isoformat(),
        },
        "tickets": len(result.sent),
        "baseline_added": result.baseline is not None,
        "rates": [
            {
                "rate": row.name,
                "expected": _json_rate(
                    row.expected.value, row.expected.numerator, row.expected.denominator
                ),
                "reported": None
                if row.reported is None
                else _json_rate(
                    row.reported.value, row.reported.numerator, row.reported.denominator
                ),
                "match": row.match,
            }
            for row in result.comparison.rows
        ],
        "match": result.comparison.match,
        "failures": result.failures,
        "settle_seconds": round(result.settle_seconds, 3),
        "exit_code": result.exit_code,
    }


def _json_rate(
    value: float | None, numerator: Decimal | float | int, denominator: int
) -> dict[str, Any]:
    number = float(numerator) if isinstance(numerator, Decimal) else numerator
    return {"value": value, "numerator": number, "denominator": denominator}
