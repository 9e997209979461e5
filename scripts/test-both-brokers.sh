#!/usr/bin/env bash
# The suites of `make test` on both brokers:
#   tansu  every test, on the embedded tansu broker;
#   kafka  the integration and end-to-end suites on a three-node Apache Kafka cluster
#          (HOTLINE_TEST_BROKER=kafka), without the tests of the embedded stack, which runs
#          tansu whatever the switch says (marker `embedded`).
# `both` (the default) runs the two at the same time: their tests mostly wait on brokers and
# databases, so they share the machine well. Then the long tests that are the same on either
# broker (marker `kafka_leg`) run on the Kafka leg only, to keep the two legs even. Neither
# runs the long fault-injection runs (marker `fault_run`): `make chaos` does. The Kafka run's output is kept in a log and
# printed after the tansu run's. Exit status 0 when every run passed. Arguments after the
# first go to pytest.
set -uo pipefail
cd "$(dirname "$0")/.."

which=${1:-both}
[ $# -gt 0 ] && shift
BIN=.venv/bin
KAFKA_MARKERS="(integration or e2e) and not embedded and not fault_run"
TANSU_MARKERS="not fault_run"

on_tansu() { "$BIN/pytest" -m "$TANSU_MARKERS" "$@"; }
on_kafka() { HOTLINE_TEST_BROKER=kafka "$BIN/pytest" -m "$KAFKA_MARKERS" "$@"; }

case "$which" in
  tansu) on_tansu "$@"; exit $? ;;
  kafka) on_kafka "$@"; exit $? ;;
  both) ;;
  *) echo "usage: $0 [both|tansu|kafka] [pytest arguments]" >&2; exit 2 ;;
esac

TANSU_MARKERS="not fault_run and not kafka_leg"
log=$(mktemp -t hotline-kafka-tests.XXXXXX)
# No shared pytest cache between the two runs (they would write it at once).
on_kafka -p no:cacheprovider "$@" >"$log" 2>&1 &
kafka_pid=$!
trap 'kill "$kafka_pid" 2>/dev/null; rm -f "$log"' EXIT
trap 'exit 130' INT TERM

echo "== on tansu: every test (Apache Kafka runs beside it; its output follows)"
on_tansu "$@"
tansu=$?

wait "$kafka_pid"
kafka=$?
echo
echo "== on Apache Kafka: the integration and end-to-end suites"
cat "$log"

verdict() { [ "$1" -eq 0 ] && echo passed || echo "FAILED (exit $1)"; }
echo
echo "tansu: $(verdict $tansu); Apache Kafka: $(verdict $kafka)"
[ $tansu -eq 0 ] && [ $kafka -eq 0 ]
