"""The whole stack on the three-broker Apache Kafka cluster, under load: the broker leading
most partitions is killed with SIGKILL and started again, while dispatch and metrics grow to
three processes each (one consumer group per service) and shrink back to one. Then every
rate's numerator and denominator must equal the driver's tally, every event must have been
applied once by each consumer, and every group must have committed its topics to the end.

Runs only on that cluster: `HOTLINE_TEST_BROKER=kafka` (make test-kafka). `make chaos
BROKER=kafka` runs the long plan and prints the figures.
"""

from __future__ import annotations

from collections import Counter

import pytest

from hotline.chaos import chaos, render
from tests.conftest import Infra, selected_broker
from tests.support import scratch_dir

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        selected_broker() != "kafka",
        reason="needs the 3-broker Apache Kafka cluster: HOTLINE_TEST_BROKER=kafka",
    ),
]


async def test_a_killed_leader_and_replicas_joining_and_leaving_lose_and_double_nothing(
    infra: Infra,
) -> None:
    assert infra.kafka is not None
    report = await chaos(
        seed=12,
        short=True,
        tickets=500,
        rate=8.0,
        pause=1.0,
        data_dir=scratch_dir("chaos-kafka-"),
        say=lambda line: None,
        broker="kafka",
        cluster=infra.kafka,
    )
    lines: list[str] = []
    render(report, lines.append)
    assert report["ok"], "\n".join(lines)
    assert report["audit"]["tickets_accepted"] == 500
    faults = Counter((f["kind"], f["target"]) for f in report["faults"])
    assert faults == {
        ("replica-join", "dispatch"): 2,
        ("replica-join", "metrics"): 2,
        ("replica-leave", "dispatch"): 2,
        ("replica-leave", "metrics"): 2,
        ("leader-kill", ""): 1,
        ("leader-start", ""): 1,
    }
    killed = report["kafka"]["leader_kill"]
    assert killed["partitions_led"] > 0
    assert report["kafka"]["leader_start"]["node_id"] == killed["node_id"]
    # The faults happened while tickets were still being sent, not after.
    sending_seconds = 500 / 8.0
    kill_at = next(f["at_seconds"] for f in report["faults"] if f["kind"] == "leader-kill")
    assert kill_at < sending_seconds, "\n".join(lines)
    # The cluster is whole again for the tests after this one.
    assert all(node.pid is not None for node in infra.kafka.nodes)
