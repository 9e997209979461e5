"""What `hotline up` remembers about the processes it supervises, and the status file
`hotline status` reads.

A service that exits on its own is started again after a delay that doubles with each
exit in a row (1 s, 2 s, 4 s ... up to 30 s) and falls back to the shortest once it has
run a minute: a crash loop does not spin, a rare crash is mended at once.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from shared.clock import utc_now

STATUS_FILE = "status.json"

ProcessState = Literal["starting", "running", "restarting", "stopped"]


def process_alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie waiting to be reaped counts as gone), from /proc."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@dataclass(frozen=True)
class RestartPolicy:
    """How long to wait before starting a process that exited again."""

    first_delay: float = 1.0
    max_delay: float = 30.0
    stable_after: float = 60.0
    """A process that ran this long before it exited starts a new series of delays."""

    def delay(self, exits_in_a_row: int) -> float:
        """The wait before the next start after `exits_in_a_row` exits (1 for the first)."""
        exponent = max(0, min(exits_in_a_row - 1, 16))
        return float(min(self.max_delay, self.first_delay * 2**exponent))


@dataclass
class ProcessRecord:
    """One supervised process as `hotline status` shows it."""

    name: str
    pid: int | None = None
    state: ProcessState = "starting"
    restarts: int = 0
    last_exit: int | None = None
    since: str = field(default_factory=lambda: utc_now().isoformat(timespec="seconds"))
    exits_in_a_row: int = 0
    started_monotonic: float = 0.0
    restart_at: float | None = None
    """Monotonic time of the next start while `restarting`."""

    def started(self, pid: int) -> None:
        """The process was (re)started with `pid`."""
        self.pid, self.state = pid, "running"
        self.since = utc_now().isoformat(timespec="seconds")
        self.started_monotonic, self.restart_at = time.monotonic(), None

    def exited(self, code: int, policy: RestartPolicy) -> float:
        """The process exited on its own with `code`: returns the delay before its restart."""
        now = time.monotonic()
        ran = now - self.started_monotonic
        self.exits_in_a_row = 1 if ran >= policy.stable_after else self.exits_in_a_row + 1
        delay = policy.delay(self.exits_in_a_row)
        self.state, self.last_exit, self.pid = "restarting", code, None
        self.since = utc_now().isoformat(timespec="seconds")
        self.restart_at = now + delay
        return delay

    def due(self) -> bool:
        """Whether a restarting process should be started now."""
        return self.state == "restarting" and (
            self.restart_at is None or time.monotonic() >= self.restart_at
        )

    def public(self) -> dict[str, Any]:
        """What the status file keeps of it."""
        data = asdict(self)
        for internal in ("exits_in_a_row", "started_monotonic", "restart_at"):
            data.pop(internal)
        return data


@dataclass(frozen=True)
class StackStatus:
    """The status file's content."""

    pid: int
    updated_at: str
    urls: dict[str, str]
    processes: list[dict[str, Any]]

    @classmethod
    def now(cls, urls: dict[str, str], records: list[ProcessRecord]) -> StackStatus:
        """The status of this process's stack at this moment."""
        return cls(
            pid=os.getpid(),
            updated_at=utc_now().isoformat(timespec="seconds"),
            urls=urls,
            processes=[record.public() for record in records],
        )

    def save(self, data_dir: Path) -> None:
        """Write it in one rename (a reader never sees half a file)."""
        path = data_dir / STATUS_FILE
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(asdict(self), indent=1))
        temporary.replace(path)

    @classmethod
    def load(cls, data_dir: Path) -> StackStatus | None:
        """The last status written from `data_dir`, or None."""
        try:
            raw = json.loads((data_dir / STATUS_FILE).read_text())
            return cls(
                pid=int(raw["pid"]),
                updated_at=str(raw["updated_at"]),
                urls=dict(raw["urls"]),
                processes=list(raw["processes"]),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def age_seconds(self) -> float:
        """How long ago it was written."""
        return (utc_now() - datetime.fromisoformat(self.updated_at)).total_seconds()
