"""Crash points for fault-injection runs (`make chaos`); inert unless `HOTLINE_FAULT_DIR` is set.

A crash test must kill a process at the worst instants (after a relay's publish and before
its mark; in the middle of a consumer's batch), which a signal from outside only hits by
luck. Code passes such an instant by calling `crash_point(service, point)`; the injector
arms it by creating `<fault dir>/<service>.<point>.<pid>`, and that process, when it passes
the point, removes the file and kills itself with SIGKILL. Nothing is read or
written when the variable is unset.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Literal

FAULT_DIR_ENV = "HOTLINE_FAULT_DIR"

CrashPoint = Literal[
    "relay-published", "consumer-mid-batch", "consumer-flushed", "consumer-applied"
]
"""After a relay's publish, before it marks the rows; inside a consumer's transaction,
after its first event; inside it, once the whole batch is written (metrics writes a batch
set-wise at its end), before the commit; after a consumer's commit, before its offsets are
committed."""

_FAULT_DIR = os.environ.get(FAULT_DIR_ENV)


def trigger_path(fault_dir: Path, service: str, point: CrashPoint | str, pid: int) -> Path:
    """The file that arms `point` of the process `pid` of `service` (one process, so a
    replica of the same service is not the one that dies)."""
    return fault_dir / f"{service}.{point}.{pid}"


def crash_point(service: str, point: CrashPoint) -> None:
    """Die here, as from `kill -9`, if an injector armed this point for this process."""
    if _FAULT_DIR is None:
        return
    trigger = trigger_path(Path(_FAULT_DIR), service, point, os.getpid())
    try:
        trigger.unlink()
    except FileNotFoundError:
        return
    os.kill(os.getpid(), signal.SIGKILL)
