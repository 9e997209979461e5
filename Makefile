# Two commands for a newcomer: `make run` and `make test`. Both build .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test test-tansu test-kafka chaos bench lint format lock venv clean tools

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

# Every test on the embedded tansu and, at the same time, the integration and end-to-end
# suites on a three-node Apache Kafka cluster (Maven Central jars cached in ~/.cache/hotline;
# needs java 17+ and mvn). ARGS=... goes to pytest.
test: lint tools
	scripts/test-both-brokers.sh both $(ARGS)

# One broker only.
test-tansu: $(STAMP) tools
	scripts/test-both-brokers.sh tansu $(ARGS)
test-kafka: $(STAMP) tools
	scripts/test-both-brokers.sh kafka $(ARGS)

# The short fault runs of the test suite (marker fault_run, about 2 minutes), then about 5
# minutes of seeded fault injection against `hotline up` under load (kills of every
# service, of the broker, a frozen broker, a PostgreSQL restart, a database cut, replicas
# joining and leaving), then an exact audit. Result: chaos-result.json. SEED=n to vary it.
# BROKER=kafka: on a three-node Apache Kafka cluster, whose busiest broker is killed and
# started again while dispatch and metrics scale to three processes and back.
SEED ?= 12345
BROKER ?= tansu
chaos: $(STAMP)
	$(BIN)/pytest -m fault_run
	$(BIN)/python -m hotline.chaos --seed $(SEED) --broker $(BROKER) --json chaos-result.json

# Every benchmark, each over 3 rounds beside its baseline (about 35 minutes; QUICK=1 for a
# few): a goals table on the terminal and every run in bench-result.json. Needs wrk.
bench: $(STAMP)
	@scripts/ensure-bench-tools.sh
	$(BIN)/python -m benchmarks.run_all $(if $(QUICK),--quick)

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
