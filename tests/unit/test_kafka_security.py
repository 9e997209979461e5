"""Settings for a secured broker (TLS, SASL) and that every Kafka client gets them."""

from __future__ import annotations

import re
import ssl
from pathlib import Path

import pytest
from pydantic import ValidationError

from shared.kafka import connection_options
from shared.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_a_plain_broker_needs_nothing_more_than_its_address():
    options = connection_options(Settings(kafka_bootstrap_servers="k1:9092,k2:9092"))
    assert options == {"bootstrap_servers": "k1:9092,k2:9092", "security_protocol": "PLAINTEXT"}


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-512"])
def test_sasl_ssl_gives_every_client_tls_and_the_credentials(mechanism, tmp_path):
    settings = Settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism=mechanism,
        kafka_sasl_username="hotline",
        kafka_sasl_password="s3cret",
    )
    options = connection_options(settings)
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == mechanism
    assert options["sasl_plain_username"] == "hotline"
    assert options["sasl_plain_password"] == "s3cret"
    assert isinstance(options["ssl_context"], ssl.SSLContext)
    assert options["ssl_context"].verify_mode == ssl.CERT_REQUIRED
    assert "s3cret" not in repr(settings)  # never in a log line that prints the settings


def test_the_ca_file_must_exist():
    with pytest.raises(ValidationError, match="HOTLINE_KAFKA_SSL_CAFILE: no file"):
        Settings(kafka_security_protocol="SSL", kafka_ssl_cafile=Path("/nonexistent/ca.pem"))


def test_sasl_without_credentials_names_what_is_missing():
    with pytest.raises(ValidationError) as caught:
        Settings(kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="PLAIN")
    assert "HOTLINE_KAFKA_SASL_USERNAME" in str(caught.value)
    assert "HOTLINE_KAFKA_SASL_PASSWORD" in str(caught.value)
    assert "HOTLINE_KAFKA_SASL_MECHANISM" not in str(caught.value)


def test_credentials_without_sasl_are_refused_rather_than_silently_unused():
    with pytest.raises(ValidationError, match="set it to SASL_SSL"):
        Settings(kafka_sasl_username="hotline", kafka_sasl_password="s3cret")


def test_the_settings_are_read_from_the_environment(monkeypatch):
    monkeypatch.setenv("HOTLINE_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("HOTLINE_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("HOTLINE_KAFKA_SASL_USERNAME", "u")
    monkeypatch.setenv("HOTLINE_KAFKA_SASL_PASSWORD", "p")
    assert connection_options(Settings())["sasl_mechanism"] == "SCRAM-SHA-512"


def test_every_kafka_client_the_project_makes_gets_the_connection_options():
    """A client made without them would reach a secured broker unauthenticated (and fail)."""
    constructor = re.compile(r"AIOKafka(Producer|Consumer|AdminClient)\(")
    for folder in ("shared", "services", "hotline", "benchmarks"):
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text()
            for match in constructor.finditer(text):
                call = text[match.end() : match.end() + 200]
                assert "**connection_options(" in call, f"{path.relative_to(ROOT)}: {call[:80]}"
