"""The one start loop retries a port it chose that was taken, and nothing else.

The "servers" are short Python children: one prints what tansu prints when its port is taken,
one says it listens and stays up, one fails for another reason.
"""

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hotline.embedded import EmbeddedStartError, process

PORT_TAKEN = "print('error: AddrInUse'); raise SystemExit(1)"
STAYS_UP = "import time; print('listening', flush=True); time.sleep(60)"
OTHER_FAILURE = "print('error: no such storage engine'); raise SystemExit(3)"


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Children a test started, stopped at teardown even if the test failed."""
    children: list[subprocess.Popen[bytes]] = []
    yield children
    for child in children:
        process.terminate(child, signal.SIGTERM, 5.0, "fake server")


def launches(
    tmp_path: Path, scripts: list[str], ports_seen: list[int]
) -> Callable[[int], process.Launch]:
    """A launch_on that runs the next script for each port it is asked for, and records it."""
    remaining = iter(scripts)
    log_path = tmp_path / "logs" / "fake.log"

    def launch_on(port: int) -> process.Launch:
        ports_seen.append(port)
        return process.Launch(
            name="fake",
            program="fake",
            title="The fake server",
            cannot_run="Could not run the fake server",
            port_was_taken=lambda tail: "AddrInUse" in tail,
            stop_signal=signal.SIGTERM,
            stop_timeout=5.0,
            command=[sys.executable, "-c", next(remaining)],
            popen_kwargs={},
            log_path=log_path,
            log_banner=f"fake server on {port}",
            is_ready=lambda child: "listening" in log_path.read_text(),
        )

    return launch_on


def test_a_chosen_port_that_was_taken_is_retried_on_a_new_port(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, started: list[subprocess.Popen[bytes]]
) -> None:
    free_ports = iter([41001, 41002])
    monkeypatch.setattr(process, "free_port", lambda: next(free_ports))
    ports_seen: list[int] = []
    launch_on = launches(tmp_path, [PORT_TAKEN, STAYS_UP], ports_seen)

    child, port = process.start_server(launch_on, None, time.monotonic() + 30)
    started.append(child)

    assert ports_seen == [41001, 41002]
    assert port == 41002
    assert child.poll() is None  # the one returned is the one running


def test_another_failure_is_raised_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    free_ports = iter([41001, 41002])
    monkeypatch.setattr(process, "free_port", lambda: next(free_ports))
    ports_seen: list[int] = []
    launch_on = launches(tmp_path, [OTHER_FAILURE, STAYS_UP], ports_seen)

    with pytest.raises(EmbeddedStartError, match="exited with 3") as caught:
        process.start_server(launch_on, None, time.monotonic() + 30)

    assert "no such storage engine" in str(caught.value)
    assert ports_seen == [41001]


def test_a_port_the_caller_chose_is_not_retried(tmp_path: Path) -> None:
    ports_seen: list[int] = []
    launch_on = launches(tmp_path, [PORT_TAKEN, STAYS_UP], ports_seen)

    with pytest.raises(EmbeddedStartError, match="AddrInUse"):
        process.start_server(launch_on, 41001, time.monotonic() + 30)

    assert ports_seen == [41001]
