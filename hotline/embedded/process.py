"""What both embedded servers need from the OS, and the one loop that starts either of them.

Linux only (prctl, /proc).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from shared.clock import utc_now

# The package's logger, as before it was split into modules: log lines keep their logger name.
log = logging.getLogger(__package__)

LOOPBACK = "127.0.0.1"
_PR_SET_PDEATHSIG = 1
_PORT_ATTEMPTS = 3  # free_port() can race with other processes; retry when we chose the port
_LOG_TAIL_LINES = 25


class EmbeddedStartError(RuntimeError):
    """An embedded server could not be started; the message says why and what to do."""


class PortInUseError(EmbeddedStartError):
    """The child could not bind its port (another process took it after free_port())."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


_libc: ctypes.CDLL | None = None


def load_libc() -> ctypes.CDLL:
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
    libc = load_libc()
    parent_pid = os.getpid()

    def preexec() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


@dataclass(frozen=True)
class RunAs:
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
    stamp = utc_now().isoformat(timespec="seconds")
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


def send_signal(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
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
    send_signal(process, sig)
    send_signal(process, signal.SIGCONT)  # a paused (SIGSTOPped) child only sees `sig` once resumed
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        log.warning("%s (pid %d) did not exit within %.0fs, killing it", what, process.pid, timeout)
        send_signal(process, signal.SIGKILL)
        process.wait()
    log.info("%s (pid %d) exited with %s", what, process.pid, process.returncode)


@dataclass(frozen=True)
class Launch:
    """How to run one server on one port, tell when it is ready, and read why it failed."""

    # What it is called, and how its failures read
    name: str  # "broker", "postgres": in our log lines and in terminate()'s
    program: str  # "tansu", "postgres": in the warning that its port was taken
    title: str  # "The tansu broker", "PostgreSQL": starts the start-failure messages
    cannot_run: str  # "Could not run <binary>...", completed with the OSError
    port_was_taken: Callable[[str], bool]  # whether its log tail says it could not bind
    # How it shuts down cleanly: sent when it does not get ready in time, and by the kernel
    # when our thread dies (see pdeathsig_preexec).
    stop_signal: signal.Signals
    stop_timeout: float  # how long it may take to exit when it did not get ready
    # How it runs, and when it is ready
    command: list[str]
    popen_kwargs: Mapping[str, Any]  # env, cwd, user, ...
    log_path: Path
    log_banner: str  # what open_log() marks the start of this run with
    is_ready: Callable[[subprocess.Popen[bytes]], bool]


def spawn(launch: Launch) -> tuple[subprocess.Popen[bytes], int]:
    """Start the child with its output appended to its log, in its own session and with a
    parent-death signal; return it and the log offset where this run's lines start."""
    log_file, offset = open_log(launch.log_path, launch.log_banner)
    try:
        log.debug("starting %s: %s", launch.name, launch.command)
        process = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            launch.command,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=pdeathsig_preexec(launch.stop_signal),  # see pdeathsig_preexec
            **launch.popen_kwargs,
        )
    except OSError as exc:
        raise EmbeddedStartError(f"{launch.cannot_run}: {exc}") from exc
    finally:
        log_file.close()
    return process, offset


def exit_failure(
    launch: Launch, process: subprocess.Popen[bytes], offset: int, port_was_chosen: bool
) -> EmbeddedStartError:
    """The error for a child that exited before it was ready: a port-in-use one (which the
    caller may retry on another port) when we chose the port and its log says it was taken."""
    tail = _log_tail(launch.log_path, offset)
    message = _failure(launch.title, f"exited with {process.returncode}", launch.log_path, offset)
    if port_was_chosen and launch.port_was_taken(tail):
        return PortInUseError(message)
    return EmbeddedStartError(message)


def not_ready_failure(launch: Launch, offset: int) -> EmbeddedStartError:
    """The error for a child that did not get ready before the deadline."""
    return EmbeddedStartError(
        _failure(launch.title, "did not become ready in time", launch.log_path, offset)
    )


def _run_until_ready(
    launch: Launch, deadline: float, port_was_chosen: bool
) -> subprocess.Popen[bytes]:
    """Start the child with its output in its log, and wait until it is ready or fails."""
    process, offset = spawn(launch)
    while True:
        if process.poll() is not None:
            raise exit_failure(launch, process, offset, port_was_chosen)
        if launch.is_ready(process):
            return process
        if time.monotonic() >= deadline:
            terminate(process, launch.stop_signal, launch.stop_timeout, launch.name)
            raise not_ready_failure(launch, offset)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=0.05)  # doubles as a short poll interval


def start_server(
    launch_on: Callable[[int], Launch], port: int | None, deadline: float
) -> tuple[subprocess.Popen[bytes], int]:
    """Start a server on `port`, or on a free port, and return it once ready, with its port.

    A port we chose can be taken by another process before the child binds it; then the child
    is started again on another free port. A port the caller chose is not retried.
    """
    attempts = 1 if port is not None else _PORT_ATTEMPTS
    for attempt in range(1, attempts + 1):
        chosen = port if port is not None else free_port()
        launch = launch_on(chosen)
        try:
            return _run_until_ready(launch, deadline, port is None), chosen
        except PortInUseError:
            if attempt == attempts:
                raise
            log.warning(
                "port %d was taken before %s could bind it, trying another", chosen, launch.program
            )
    raise AssertionError("unreachable")  # pragma: no cover
