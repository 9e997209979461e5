"""Saying plainly when the command-line tools cannot reach the database they work on (which
`hotline.stack_env.stack_settings` finds: `DATABASE_URL`, else the embedded stack's)."""

from __future__ import annotations

import sqlalchemy as sa
import typer
from rich.console import Console
from sqlalchemy.engine import make_url

from shared.settings import Settings

UNREACHABLE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    sa.exc.OperationalError,
    sa.exc.InterfaceError,
)
"""What reaching a database that is not there raises."""


def unreachable(settings: Settings, exc: BaseException) -> typer.Exit:
    """Say on stderr that the database cannot be reached and how to point at one; returns the
    exit to raise."""
    host = make_url(settings.database_url).render_as_string(hide_password=True)
    Console(stderr=True).print(
        f"[red]error:[/red] cannot reach the database at {host} ({type(exc).__name__}): "
        "is `hotline up` running here, or is DATABASE_URL set?",
        highlight=False,
    )
    return typer.Exit(2)
