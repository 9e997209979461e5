"""docker-compose.yml and deploy/ agree with the code, checked without a Docker engine."""

from __future__ import annotations

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
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
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
        monkeypatch.setenv(key, re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value))
    settings = Settings()
    assert settings.kafka_bootstrap_servers == "kafka:9092"
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
    for command in ("migrate", "topics"):
        assert f"hotline {command}" in migrate_cmd
        assert runner.invoke(cli, [command, "--help"]).exit_code == 0
    simulator = SERVICES["simulator"]["command"]
    assert simulator[:2] == ["hotline", "simulate"]
    help_text = runner.invoke(cli, ["simulate", "--help"], terminal_width=200).output
    for option in simulator[2:]:
        assert option.split("=")[0] in help_text, option
    assert SERVICES["simulator"]["profiles"] == ["simulator"]
