"""A comparison run's outcome shown: expected beside reported, as a table or JSON (the
comparing itself is in `comparison`)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from rich.console import Console
from rich.table import Table

from hotline.simulator.results import RunResult
from hotline.simulator.truth import WAIT_QUANTUM


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
