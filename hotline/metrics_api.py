"""The metrics service's HTTP API as the CLI's audit and ticket commands speak to it: where
it is, which key to send, and one way to fail when it cannot answer."""

from __future__ import annotations

import csv
import io
from datetime import datetime
from typing import Annotated, Any, Final, TextIO
from zoneinfo import ZoneInfo

import httpx
import typer
from rich.console import Console
from rich.progress import MofNCompleteColumn, Progress

from shared.auth.keyfile import KEYS_FILE_NAME, KeyRing, KeysFileError
from shared.settings import Settings

SHANGHAI = ZoneInfo("Asia/Shanghai")

UrlOption = Annotated[
    str | None,
    typer.Option(help="Metrics service base URL (default: http://127.0.0.1:<metrics port>)."),
]
KeyOption = Annotated[
    str | None,
    typer.Option(
        envvar="HOTLINE_API_KEY",
        help="An auditor's API key (default: the one in <data dir>/api-keys.toml).",
        show_default=False,
    ),
]


def default_url() -> str:
    """The metrics service on this machine, at its configured port."""
    return f"http://127.0.0.1:{Settings().metrics_port}"


def auditor_key(given: str | None) -> str | None:
    """The key to send: the one given, else the auditor key of the embedded stack's keys
    file, else none (the service then answers 401, which is said plainly)."""
    if given:
        return given
    keys_file = Settings().data_dir / KEYS_FILE_NAME
    if not keys_file.exists():
        return None
    try:
        return KeyRing.from_file(keys_file).token("auditor")
    except (KeysFileError, KeyError):
        return None


def client(url: str | None, key: str | None, *, timeout: float = 30.0) -> httpx.Client:
    """A client of the metrics service at `url` (default: this machine's) with the key."""
    token = auditor_key(key)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=url or default_url(), timeout=timeout, headers=headers)


def get(http: httpx.Client, path: str, params: dict[str, Any] | None = None) -> httpx.Response:
    """GET `path`; typer.Exit(1) with a clear message if the API cannot answer it."""
    try:
        response = http.get(path, params=params)
    except httpx.TransportError as exc:
        typer.echo(f"error: cannot reach the metrics service at {http.base_url}: {exc}", err=True)
        typer.echo("is it running? (`hotline up`, or pass --url)", err=True)
        raise typer.Exit(1) from exc
    if response.status_code != 200:
        typer.echo(
            f"error: the metrics service answered {response.status_code}: {_detail(response)}",
            err=True,
        )
        if response.status_code in (401, 403):
            typer.echo("pass an auditor's key with --key (or HOTLINE_API_KEY)", err=True)
        raise typer.Exit(1)
    return response


def _detail(response: httpx.Response) -> str:
    try:
        return str(response.json().get("detail", response.text))
    except ValueError:
        return response.text[:500]


def local_time(moment: str | None) -> str:
    """An API time as Asia/Shanghai minutes; "" for none."""
    if moment is None:
        return ""
    return datetime.fromisoformat(moment).astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M")


PAGE_ROWS: Final = 1000
"""Rows asked for per page while following cursors (the API's largest page)."""


def export_csv(
    http: httpx.Client, path: str, params: dict[str, Any], out: TextIO, *, what: str
) -> int:
    """Every row of a list as CSV on `out`: CSV pages of PAGE_ROWS followed by their
    `X-Next-Cursor`, one header line; a progress bar on a terminal's stderr. Returns the
    number of rows written."""
    cursor: str | None = None
    written = 0
    console = Console(stderr=True)
    with Progress(
        *Progress.get_default_columns(),
        MofNCompleteColumn(),
        console=console,
        disable=not console.is_terminal,
        transient=True,
    ) as progress:
        task = progress.add_task(f"exporting {what}", total=None)
        while True:
            page_params = {**params, "format": "csv", "limit": PAGE_ROWS}
            if cursor:
                page_params["cursor"] = cursor
            response = get(http, path, page_params)
            header, _, body = response.text.partition("\n")
            if written == 0:
                out.write(header + "\n")
            out.write(body)
            written += sum(1 for _ in csv.reader(io.StringIO(body)))
            progress.update(task, completed=written, total=int(response.headers["X-Total-Count"]))
            cursor = response.headers.get("X-Next-Cursor")
            if not cursor:
                return written
