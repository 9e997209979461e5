"""Names of the contract that services and tools share: service names, rate names, the
roles of API keys, and which satisfaction answers count as pleased.

Each is defined here once. A service, the CLI or the simulator's ground truth may use a
name; the arithmetic behind it stays with whoever computes it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final, Literal, get_args

ServiceName = Literal["intake", "dispatch", "followup", "metrics"]
SERVICE_NAMES: Final[tuple[ServiceName, ...]] = get_args(ServiceName)
"""In the order events flow: intake first, metrics last."""

CONSUMES: Final[Mapping[ServiceName, tuple[ServiceName, ...]]] = {
    "intake": (),
    "dispatch": ("intake", "followup"),
    "followup": ("intake", "dispatch"),
    "metrics": ("intake", "dispatch", "followup"),
}
"""Whose events each service consumes. The services' specs and the embedded stack (which
refills a fresh broker and must know who still has to read what) read this one table."""

PUBLISHERS: Final[tuple[ServiceName, ...]] = ("intake", "dispatch", "followup")
"""Services with an outbox and a topic of their own."""


def service_named(name: str, among: Sequence[ServiceName] = SERVICE_NAMES) -> ServiceName:
    """`name` as a service name, if it is one of `among`; a ValueError listing them if not."""
    for known in among:
        if name == known:
            return known
    raise ValueError(f"one of {', '.join(among)}")


RateName = Literal[
    "connection_rate",
    "avg_wait_seconds",
    "answered_within_15s_rate",
    "first_contact_resolution_rate",
    "transfer_failure_rate",
    "three_way_failure_rate",
    "unanswered_rate",
    "reply_timeliness_rate",
    "definite_reply_rate",
    "callback_rate",
    "satisfaction_rate",
    "reopen_rate",
]
RATE_NAMES: Final[tuple[RateName, ...]] = get_args(RateName)
"""The rates of DESIGN.md's table, in its order."""

SATISFIED: Final[frozenset[str]] = frozenset({"satisfied", "basically_satisfied"})
"""Satisfaction answers (`shared.events.Satisfaction`) that count as a satisfied citizen:
the satisfaction rate's numerator; one ends a reopen (重办)."""

Role = Literal["evaluator", "operator", "department", "callback", "auditor", "admin"]
ROLES: Final[tuple[Role, ...]] = get_args(Role)
"""Who an API key speaks for (README "Security" says what each may do)."""
