# Two commands for a newcomer: `make run` and `make test`. Both build .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test test-kafka chaos lint format lock venv clean tools

venv: $(STAMP)

# Reinstall only when the pins change. requirements-dev.lock = runtime + embedded stack +
# test/lint tools; requirements.lock (runtime only) is what the Docker image installs.
$(STAMP): pyproject.toml requirements-dev.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/hotline up

test: lint tools
	$(BIN)/pytest

# The broker tests, and the suites most tied to the broker, on a three-node Apache Kafka
# cluster (Maven Central jars cached in ~/.cache/hotline; needs java 17+ and mvn).
KAFKA_SUITES ?= tests/integration/test_kafka_cluster.py tests/integration/test_bus.py \
  tests/e2e/test_intake.py tests/e2e/test_dispatch_followup.py
test-kafka: $(STAMP)
	HOTLINE_TEST_BROKER=kafka $(BIN)/pytest $(KAFKA_SUITES)

# About 5 minutes of seeded fault injection against `hotline up` under load (kills of every
# service, of the broker, a frozen broker, a PostgreSQL restart, a database cut, replicas
# joining and leaving), then an exact audit. Result: chaos-result.json. SEED=n to vary it.
SEED ?= 12345
chaos: $(STAMP)
	$(BIN)/python -m hotline.chaos --seed $(SEED) --json chaos-result.json

# Prometheus and promtool for the alert-rule and dashboard tests (Debian package).
tools:
	@scripts/ensure-test-tools.sh

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy shared services hotline benchmarks
	$(BIN)/lint-imports
	$(BIN)/python scripts/audit_dependencies.py

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Regenerate the lock files after changing pins in pyproject.toml (needs network).
# requirements-dev.lock (dev and embedded extras) holds for Python 3.11 to 3.13
# (--universal: markers where a pin differs); requirements.lock is the image's (3.11).
lock: $(STAMP)
	$(BIN)/python -m pip install --quiet uv==0.13.9
	$(BIN)/uv pip compile pyproject.toml --quiet -o requirements.lock
	$(BIN)/uv pip compile pyproject.toml --extra dev --extra embedded --universal \
	  --python-version 3.11 --quiet -o requirements-dev.lock

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
