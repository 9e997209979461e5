"""The embedded PostgreSQL: Debian's or the pgserver wheel's binaries, a persistent cluster.

As root, the server runs as an unprivileged user, because PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import asyncio
import ctypes
import importlib.util
import logging
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import IO, Any, TypeVar
from urllib.parse import quote

from hotline.embedded.process import (
    LOOPBACK,
    EmbeddedStartError,
    Launch,
    RunAs,
    load_libc,
    open_log,
    pdeathsig_preexec,
    start_server,
    terminate,
)

# The package's logger, as before it was split into modules: log lines keep their logger name.
log = logging.getLogger(__package__)

_T = TypeVar("_T")

_PG_SUPERUSER = "postgres"
_FALLBACK_PG_USER = "hotline"


@dataclass
class RunningPostgres:
    """A PostgreSQL postmaster child process; its cluster persists in `data_path`."""

    url: str
    process: subprocess.Popen[bytes]
    data_path: Path
    log_path: Path

    @property
    def port(self) -> int:
        """The TCP port the postmaster listens on."""
        return int(self.url.rsplit(":", 1)[1].split("/", 1)[0])

    def stop(self, timeout: float = 30.0) -> None:
        """Fast shutdown (SIGINT: roll back sessions, checkpoint, exit), SIGKILL after `timeout`.

        Safe to call more than once.
        """
        terminate(self.process, signal.SIGINT, timeout, "postgres")


@dataclass(frozen=True)
class _PgBinaries:
    """One PostgreSQL installation: initdb, postgres and pg_ctl of the same version."""

    postgres: Path
    initdb: Path
    pg_ctl: Path
    source: str

    def major_version(self) -> int | None:
        """The major version reported by `postgres --version` (allowed as root), or None."""
        try:
            out = subprocess.run(  # noqa: S603 - fixed argv, no shell
                [str(self.postgres), "--version"],
                capture_output=True,
                check=True,
                timeout=30,
                text=True,
            ).stdout
        except (OSError, subprocess.SubprocessError):
            return None
        match = re.search(r"\(PostgreSQL\)\s+(\d+)", out)
        return int(match.group(1)) if match else None


def _bin_dir_candidate(bin_dir: Path, source: str) -> _PgBinaries | None:
    """The installation in `bin_dir`, if it holds all three executables."""
    paths = [bin_dir / name for name in ("postgres", "initdb", "pg_ctl")]
    if all(p.is_file() and os.access(p, os.X_OK) for p in paths):
        return _PgBinaries(paths[0], paths[1], paths[2], source)
    return None


def _pg_candidates() -> list[_PgBinaries]:
    """PostgreSQL installations in order of preference: PATH, Debian's layout, pgserver's wheel."""
    found: list[_PgBinaries] = []
    postgres, initdb, pg_ctl = (shutil.which(name) for name in ("postgres", "initdb", "pg_ctl"))
    if postgres and initdb and pg_ctl:
        found.append(_PgBinaries(Path(postgres), Path(initdb), Path(pg_ctl), "PATH"))

    def version_key(path: Path) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", path.name)) or (-1,)

    debian_root = Path("/usr/lib/postgresql")
    if debian_root.is_dir():
        for version_dir in sorted(debian_root.iterdir(), key=version_key, reverse=True):
            candidate = _bin_dir_candidate(version_dir / "bin", str(version_dir / "bin"))
            if candidate is not None:
                found.append(candidate)

    # The pgserver wheel bundles a full installation under pgserver/pginstall/{bin,lib,share}.
    # Locate the package without importing it: its import runs setup code we do not want.
    spec = importlib.util.find_spec("pgserver")
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = _bin_dir_candidate(Path(location) / "pginstall" / "bin", "pgserver wheel")
        if candidate is not None:
            found.append(candidate)
    return found


def _pg_binaries(cluster: Path) -> _PgBinaries:
    """Pick the installation to use; an existing cluster needs the major version that made it."""
    candidates = _pg_candidates()
    if not candidates:
        raise EmbeddedStartError(
            "No PostgreSQL binaries (postgres, initdb, pg_ctl) found on PATH, in "
            "/usr/lib/postgresql/*/bin or in the pgserver wheel. Install PostgreSQL "
            "(e.g. `apt-get install postgresql`) or the pgserver wheel (`make venv`)."
        )
    version_file = cluster / "PG_VERSION"
    if not version_file.exists():
        return candidates[0]
    wanted = int(version_file.read_text().strip().split(".")[0])
    seen = []
    for candidate in candidates:
        version = candidate.major_version()
        if version == wanted:
            return candidate
        seen.append(f"{candidate.postgres} ({version})")
    raise EmbeddedStartError(
        f"The cluster in {cluster} was made by PostgreSQL {wanted}, but only these servers were "
        f"found: {', '.join(seen)}. Install PostgreSQL {wanted}, or move the cluster away to "
        "start afresh (its data would be lost)."
    )


def _pg_run_as() -> RunAs | None:
    """The account to run PostgreSQL as: None when not root, else `postgres` or `hotline`."""
    if os.geteuid() != 0:
        return None
    for name in (_PG_SUPERUSER, _FALLBACK_PG_USER):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return RunAs(name, entry.pw_uid, entry.pw_gid)
    useradd = shutil.which("useradd")
    if useradd is None:
        raise EmbeddedStartError(
            "PostgreSQL cannot run as root and there is no `postgres` user; creating the "
            f"`{_FALLBACK_PG_USER}` system user needs `useradd`, which is not installed."
        )
    log.warning("creating system user %r to run PostgreSQL (it refuses root)", _FALLBACK_PG_USER)
    command = [useradd, "--system", "--no-create-home", "--user-group"]
    if Path("/usr/sbin/nologin").exists():
        command += ["--shell", "/usr/sbin/nologin"]
    result = subprocess.run(  # noqa: S603 - fixed argv, no shell
        [*command, _FALLBACK_PG_USER], capture_output=True, text=True, check=False, timeout=60
    )
    if result.returncode != 0:
        raise EmbeddedStartError(
            f"Could not create the system user {_FALLBACK_PG_USER!r}: {result.stderr.strip()}"
        )
    entry = pwd.getpwnam(_FALLBACK_PG_USER)
    return RunAs(_FALLBACK_PG_USER, entry.pw_uid, entry.pw_gid)


def _blocking_ancestor(path: Path, run_as: RunAs) -> Path | None:
    """The first folder above `path` that `run_as` may not enter, judged by its mode bits."""
    groups = set(os.getgrouplist(run_as.name, run_as.gid))
    for folder in reversed(path.parents):
        info = folder.stat()
        if info.st_uid == run_as.uid:
            allowed = info.st_mode & stat.S_IXUSR
        elif info.st_gid in groups:
            allowed = info.st_mode & stat.S_IXGRP
        else:
            allowed = info.st_mode & stat.S_IXOTH
        if not allowed:
            return folder
    return None


def _check_reachable(cluster: Path, run_as: RunAs) -> None:
    """Fail clearly if `run_as` cannot reach the cluster folder (we never chmod the user's folders).

    The decision comes from the account itself (`test -x` run as it, so ACLs count); the mode
    bits only serve to name the folder in the message.
    """
    test = shutil.which("test") or "/usr/bin/test"
    probe = subprocess.run(  # noqa: S603 - fixed argv, no shell
        [test, "-x", str(cluster)],
        check=False,
        timeout=30,
        cwd="/",
        **run_as.popen_kwargs(),
    )
    if probe.returncode == 0:
        return
    blocker = _blocking_ancestor(cluster, run_as)
    where = f"the folder {blocker}" if blocker else "a parent folder"
    raise EmbeddedStartError(
        f"PostgreSQL runs as the user {run_as.name!r} (it refuses root), but {where} of "
        f"{cluster} is not traversable by that user. Set HOTLINE_DATA_DIR to a folder it can "
        "reach (e.g. one under /var/lib or /srv), or grant it search (x) permission yourself."
    )


def _prepare_cluster_dir(cluster: Path, run_as: RunAs | None) -> None:
    """Create the cluster folder with the ownership and mode PostgreSQL insists on."""
    cluster.mkdir(parents=True, exist_ok=True, mode=0o700)
    if run_as is not None:
        if cluster.stat().st_uid != run_as.uid:
            log.info("handing %s to the user %r", cluster, run_as.name)
            for root, dirs, files in os.walk(cluster):
                for name in (*dirs, *files):
                    os.lchown(os.path.join(root, name), run_as.uid, run_as.gid)
        os.chown(cluster, run_as.uid, run_as.gid)
        _check_reachable(cluster, run_as)
    if stat.S_IMODE(cluster.stat().st_mode) not in (0o700, 0o750):
        cluster.chmod(0o700)


def _run_pg_tool(
    command: list[str],
    cluster: Path,
    run_as: RunAs | None,
    log_file: IO[bytes],
    *,
    timeout: float,
) -> int:
    """Run initdb or pg_ctl as the cluster's owner, output to the log; return its exit code."""
    log.debug("running %s", command)
    try:
        result = subprocess.run(  # noqa: S603 - fixed argv, no shell
            command,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            check=False,
            timeout=timeout,
            cwd=cluster,
            preexec_fn=pdeathsig_preexec(signal.SIGTERM),  # see pdeathsig_preexec
            **(run_as.popen_kwargs() if run_as else {}),
        )
    except subprocess.TimeoutExpired as exc:
        raise EmbeddedStartError(
            f"{command[0]} did not finish within {timeout:.0f}s; see {log_file.name}"
        ) from exc
    except OSError as exc:
        who = f" as the user {run_as.name!r}" if run_as else ""
        raise EmbeddedStartError(f"Could not run {command[0]}{who}: {exc}") from exc
    return result.returncode


def _read_pidfile(cluster: Path) -> list[str]:
    """postmaster.pid's lines: pid, data dir, start time, port, socket dir, host, shm, status."""
    try:
        return (cluster / "postmaster.pid").read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return []


def _is_postmaster_of(pid: int, cluster: Path) -> bool:
    """Whether `pid` is alive and runs in `cluster` (postgres chdirs to its data directory)."""
    try:
        return Path(os.readlink(f"/proc/{pid}/cwd")) == cluster.resolve()
    except FileNotFoundError:
        return False  # gone, or a zombie waiting to be reaped
    except OSError:
        try:  # no access to /proc/<pid>/cwd: fall back to "some process has that pid"
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def _wait_gone(pid: int, cluster: Path, timeout: float) -> bool:
    """Poll until `pid` no longer runs in `cluster`."""
    deadline = time.monotonic() + timeout
    while _is_postmaster_of(pid, cluster):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def _stop_leftover_postmaster(
    binaries: _PgBinaries, cluster: Path, run_as: RunAs | None, log_file: IO[bytes]
) -> None:
    """Stop a postmaster that an earlier, crashed run left behind on this cluster."""
    lines = _read_pidfile(cluster)
    if not lines or not lines[0].strip().lstrip("-").isdigit():
        return
    pid = abs(int(lines[0]))  # a negative pid marks a single-user backend
    if pid == os.getpid() or not _is_postmaster_of(pid, cluster):
        return  # a stale pid file: postgres itself ignores it when the pid is dead
    log.warning("stopping postmaster pid %d left running on %s by an earlier run", pid, cluster)
    command = [str(binaries.pg_ctl), "stop", "-D", str(cluster), "-m", "fast", "-w", "-t", "30"]
    returncode = _run_pg_tool(command, cluster, run_as, log_file, timeout=60)
    if returncode != 0 or not _wait_gone(pid, cluster, 10.0):
        raise EmbeddedStartError(
            f"A PostgreSQL server (pid {pid}) is still running on {cluster} and `pg_ctl stop` "
            f"could not stop it (exit {returncode}); see {log_file.name}. Stop it by "
            "hand before starting again."
        )


def _initdb_locale_args() -> list[str]:
    """C.UTF-8 when the C library has it (so regexes and case rules know CJK), else C."""
    libc = load_libc()
    libc.newlocale.restype = ctypes.c_void_p
    libc.newlocale.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p]
    libc.freelocale.argtypes = [ctypes.c_void_p]
    lc_all_mask = 0x1FBF  # glibc's LC_ALL_MASK
    handle = libc.newlocale(lc_all_mask, b"C.UTF-8", None)
    if handle:
        libc.freelocale(handle)
        return ["--locale=C.UTF-8"]
    return ["--no-locale"]


def _initdb(
    binaries: _PgBinaries, cluster: Path, run_as: RunAs | None, log_file: IO[bytes]
) -> None:
    """Create the cluster once; its trust auth is fine because it listens on 127.0.0.1 only."""
    if any(cluster.iterdir()):
        raise EmbeddedStartError(
            f"{cluster} is not empty but holds no PostgreSQL cluster (no PG_VERSION), maybe "
            "from an interrupted first start. Remove it to let hotline create a new cluster."
        )
    log.info("creating PostgreSQL cluster in %s with %s", cluster, binaries.initdb)
    command = [
        str(binaries.initdb),
        "-D",
        str(cluster),
        "-U",
        _PG_SUPERUSER,
        "--auth=trust",
        "-E",
        "UTF8",
        *_initdb_locale_args(),
    ]
    if (binaries.major_version() or 0) >= 14:
        command.append("--no-instructions")  # its "start with pg_ctl" hint would mislead
    returncode = _run_pg_tool(command, cluster, run_as, log_file, timeout=300)
    if returncode != 0:
        raise EmbeddedStartError(f"initdb failed with exit {returncode}; see {log_file.name}")


def _postmaster_ready(cluster: Path, pid: int) -> bool:
    """Whether postmaster.pid, written by `pid`, says it accepts connections (as pg_ctl -w does)."""
    lines = _read_pidfile(cluster)
    return len(lines) >= 8 and lines[0].strip() == str(pid) and lines[7].strip() == "ready"


async def _ensure_database(port: int, database: str, deadline: float) -> None:
    """Create `database` unless it exists, connecting to the `postgres` maintenance database."""
    import asyncpg  # only needed when postgres is started

    while True:
        try:
            conn = await asyncpg.connect(
                host=LOOPBACK,
                port=port,
                user=_PG_SUPERUSER,
                database="postgres",
                timeout=max(1.0, deadline - time.monotonic()),
            )
            break
        except (OSError, asyncpg.CannotConnectNowError):
            if time.monotonic() >= deadline:
                raise
            await asyncio.sleep(0.1)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database)
        if not exists:
            log.info("creating database %r", database)
            quoted = '"' + database.replace('"', '""') + '"'
            await conn.execute(f"CREATE DATABASE {quoted}")
    finally:
        await conn.close()


def _run_coroutine(factory: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    """Run a coroutine to completion from sync code, even if this thread runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="hotline-embedded") as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()


def _postmaster_launch(
    binaries: _PgBinaries, cluster: Path, run_as: RunAs | None, log_path: Path, port: int
) -> Launch:
    """Run the postmaster in the foreground as our child; ready when its pid file says so."""
    command = [
        str(binaries.postgres),
        "-D",
        str(cluster),
        "-p",
        str(port),
        "-c",
        f"listen_addresses={LOOPBACK}",
        # TCP only: a socket path under <data_dir> could pass the 107-byte limit, and a shared
        # /tmp socket could collide with other clusters. Everything connects over 127.0.0.1.
        "-c",
        "unix_socket_directories=",
        "-c",
        "max_connections=200",
        "-c",
        "shared_buffers=128MB",
        "-c",
        "logging_collector=off",
        "-c",
        "log_line_prefix=%m [%p] ",
    ]
    return Launch(
        name="postgres",
        program="postgres",
        title="PostgreSQL",
        cannot_run=f"Could not run {binaries.postgres}"
        + (f" as the user {run_as.name!r}" if run_as else ""),
        port_was_taken=lambda tail: "could not bind" in tail and "already in use" in tail,
        # SIGINT is a fast shutdown: SIGTERM would be a "smart" shutdown that waits for every
        # client to disconnect. As the parent-death signal it is set after the uid switch (see
        # pdeathsig_preexec) and postgres keeps it, so it works when we run as root too.
        stop_signal=signal.SIGINT,
        stop_timeout=10.0,
        command=command,
        popen_kwargs={"cwd": cluster, **(run_as.popen_kwargs() if run_as else {})},
        log_path=log_path,
        log_banner=f"postgres on {LOOPBACK}:{port}",
        is_ready=lambda process: _postmaster_ready(cluster, process.pid),
    )


def start_postgres(
    data_dir: Path,
    port: int | None = None,
    *,
    ready_timeout: float = 60.0,
    database: str = "hotline",
) -> RunningPostgres:
    """Start PostgreSQL on 127.0.0.1 with its cluster in `<data_dir>/postgres`; create `database`.

    The cluster persists: initdb runs only on the first start. A postmaster left running on the
    cluster by a crashed earlier run is stopped first. As root, the server runs as the `postgres`
    user (or a `hotline` system user, created if needed). Logs go to
    `<data_dir>/logs/postgres.log`. `ready_timeout` covers the whole start, initdb included.
    Raises EmbeddedStartError on failure.
    """
    data_dir = Path(data_dir).resolve()
    cluster = data_dir / "postgres"
    log_path = data_dir / "logs" / "postgres.log"
    deadline = time.monotonic() + ready_timeout

    run_as = _pg_run_as()
    _prepare_cluster_dir(cluster, run_as)
    binaries = _pg_binaries(cluster)
    log.debug("using PostgreSQL from %s (%s)", binaries.postgres, binaries.source)

    log_file, _ = open_log(log_path, f"preparing the cluster in {cluster}")
    try:
        _stop_leftover_postmaster(binaries, cluster, run_as, log_file)
        if not (cluster / "PG_VERSION").exists():
            _initdb(binaries, cluster, run_as, log_file)
    finally:
        log_file.close()

    process, chosen = start_server(
        partial(_postmaster_launch, binaries, cluster, run_as, log_path), port, deadline
    )
    running = RunningPostgres(
        url=f"postgresql+asyncpg://{_PG_SUPERUSER}@{LOOPBACK}:{chosen}/" + quote(database, safe=""),
        process=process,
        data_path=cluster,
        log_path=log_path,
    )
    try:
        _run_coroutine(lambda: _ensure_database(chosen, database, deadline))
    except Exception as exc:
        running.stop(timeout=10.0)
        raise EmbeddedStartError(
            f"PostgreSQL started but the database {database!r} could not be created: {exc}"
        ) from exc
    log.info("postgres ready on %s:%d (pid %d)", LOOPBACK, chosen, process.pid)
    return running
