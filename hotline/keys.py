"""`hotline keys`: create, list and revoke API keys, import a keys file, or write a new one.

It works on the database (`DATABASE_URL`) like `hotline migrate`, so it needs no key of its
own; over HTTP, admins use `POST /keys` on any service.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from hotline.database import UNREACHABLE_ERRORS, unreachable
from hotline.stack_env import stack_settings
from shared.auth.keyfile import (
    KEYS_FILE_NAME,
    KeyEntry,
    KeyRing,
    KeysFileError,
    generate_entries,
    import_entries,
    read_keys_file,
    write_keys_file,
)
from shared.auth.store import AUTH_MIGRATIONS, KeyStore, standalone_key_store
from shared.errors import DomainError
from shared.migrations import upgrade
from shared.names import ROLES
from shared.settings import Settings

app = typer.Typer(help="API keys: create, list, revoke, import a keys file, write a new one.")

T = TypeVar("T")


@asynccontextmanager
async def key_store(settings: Settings) -> AsyncIterator[KeyStore]:
    """The key store of the configured database, its schema migrated first."""
    await asyncio.to_thread(upgrade, AUTH_MIGRATIONS, settings.database_url, settings.auth_schema())
    async with standalone_key_store(settings) as store:
        yield store


def _with_store(action: Callable[[KeyStore], Awaitable[T]]) -> T:
    settings = stack_settings()

    async def run() -> T:
        async with key_store(settings) as store:
            return await action(store)

    say = Console(stderr=True)
    try:
        return asyncio.run(run())
    except (DomainError, KeysFileError) as exc:
        say.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from exc
    except UNREACHABLE_ERRORS as exc:
        raise unreachable(settings, exc) from exc


@app.command()
def create(
    role: Annotated[str, typer.Option(help=f"One of {', '.join(ROLES)}.")],
    name: Annotated[str, typer.Option(help="Who or what holds the key.")],
    department: Annotated[
        str | None, typer.Option(help="The department a department key acts for.")
    ] = None,
) -> None:
    """Create a key and print its token (shown this once; only its hash is stored)."""
    token, record = _with_store(
        lambda store: store.create(name=name, role=role, department=department)
    )
    typer.echo(f"key {record.key_id} ({record.role}{_of(record.department)}) created: {name}")
    typer.echo("its token (shown this once, store it now):")
    typer.echo(token.value)


@app.command("list")
def list_keys(
    include_revoked: Annotated[bool, typer.Option("--all", help="Revoked keys too.")] = False,
) -> None:
    """Every key, without secrets."""
    records = _with_store(lambda store: store.list(include_revoked=include_revoked))
    table = Table("role", "department", "name", "created", "revoked")
    table.add_column("key id", no_wrap=True, min_width=16)  # whole, to copy into `revoke`
    for r in records:
        table.add_row(
            r.role,
            r.department or "",
            r.name,
            f"{r.created_at:%Y-%m-%d %H:%M}",
            f"{r.revoked_at:%Y-%m-%d %H:%M}" if r.revoked_at else "",
            r.key_id,
        )
    Console(width=None if sys.stdout.isatty() else 160).print(table)


@app.command()
def revoke(key_id: Annotated[str, typer.Argument(help="The key's id (not its token).")]) -> None:
    """Revoke a key: every service refuses it within a few seconds."""
    record = _with_store(lambda store: store.revoke(key_id))
    typer.echo(f"key {record.key_id} ({record.name}) revoked")


@app.command("import")
def import_file(
    keys_file: Annotated[Path, typer.Argument(exists=True, dir_okay=False)],
) -> None:
    """Store the keys of a keys file that are not stored yet (a deployment's secret)."""

    async def run(store: KeyStore) -> list[KeyEntry]:
        return await import_entries(store, read_keys_file(keys_file))

    added = _with_store(run)
    typer.echo(f"{len(added)} key(s) added from {keys_file}")


@app.command("new-file")
def new_file(
    keys_file: Annotated[Path, typer.Argument(dir_okay=False, help="Where to write it.")],
    departments: Annotated[
        str, typer.Option(help="Comma-separated departments to make a desk key for.")
    ] = "",
    label: Annotated[str, typer.Option(help="Prefix of the keys' names.")] = "deployment",
) -> None:
    """Write a new keys file (mode 0600): a key per role and per department. Nothing is stored
    until it is imported (`hotline keys import`, or docker compose's migrate step)."""
    if keys_file.exists():
        Console(stderr=True).print(f"[red]error:[/red] {keys_file} exists; not overwritten")
        raise typer.Exit(2)
    names = [d.strip() for d in departments.split(",") if d.strip()]
    write_keys_file(keys_file, generate_entries(names, label=label))
    typer.echo(f"wrote {keys_file}: keep it secret")


@app.command()
def token(
    role: Annotated[str, typer.Argument(help=f"One of {', '.join(ROLES)}.")],
    department: Annotated[
        str | None, typer.Option(help="For a department's desk key: which department.")
    ] = None,
    keys_file: Annotated[
        Path | None,
        typer.Option("--file", dir_okay=False, help="Default: <data dir>/api-keys.toml."),
    ] = None,
) -> None:
    """Print the token of a keys file's key for ROLE (for scripts: `$(hotline keys token
    operator)`); the embedded stack's keys file by default."""
    path = keys_file or Settings().data_dir / KEYS_FILE_NAME
    known = next((r for r in ROLES if r == role), None)
    try:
        if known is None:
            raise KeyError(f"no such role {role!r}; one of {', '.join(ROLES)}")
        typer.echo(KeyRing.from_file(path).token(known, department))
    except (KeysFileError, KeyError) as exc:
        Console(stderr=True).print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from exc


def _of(department: str | None) -> str:
    return f", {department}" if department else ""
